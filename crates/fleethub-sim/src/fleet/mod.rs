//! Virtual ESP32 devices for the fleet simulator.
//!
//! SKELETON — the public contract `fleethub simulate` builds against while this module is
//! written. Bodies marked `todo!` are being implemented; fields may be added, not removed.

use crate::load::ConnectTemplate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Simulated time: `scale` simulated seconds pass per real second (3600 / 10 = 360 makes one
/// simulated hour take ten real seconds). Every device timer sleeps through this clock.
#[derive(Debug, Clone)]
pub struct SimClock {
    _private: (),
}

impl SimClock {
    /// A clock starting now at wall-clock time, running `scale` times faster than real time.
    pub fn new(_scale: f64) -> SimClock {
        todo!()
    }
    /// How many simulated seconds pass per real second.
    pub fn scale(&self) -> f64 {
        todo!()
    }
    /// Simulated time elapsed since the clock started.
    pub fn elapsed(&self) -> Duration {
        todo!()
    }
    /// The simulated wall-clock time (start + elapsed).
    pub fn now(&self) -> SystemTime {
        todo!()
    }
    /// Sleeps for `simulated` simulated time.
    pub async fn sleep(&self, _simulated: Duration) {
        todo!()
    }
}

/// How a group of devices behaves, and which faults it suffers. All durations are simulated
/// seconds. Deserialized from a scenario file's `[group.behavior]` table (all fields optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// Seconds between telemetry messages (0 = no telemetry).
    pub telemetry_interval_s: f64,
    /// Telemetry messages kept while offline, replayed on reconnect (oldest dropped first).
    pub telemetry_buffer: usize,
    /// Seconds from power-on to the first CONNECT.
    pub boot_delay_s: f64,
    pub faults: Faults,
}

/// Faults, each deterministic under the device's seed. Probabilities are in 0..=1.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Mean seconds between random link drops (exponential); `None` = the link never drops.
    pub link_drop_mean_s: Option<f64>,
    /// Seconds a dropped link stays down before the device reconnects.
    pub link_down_s: f64,
    /// Battery devices: awake for `awake_s`, then asleep (disconnected) for `asleep_s`.
    pub sleep: Option<SleepCycle>,
    /// Download bandwidth cap in bytes per simulated second.
    pub bandwidth_bytes_per_s: Option<u64>,
    /// Probability of losing power at each OTA step (downloading, verifying, switching).
    pub power_loss: f64,
    /// Probability that a finished download is corrupt (hash mismatch).
    pub corrupt_download: f64,
    /// Firmware versions that misbehave on this group's devices.
    pub bad_firmware: Vec<BadFirmware>,
    /// Probability that a telemetry message is published twice (QoS 1 redelivery).
    pub duplicate_rate: f64,
    /// The device clock's offset from true time, in seconds (reported timestamps use it).
    pub clock_skew_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SleepCycle {
    pub awake_s: f64,
    pub asleep_s: f64,
}

/// A firmware version that fails on these devices, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadFirmware {
    pub version: String,
    pub failure: FirmwareFailure,
    /// Failed boots before the bootloader rolls back (ESP-IDF app rollback), default 3.
    #[serde(default = "default_failed_boots")]
    pub failed_boots: u32,
    /// For `health_check_fails`: seconds after boot when the health check fails.
    #[serde(default)]
    pub after_s: f64,
}

fn default_failed_boots() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirmwareFailure {
    /// Wi-Fi breaks on the new image: it never reconnects; rolled back after `failed_boots`.
    WifiBreaks,
    /// The image crashes on boot: a boot loop, then rollback.
    BootLoop,
    /// Boots and connects, then fails its health check after `after_s`: rollback.
    HealthCheckFails,
}

/// One virtual device.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub device_id: String,
    /// The device's symmetric key (base64), for SAS.
    pub key: String,
    /// Its group's name (for stats).
    pub group: String,
    /// The factory image's version, flashed in slot A at first boot.
    pub factory_version: String,
    pub behavior: Arc<Behavior>,
    /// Seed for this device's faults; derive it from the run seed and the device index.
    pub seed: u64,
    /// Index in the fleet (spreads source addresses over 127.0.0.0/8).
    pub index: usize,
}

/// Counters shared by every device of a run; cheap to update, read by the live view and the
/// scenario runner.
#[derive(Debug, Default)]
pub struct FleetStats {
    _private: (),
}

/// A point-in-time copy of [`FleetStats`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsSnapshot {
    pub devices: u64,
    pub connected: u64,
    /// Devices that reported at least once since their last connect.
    pub reporting: u64,
    /// Devices in an OTA (downloading … rebooting).
    pub updating: u64,
    /// Devices whose last OTA ended failed or rolled_back.
    pub failed: u64,
    pub rolled_back: u64,
    pub telemetry_sent: u64,
    pub reconnects: u64,
    pub power_losses: u64,
    /// Running version → device count.
    pub versions: BTreeMap<String, u64>,
    /// Group → running version → device count.
    pub group_versions: BTreeMap<String, BTreeMap<String, u64>>,
}

impl FleetStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        todo!()
    }
}

/// Starts one device: boots, connects over MQTT/TLS with its own SAS key, follows its twin,
/// and runs until `stop` turns true (then disconnects cleanly).
pub fn spawn_device(
    _spec: DeviceSpec,
    _connect: Arc<ConnectTemplate>,
    _clock: SimClock,
    _stats: Arc<FleetStats>,
    _stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    todo!()
}
