//! The OTA steps of the model: download into the inactive slot (resumable), verify the
//! SHA-256, switch the boot record. Each step may lose power where the seed says.

use super::{percent, Cut, Model, NextStep, Now, StepEnd, Written};
use super::{FIRST_RETRY_WAIT, MAX_OTA_ATTEMPTS, MAX_RETRY_WAIT};
use crate::esp32::faults::SwitchCut;
use crate::esp32::flash::{other, FirmwareTarget, PartialDownload, Slot, SlotState};
use crate::FirmwareKey;
use fleethub_core::firmware::UpdateStatus;
use sha2::{Digest, Sha256};
use std::time::Duration;

impl Model {
    /// Starts (or resumes) writing the target into the inactive slot, deciding whether power
    /// will be lost during this attempt and where. None when no OTA is running, or when the
    /// target's signature was refused (nothing in flash changed then).
    pub(crate) fn begin_download(&mut self, now: &Now) -> Option<NextStep> {
        let target = self.ram.ota.as_ref()?.target.clone();
        let slot = other(self.ram.running);
        let resumable = self
            .flash
            .download
            .as_ref()
            .is_some_and(|p| p.slot == slot && p.target.same_image(&target));
        if let Err(error) = self.check_signature(&target, resumable) {
            self.set_status(UpdateStatus::Failed, Some(error), now);
            self.ram.gave_up = self.ram.ota.take().map(|ota| ota.target);
            return None;
        }
        if resumable {
            // The same image, perhaps under a new URL: keep the bytes, use the new URL.
            if let Some(partial) = self.flash.download.as_mut() {
                partial.target = target.clone();
            }
        } else {
            *self.flash.slot_mut(slot) = Slot::empty();
            self.flash.download = Some(PartialDownload {
                slot,
                target: target.clone(),
                written: 0,
                hasher: Sha256::new(),
            });
        }
        let written = self.flash.download.as_ref().map_or(0, |p| p.written);
        if written >= target.size {
            return Some(NextStep::Verify);
        }
        let cut_at = match self.injected {
            Some(Cut::Download(at)) if at >= written => {
                self.injected = None;
                Some(at.min(target.size - 1))
            }
            _ => self
                .rng
                .ota_chance(self.behavior.faults.power_loss)
                .then(|| self.rng.cut_offset(written, target.size)),
        };
        let progress = percent(written, target.size);
        if let Some(ota) = self.ram.ota.as_mut() {
            ota.cut_at = cut_at;
            ota.reported_progress = progress;
        }
        self.flash.nvs.report.progress = progress;
        self.set_status(UpdateStatus::Downloading, None, now);
        Some(NextStep::Download {
            url: target.url,
            offset: written,
            size: target.size,
        })
    }

    /// The pinned key's verdict on the target's signature, then the group's `bad_signature`
    /// fault (drawn once per image, when its download starts from nothing). A signature never
    /// changes for a target, so a refusal is final for it.
    fn check_signature(&mut self, target: &FirmwareTarget, resumable: bool) -> Result<(), String> {
        if let Some(key) = &self.firmware_key {
            key.check(&target.desired())?;
        }
        if !resumable && self.rng.ota_chance(self.behavior.faults.bad_signature) {
            return Err(FirmwareKey::refusal(&target.version));
        }
        Ok(())
    }

    /// Writes downloaded bytes into the inactive slot. Bytes beyond the image's size are
    /// ignored (the driver asked for exactly the missing range).
    pub(crate) fn write_chunk(&mut self, data: &[u8], now: &Now) -> Written {
        let (Some(ota), Some(partial)) = (self.ram.ota.as_mut(), self.flash.download.as_mut())
        else {
            return Written::Stale;
        };
        if partial.target != ota.target {
            return Written::Stale;
        }
        let size = partial.target.size;
        let room = size.saturating_sub(partial.written);
        let mut take = room.min(data.len() as u64);
        let cut = ota
            .cut_at
            .filter(|cut| *cut < partial.written + take.max(1));
        if let Some(cut) = cut {
            take = cut.saturating_sub(partial.written).min(take);
        }
        let take_bytes = usize::try_from(take).unwrap_or(data.len()).min(data.len());
        partial.hasher.update(&data[..take_bytes]);
        partial.written += take;
        if cut.is_some() {
            return Written::PowerCut;
        }
        let progress = percent(partial.written, size);
        let complete = partial.written >= size;
        self.flash.nvs.report.progress = progress;
        if complete {
            self.set_status(UpdateStatus::Downloaded, None, now);
            return Written::Complete;
        }
        if progress >= ota.reported_progress.saturating_add(10) {
            ota.reported_progress = progress;
            self.dirty = true;
        }
        Written::More
    }

    /// The download attempt failed (HTTP error, bad response): keep what is in flash, retry
    /// after a backoff, give up after [`MAX_OTA_ATTEMPTS`].
    pub(crate) fn download_failed(&mut self, error: String, now: &Now) -> StepEnd {
        StepEnd::Failed(self.attempt_failed(error, now))
    }

    fn attempt_failed(&mut self, error: String, now: &Now) -> Option<Duration> {
        self.ram.failures += 1;
        self.set_status(UpdateStatus::Failed, Some(error), now);
        if self.ram.failures >= MAX_OTA_ATTEMPTS {
            self.ram.gave_up = self.ram.ota.take().map(|ota| ota.target);
            return None;
        }
        let doubling = 2u32.saturating_pow(self.ram.failures - 1);
        Some(
            FIRST_RETRY_WAIT
                .saturating_mul(doubling)
                .min(MAX_RETRY_WAIT),
        )
    }

    /// Hashes the written image and compares it with the target's SHA-256. A mismatch
    /// erases the download: the retry fetches the whole image again.
    pub(crate) fn verify(&mut self, now: &Now) -> StepEnd {
        let Some(partial) = self.flash.download.as_ref() else {
            return StepEnd::Failed(None);
        };
        let target = partial.target.clone();
        let mut digest: [u8; 32] = partial.hasher.clone().finalize().into();
        self.set_status(UpdateStatus::Verifying, None, now);
        let faults = self.behavior.clone();
        let faults = &faults.faults;
        if self.rng.ota_chance(faults.power_loss) || self.take_injected(Cut::Verify) {
            return StepEnd::PowerCut;
        }
        if self.rng.ota_chance(faults.corrupt_download) {
            digest[0] ^= 0x01;
        }
        if digest == target.sha256 {
            return StepEnd::Done;
        }
        self.flash.download = None;
        let error = format!(
            "firmware {} failed verification: its SHA-256 is {}, desired.firmware.sha256 is {}",
            target.version,
            hex::encode(digest),
            hex::encode(target.sha256)
        );
        StepEnd::Failed(self.attempt_failed(error, now))
    }

    /// Finishes the new slot and switches the boot record to it: the one atomic step.
    /// `Done` means the driver must report and reboot.
    pub(crate) fn apply(&mut self, now: &Now) -> StepEnd {
        let Some(partial) = self.flash.download.clone() else {
            return StepEnd::Failed(None);
        };
        self.set_status(UpdateStatus::Applying, None, now);
        let mut cut = self
            .rng
            .ota_chance(self.behavior.faults.power_loss)
            .then(|| self.rng.switch_cut());
        for at in [SwitchCut::BeforeBootRecord, SwitchCut::AfterBootRecord] {
            if self.take_injected(Cut::Switch(at)) {
                cut = Some(at);
            }
        }
        *self.flash.slot_mut(partial.slot) = Slot {
            version: partial.target.version.clone(),
            sha256: partial.target.sha256,
            state: SlotState::PendingVerify,
        };
        if cut == Some(SwitchCut::BeforeBootRecord) {
            return StepEnd::PowerCut;
        }
        self.flash.boot.slot = partial.slot;
        self.flash.boot.attempts = 0;
        self.flash.download = None;
        self.flash.nvs.report.progress = 100;
        self.set_status(UpdateStatus::Rebooting, None, now);
        if cut == Some(SwitchCut::AfterBootRecord) {
            return StepEnd::PowerCut;
        }
        StepEnd::Done
    }
}
