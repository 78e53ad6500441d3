//! The device as a pure state machine: flash, bootloader, OTA steps, self-test and rollback,
//! with every fault decided by the device's seeded random streams. No I/O and no clock: the
//! driver feeds it bytes and times, and sends what it asks to report.

mod ota;

use super::faults::{DeviceRng, SwitchCut};
use super::flash::{other, FirmwareReport, FirmwareTarget, Flash, Slot, SlotState};
use super::telemetry::Telemetry;
use super::{BadFirmware, Behavior, FirmwareFailure};
use crate::FirmwareKey;
use fleethub_core::firmware::UpdateStatus;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Boots a pending image may take before the bootloader rolls back, unless the group's
/// `bad_firmware` entry says otherwise.
pub(crate) const DEFAULT_FAILED_BOOTS: u32 = 3;

/// Failed attempts at one target before the device gives up on it (until desired changes
/// or the device restarts).
pub(crate) const MAX_OTA_ATTEMPTS: u32 = 5;

/// The first retry waits this long; each further retry doubles it, up to [`MAX_RETRY_WAIT`].
const FIRST_RETRY_WAIT: Duration = Duration::from_secs(10);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(600);

/// The time as the device sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    /// Simulated time since the simulation started (uptimes are differences of it).
    pub elapsed: Duration,
    /// True wall-clock time; the device adds its clock skew.
    pub wall: SystemTime,
}

/// What the image does after the bootloader started it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Boot {
    /// Up; `health_fails_after` is set for an image whose health check will fail.
    Running {
        health_fails_after: Option<Duration>,
    },
    /// Crashed during start-up: the watchdog resets it.
    Crashed,
    /// Running, but its Wi-Fi never comes up: the connect watchdog resets it.
    NoNetwork,
    /// Never comes back (the `never_back` fault): silent until the run ends.
    Dead,
}

/// What the driver must do about a desired-properties change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OtaCommand {
    Nothing,
    /// Stop any download in progress and start towards the new target.
    Start,
    /// Stop any download in progress: desired no longer asks for it.
    Abort,
}

/// The next OTA step after [`Model::begin_download`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NextStep {
    /// Fetch `url` from byte `offset` (inclusive) to `size` (exclusive).
    Download { url: String, offset: u64, size: u64 },
    /// Everything is already in flash.
    Verify,
}

/// What one downloaded chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    More,
    Complete,
    /// Power was lost while writing this chunk (some of it may be in flash).
    PowerCut,
    /// No OTA is running any more: the chunk is stale.
    Stale,
}

/// How a step that can fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepEnd {
    Done,
    PowerCut,
    /// Failed; retry after the delay, or never (gave up on this target).
    Failed(Option<Duration>),
}

/// An OTA in progress (RAM).
#[derive(Debug, Clone)]
pub(crate) struct Ota {
    pub target: FirmwareTarget,
    /// The byte offset where power will be lost during this download attempt.
    cut_at: Option<u64>,
    reported_progress: u8,
}

/// Working memory: lost on every reset.
#[derive(Debug, Default)]
pub(crate) struct Ram {
    pub running: usize,
    pub booted_at: Duration,
    /// The running image is pending verification (its self-test has not passed yet).
    pub pending: bool,
    /// The desired properties as last read (GET) and patched.
    pub desired: Value,
    pub desired_version: u64,
    pub ota: Option<Ota>,
    pub failures: u32,
    /// A target this boot gave up on after [`MAX_OTA_ATTEMPTS`].
    pub gave_up: Option<FirmwareTarget>,
    pub telemetry: VecDeque<Telemetry>,
    pub telemetry_seq: u64,
}

/// One virtual device's state.
#[derive(Debug)]
pub(crate) struct Model {
    pub id: String,
    pub factory_version: String,
    pub behavior: Arc<Behavior>,
    pub flash: Flash,
    pub ram: Ram,
    pub rng: DeviceRng,
    /// Boots since the simulation started; survives even a factory reset, so message ids
    /// (`{id}-{boot}-{n}`) never repeat.
    pub lifetime_boots: u64,
    /// A power loss forced at one step: the group's `power_loss_at_byte`, or a test's cut.
    pub injected: Option<Cut>,
    /// The hub's firmware key this device pins, if any.
    pub firmware_key: Option<Arc<FirmwareKey>>,
    dirty: bool,
}

/// Where a forced power loss happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// While downloading, once the slot holds this many bytes.
    Download(u64),
    Verify,
    Switch(SwitchCut),
}

impl Model {
    /// A device fresh from the factory, not yet powered on.
    pub(crate) fn new(
        id: &str,
        factory_version: &str,
        behavior: Arc<Behavior>,
        seed: u64,
    ) -> Model {
        Model {
            id: id.to_string(),
            factory_version: factory_version.to_string(),
            injected: behavior.faults.power_loss_at_byte.map(Cut::Download),
            behavior,
            flash: Flash::factory(factory_version),
            ram: Ram::default(),
            rng: DeviceRng::new(seed),
            lifetime_boots: 0,
            firmware_key: None,
            dirty: true,
        }
    }

    /// The version of the image running now.
    pub(crate) fn running_version(&self) -> &str {
        &self.flash.slot(self.ram.running).version
    }

    pub(crate) fn status(&self) -> UpdateStatus {
        self.flash.nvs.report.status
    }

    /// The full `{"firmware":{…}}` report, sent after every connect.
    pub(crate) fn report_patch(&self) -> Value {
        self.flash.nvs.report.to_patch(self.running_version())
    }

    /// The report when something changed since the last call.
    pub(crate) fn take_report(&mut self) -> Option<Value> {
        std::mem::take(&mut self.dirty).then(|| self.report_patch())
    }

    /// The device's clock, skew included, in IoT Hub's timestamp format.
    pub(crate) fn device_time(&self, now: &Now) -> String {
        let skew = self.behavior.faults.clock_skew_s;
        let skew = if skew.is_finite() {
            skew.clamp(-1e9, 1e9)
        } else {
            0.0
        };
        let wall = if skew >= 0.0 {
            now.wall.checked_add(Duration::from_secs_f64(skew))
        } else {
            now.wall.checked_sub(Duration::from_secs_f64(-skew))
        };
        let wall = wall.unwrap_or(now.wall);
        fleethub_core::time::format_timestamp(chrono::DateTime::<chrono::Utc>::from(wall))
    }

    /// RAM is gone; flash stays. [`power_on`](Self::power_on) must follow.
    pub(crate) fn lose_power(&mut self) {
        self.ram = Ram::default();
    }

    /// The bootloader, then the image's start-up.
    pub(crate) fn power_on(&mut self, now: &Now) -> Boot {
        self.ram = Ram {
            booted_at: now.elapsed,
            ..Ram::default()
        };
        self.lifetime_boots += 1;
        self.flash.nvs.boot_count += 1;
        self.dirty = true;
        let mut slot = self.pick_boot_slot();
        if self.flash.slot(slot).state == SlotState::PendingVerify {
            self.flash.boot.attempts = self.flash.boot.attempts.saturating_add(1);
            let version = self.flash.slot(slot).version.clone();
            let allowed = self
                .bad_firmware(&version)
                .map_or(DEFAULT_FAILED_BOOTS, |bad| bad.failed_boots);
            if self.flash.boot.attempts > allowed {
                let why = self.boot_failure_text(&version, allowed);
                self.roll_back(slot, &why, now);
                slot = self.pick_boot_slot();
            }
        }
        self.ram.running = slot;
        if self.flash.slot(slot).state != SlotState::PendingVerify {
            return Boot::Running {
                health_fails_after: None,
            };
        }
        self.ram.pending = true;
        if self.flash.boot.attempts == 1 && self.rng.ota_chance(self.behavior.faults.never_back) {
            return Boot::Dead;
        }
        let version = self.running_version().to_string();
        let report = &mut self.flash.nvs.report;
        report.status = UpdateStatus::Verifying;
        report.target_version = Some(version.clone());
        match self.bad_firmware(&version) {
            None => Boot::Running {
                health_fails_after: None,
            },
            Some(bad) => match bad.failure {
                FirmwareFailure::BootLoop => Boot::Crashed,
                FirmwareFailure::WifiBreaks => Boot::NoNetwork,
                FirmwareFailure::HealthCheckFails => Boot::Running {
                    health_fails_after: Some(super::clock::secs(bad.after_s)),
                },
            },
        }
    }

    /// The slot the boot record names if it holds a bootable image, else the other one; a
    /// device with neither (never happens on real hardware) is re-flashed from the factory.
    fn pick_boot_slot(&mut self) -> usize {
        let bootable = |s: &Slot| matches!(s.state, SlotState::Valid | SlotState::PendingVerify);
        let slot = self.flash.boot.slot & 1;
        if bootable(self.flash.slot(slot)) {
            return slot;
        }
        let fallback = other(slot);
        if !bootable(self.flash.slot(fallback)) {
            let nvs = std::mem::take(&mut self.flash.nvs);
            self.flash = Flash::factory(&self.factory_version);
            self.flash.nvs = nvs;
            return 0;
        }
        self.flash.boot.slot = fallback;
        self.flash.boot.attempts = 0;
        fallback
    }

    fn bad_firmware(&self, version: &str) -> Option<&BadFirmware> {
        self.behavior
            .faults
            .bad_firmware
            .iter()
            .find(|bad| bad.version == version)
    }

    fn boot_failure_text(&self, version: &str, allowed: u32) -> String {
        match self.bad_firmware(version).map(|bad| bad.failure) {
            Some(FirmwareFailure::BootLoop) => format!("it crashed on each of {allowed} boots"),
            Some(FirmwareFailure::WifiBreaks) => {
                format!("it never connected to the network in {allowed} boots")
            }
            _ => format!("it was not confirmed within {allowed} boots"),
        }
    }

    /// Marks `bad_slot` invalid and points the boot record at the other slot.
    fn roll_back(&mut self, bad_slot: usize, why: &str, now: &Now) {
        let bad = self.flash.slot(bad_slot).version.clone();
        let good = self.flash.slot(other(bad_slot)).version.clone();
        self.flash.slot_mut(bad_slot).state = SlotState::Invalid;
        self.flash.boot.slot = other(bad_slot);
        self.flash.boot.attempts = 0;
        let error = format!("firmware {bad} rolled back to {good}: {why}");
        self.flash.nvs.rejected = Some(bad.clone());
        self.flash.nvs.rejected_push = None;
        self.flash.nvs.last_error = Some(error.clone());
        self.flash.nvs.report = FirmwareReport {
            status: UpdateStatus::RolledBack,
            progress: 0,
            target_version: Some(bad),
            error: Some(error),
            last_update_time: Some(self.device_time(now)),
        };
        self.dirty = true;
    }

    /// The running pending image passed its self-test (it connected and read its twin).
    pub(crate) fn self_test_passed(&mut self, now: &Now) {
        if !self.ram.pending {
            return;
        }
        self.ram.pending = false;
        self.flash.slot_mut(self.ram.running).state = SlotState::Valid;
        self.flash.boot.attempts = 0;
        self.flash.nvs.report = FirmwareReport {
            status: UpdateStatus::Success,
            progress: 100,
            target_version: Some(self.running_version().to_string()),
            error: None,
            last_update_time: Some(self.device_time(now)),
        };
        self.dirty = true;
    }

    /// The running pending image failed its health check: it marks itself invalid and the
    /// driver must reboot. False when the image is already confirmed (nothing to roll back).
    pub(crate) fn health_check_failed(&mut self, after: Duration, now: &Now) -> bool {
        if !self.ram.pending {
            return false;
        }
        let why = format!("its health check failed {} s after boot", after.as_secs());
        self.roll_back(self.ram.running, &why, now);
        true
    }

    /// Back to the factory image in slot A; slot B and NVS erased. A reboot must follow.
    pub(crate) fn factory_reset(&mut self) {
        self.flash = Flash::factory(&self.factory_version);
        self.dirty = true;
    }

    /// New desired properties (a full GET, or the cache after a patch).
    pub(crate) fn set_desired(&mut self, desired: Value, version: u64, now: &Now) -> OtaCommand {
        self.ram.desired = desired;
        self.ram.desired_version = version;
        self.evaluate_desired(now)
    }

    /// Decides whether `desired.firmware` asks for an update this device should run.
    pub(crate) fn evaluate_desired(&mut self, now: &Now) -> OtaCommand {
        let running_ota = self.ram.ota.is_some();
        let stop = || {
            if running_ota {
                OtaCommand::Abort
            } else {
                OtaCommand::Nothing
            }
        };
        let target = match FirmwareTarget::from_desired(&self.ram.desired) {
            Ok(Some(target)) => target,
            Ok(None) => return OtaCommand::Nothing,
            Err(error) => {
                if !running_ota && self.flash.nvs.report.error.as_deref() != Some(&error) {
                    self.set_status(UpdateStatus::Failed, Some(error), now);
                }
                return OtaCommand::Nothing;
            }
        };
        if self.ram.pending {
            return OtaCommand::Nothing;
        }
        if self
            .ram
            .ota
            .as_ref()
            .is_some_and(|ota| ota.target == target)
        {
            return OtaCommand::Nothing;
        }
        if target.version == self.running_version() {
            self.ram.ota = None;
            if self.status().is_updating() {
                self.set_status(UpdateStatus::Idle, None, now);
            }
            return stop();
        }
        if self.flash.nvs.rejected.as_deref() == Some(&target.version) {
            let pushed_again = match &self.flash.nvs.rejected_push {
                None => {
                    self.flash.nvs.rejected_push = Some(target.clone());
                    false
                }
                Some(push) => *push != target,
            };
            if !pushed_again {
                self.ram.ota = None;
                return stop();
            }
        }
        if self.ram.gave_up.as_ref() == Some(&target) {
            return stop();
        }
        self.flash.nvs.rejected = None;
        self.flash.nvs.rejected_push = None;
        self.ram.failures = 0;
        self.ram.ota = Some(Ota {
            target,
            cut_at: None,
            reported_progress: 0,
        });
        OtaCommand::Start
    }

    /// Sets the reported status of the step about to run, so it is reported before it runs.
    pub(crate) fn mark(&mut self, status: UpdateStatus, now: &Now) {
        self.set_status(status, None, now);
    }

    /// The last report did not reach the hub: send it again with the next.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    fn set_status(&mut self, status: UpdateStatus, error: Option<String>, now: &Now) {
        let time = self.device_time(now);
        let report = &mut self.flash.nvs.report;
        report.status = status;
        if let Some(ota) = &self.ram.ota {
            report.target_version = Some(ota.target.version.clone());
        }
        if error.is_some() {
            self.flash.nvs.last_error = error.clone();
        }
        report.error = error;
        if matches!(
            status,
            UpdateStatus::Failed | UpdateStatus::Success | UpdateStatus::RolledBack
        ) {
            report.last_update_time = Some(time);
        }
        self.dirty = true;
    }

    fn take_injected(&mut self, cut: Cut) -> bool {
        let hit = self.injected == Some(cut);
        if hit {
            self.injected = None;
        }
        hit
    }

    /// The telemetry period: the `interval` setting, else the group's.
    pub(crate) fn telemetry_interval(&self) -> Option<Duration> {
        let secs = self
            .flash
            .nvs
            .settings
            .get("interval")
            .and_then(Value::as_f64)
            .unwrap_or(self.behavior.telemetry_interval_s);
        Some(super::clock::secs(secs)).filter(|d| !d.is_zero())
    }
}

fn percent(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 100;
    }
    u8::try_from(done.min(total).saturating_mul(100) / total).unwrap_or(100)
}
