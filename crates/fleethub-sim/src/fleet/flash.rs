//! The device's flash as plain data: what survives a power loss. Two app slots (ESP-IDF's
//! `ota_0`/`ota_1`), the boot record (`otadata`), the partly written download, and NVS
//! (settings, the firmware status the device reports, the version it rolled back from).

use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::BTreeMap;

/// Largest firmware image accepted: ESP32 app slots are at most a few MiB; 64 MiB leaves room.
pub(crate) const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

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
}

impl FirmwareTarget {
    /// `desired.firmware` read from the desired properties: None when absent or null, an error
    /// naming the bad field when present but unusable.
    pub(crate) fn from_desired(desired: &Value) -> Result<Option<FirmwareTarget>, String> {
        let fw = match desired.get("firmware") {
            None | Some(Value::Null) => return Ok(None),
            Some(fw @ Value::Object(_)) => fw,
            Some(_) => return Err("desired.firmware is not an object".into()),
        };
        let text = |key: &str| {
            fw.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 2048)
                .ok_or_else(|| format!("desired.firmware.{key} is missing or not a string"))
        };
        let version = text("version")?.to_string();
        let url = text("url")?.to_string();
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(format!(
                "desired.firmware.url '{url}' is not an http(s) URL"
            ));
        }
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(text("sha256")?, &mut sha256)
            .map_err(|_| "desired.firmware.sha256 is not 64 hex digits".to_string())?;
        let size = fw
            .get("size")
            .and_then(Value::as_u64)
            .filter(|s| (1..=MAX_IMAGE_BYTES).contains(s))
            .ok_or_else(|| {
                format!(
                    "desired.firmware.size is not a whole number of bytes in 1..={MAX_IMAGE_BYTES}"
                )
            })?;
        Ok(Some(FirmwareTarget {
            version,
            url,
            sha256,
            size,
        }))
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

/// The firmware status a device reports; kept in NVS so it survives reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareStatus {
    Idle,
    Downloading,
    Downloaded,
    Verifying,
    Applying,
    Rebooting,
    Success,
    Failed,
    RolledBack,
}

impl FirmwareStatus {
    /// Every status, in the order an update passes through them.
    pub const ALL: [FirmwareStatus; 9] = [
        FirmwareStatus::Idle,
        FirmwareStatus::Downloading,
        FirmwareStatus::Downloaded,
        FirmwareStatus::Verifying,
        FirmwareStatus::Applying,
        FirmwareStatus::Rebooting,
        FirmwareStatus::Success,
        FirmwareStatus::Failed,
        FirmwareStatus::RolledBack,
    ];

    /// The value in `reported.firmware.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareStatus::Idle => "idle",
            FirmwareStatus::Downloading => "downloading",
            FirmwareStatus::Downloaded => "downloaded",
            FirmwareStatus::Verifying => "verifying",
            FirmwareStatus::Applying => "applying",
            FirmwareStatus::Rebooting => "rebooting",
            FirmwareStatus::Success => "success",
            FirmwareStatus::Failed => "failed",
            FirmwareStatus::RolledBack => "rolled_back",
        }
    }

    /// Whether an update is under way (downloading … rebooting, or a self-test pending).
    pub fn is_updating(self) -> bool {
        matches!(
            self,
            FirmwareStatus::Downloading
                | FirmwareStatus::Downloaded
                | FirmwareStatus::Verifying
                | FirmwareStatus::Applying
                | FirmwareStatus::Rebooting
        )
    }
}

/// `reported.firmware`, less `current_version` (which is the running slot's).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FirmwareReport {
    pub status: FirmwareStatus,
    pub progress: u8,
    pub target_version: Option<String>,
    pub error: Option<String>,
    pub last_update_time: Option<String>,
}

impl Default for FirmwareReport {
    fn default() -> Self {
        FirmwareReport {
            status: FirmwareStatus::Idle,
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
        json!({"firmware": {
            "current_version": current_version,
            "status": self.status.as_str(),
            "progress": self.progress,
            "target_version": self.target_version,
            "last_update_time": self.last_update_time,
            "error": self.error,
        }})
    }
}

/// Non-volatile storage: erased by a factory reset.
#[derive(Debug, Clone, Default)]
pub(crate) struct Nvs {
    pub report: FirmwareReport,
    /// The version this device rolled back from; not installed again until desired names
    /// another version.
    pub rejected: Option<String>,
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
