//! The device's flash as plain data: what survives a power loss. Two app slots (ESP-IDF's
//! `ota_0`/`ota_1`), the boot record (`otadata`), the partly written download, and NVS
//! (settings, the firmware status the device reports, the version it rolled back from).

use fleethub_core::firmware::{DesiredFirmware, ReportedFirmware, UpdateStatus};
use serde_json::Value;
use sha2::Sha256;
use std::collections::BTreeMap;

/// What the OTA state of one app slot is (ESP-IDF's `esp_ota_img_states_t`, simplified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Erased: nothing bootable.
    Empty,
    /// Confirmed good: boots without a self-test.
    Valid,
    /// Newly installed: the next boots run the self-test; the bootloader counts them.
    PendingVerify,
    /// Rolled back from: never booted again.
    Invalid,
}

impl SlotState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SlotState::Empty => "empty",
            SlotState::Valid => "valid",
            SlotState::PendingVerify => "pending_verify",
            SlotState::Invalid => "invalid",
        }
    }
}

/// One app slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub version: String,
    pub sha256: [u8; 32],
    pub state: SlotState,
}

impl Slot {
    pub(crate) fn empty() -> Slot {
        Slot {
            version: String::new(),
            sha256: [0; 32],
            state: SlotState::Empty,
        }
    }
}

/// `otadata`: which slot boots, and how often a pending image has been booted. Writing it is
/// the one atomic step of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BootRecord {
    pub slot: usize,
    pub attempts: u32,
}

/// A firmware image the twin asks for (`desired.firmware`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FirmwareTarget {
    pub version: String,
    pub url: String,
    pub sha256: [u8; 32],
    pub size: u64,
    /// The hub's signature over the manifest, and the models it lists.
    pub signature: Option<String>,
    pub models: Vec<String>,
}

impl FirmwareTarget {
    /// `desired.firmware` read from the desired properties (the contract in `fleethub-core`):
    /// None when absent or null, an error naming the bad field when present but unusable.
    pub(crate) fn from_desired(desired: &Value) -> Result<Option<FirmwareTarget>, String> {
        let Some(fw) = DesiredFirmware::from_desired(desired).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let sha256 = fw
            .sha256_bytes()
            .ok_or_else(|| "desired.firmware.sha256 is not 64 hex digits".to_string())?;
        Ok(Some(FirmwareTarget {
            version: fw.version,
            url: fw.url,
            sha256,
            size: fw.size,
            signature: fw.signature,
            models: fw.models,
        }))
    }

    /// Whether `other` is the same image (a new URL or signature for it does not make the bytes
    /// already in the slot worthless).
    pub(crate) fn same_image(&self, other: &FirmwareTarget) -> bool {
        self.version == other.version && self.sha256 == other.sha256 && self.size == other.size
    }

    /// The `desired.firmware` this target was read from, for checking its signature.
    pub(crate) fn desired(&self) -> DesiredFirmware {
        DesiredFirmware {
            version: self.version.clone(),
            url: self.url.clone(),
            sha256: hex::encode(self.sha256),
            size: self.size,
            signature: self.signature.clone(),
            models: self.models.clone(),
        }
    }
}

/// The inactive slot being written: what for, how far, and the running hash of what is
/// written (so a resumed download hashes exactly the bytes in the slot).
#[derive(Debug, Clone)]
pub(crate) struct PartialDownload {
    pub slot: usize,
    pub target: FirmwareTarget,
    pub written: u64,
    pub hasher: Sha256,
}

/// `reported.firmware`, less `current_version` (which is the running slot's).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FirmwareReport {
    pub status: UpdateStatus,
    pub progress: u8,
    pub target_version: Option<String>,
    pub error: Option<String>,
    pub last_update_time: Option<String>,
}

impl Default for FirmwareReport {
    fn default() -> Self {
        FirmwareReport {
            status: UpdateStatus::Idle,
            progress: 0,
            target_version: None,
            error: None,
            last_update_time: None,
        }
    }
}

impl FirmwareReport {
    /// `{"firmware":{…}}` as a reported-properties patch.
    pub(crate) fn to_patch(&self, current_version: &str) -> Value {
        ReportedFirmware {
            current_version: current_version.to_string(),
            status: self.status,
            progress: Some(self.progress),
            target_version: self.target_version.clone(),
            last_update_time: self.last_update_time.clone(),
            error: self.error.clone(),
        }
        .reported_patch()
    }
}

/// Non-volatile storage: erased by a factory reset.
#[derive(Debug, Clone, Default)]
pub(crate) struct Nvs {
    pub report: FirmwareReport,
    /// The version this device rolled back from; not installed again while desired names it
    /// in the same push.
    pub rejected: Option<String>,
    /// The `desired.firmware` that named the rejected version when the device first looked
    /// after rolling back: the push it rolled back from. A different one naming the same
    /// version (the hub wrote desired again: a rollout's retry, with a fresh URL) is a new
    /// push, and is tried.
    pub rejected_push: Option<FirmwareTarget>,
    pub last_error: Option<String>,
    pub boot_count: u64,
    /// Device-local settings (`get_property` / `set_property`).
    pub settings: BTreeMap<String, Value>,
}

/// Everything that survives a power loss.
#[derive(Debug, Clone)]
pub(crate) struct Flash {
    pub slots: [Slot; 2],
    pub boot: BootRecord,
    pub download: Option<PartialDownload>,
    pub nvs: Nvs,
}

impl Flash {
    /// Fresh from the factory: `factory_version` in slot A, slot B erased.
    pub(crate) fn factory(factory_version: &str) -> Flash {
        Flash {
            slots: [
                Slot {
                    version: factory_version.to_string(),
                    sha256: [0; 32],
                    state: SlotState::Valid,
                },
                Slot::empty(),
            ],
            boot: BootRecord {
                slot: 0,
                attempts: 0,
            },
            download: None,
            nvs: Nvs::default(),
        }
    }

    pub(crate) fn slot(&self, index: usize) -> &Slot {
        &self.slots[index & 1]
    }

    pub(crate) fn slot_mut(&mut self, index: usize) -> &mut Slot {
        &mut self.slots[index & 1]
    }
}

/// The other slot of a pair.
pub(crate) fn other(slot: usize) -> usize {
    (slot & 1) ^ 1
}

/// A slot's letter as people know it.
pub(crate) fn slot_name(slot: usize) -> &'static str {
    if slot & 1 == 0 {
        "A"
    } else {
        "B"
    }
}
