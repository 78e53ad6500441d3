//! The firmware contract between the hub and a device, written down in
//! `docs/device-protocol.md`: what an operator asks for in `desired.firmware`, and what the
//! device reports in `reported.firmware`. The simulator's devices, its scenarios and
//! expectations, the benchmarks and the rollout engine all speak it through these types.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fmt;

pub mod download;
pub mod manifest;
pub mod public_key;

pub use manifest::Manifest;

/// The largest image a desired firmware may name: ESP32 app slots are at most a few MiB; 64 MiB
/// leaves room for bigger devices.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

/// The longest text field of `desired.firmware` accepted (version, url, sha256, signature).
const MAX_FIELD_CHARS: usize = 2048;

/// Where a twin (as the REST API serves it) carries the running version, for queries and
/// expectations.
pub const REPORTED_VERSION_PATH: &str = "properties.reported.firmware.current_version";
/// Where a twin carries the device's update status.
pub const REPORTED_STATUS_PATH: &str = "properties.reported.firmware.status";

/// `desired.firmware`: the image a device should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DesiredFirmware {
    pub version: String,
    /// Where the image is served over http(s), with Range requests.
    pub url: String,
    /// SHA-256 of the image: 64 lowercase hex digits.
    pub sha256: String,
    /// The image's length in bytes.
    pub size: u64,
    /// The hub's signature over the artifact's manifest ([`Manifest`]): base64 of an ASN.1 DER
    /// ECDSA P-256/SHA-256 signature, checked against the hub's published firmware key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The models the image is built for, as the signed manifest lists them; empty when the
    /// image does not come from the hub's firmware store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

/// Why `desired.firmware` cannot be acted on; the message names the field, as a device reports it
/// in `reported.firmware.error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDesiredFirmware(pub String);

impl fmt::Display for InvalidDesiredFirmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidDesiredFirmware {}

impl DesiredFirmware {
    /// `desired.firmware` read from a device's desired properties: `None` when absent or null,
    /// an error naming the first unusable field when present.
    pub fn from_desired(
        desired: &Value,
    ) -> Result<Option<DesiredFirmware>, InvalidDesiredFirmware> {
        let bad = |m: String| Err(InvalidDesiredFirmware(m));
        let fw = match desired.get("firmware") {
            None | Some(Value::Null) => return Ok(None),
            Some(fw @ Value::Object(_)) => fw,
            Some(_) => return bad("desired.firmware is not an object".into()),
        };
        let text = |key: &str| {
            fw.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= MAX_FIELD_CHARS)
                .map(str::to_string)
                .ok_or_else(|| {
                    InvalidDesiredFirmware(format!(
                        "desired.firmware.{key} is missing or not a string"
                    ))
                })
        };
        let version = text("version")?;
        let url = text("url")?;
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return bad(format!(
                "desired.firmware.url '{url}' is not an http(s) URL"
            ));
        }
        let sha256 = text("sha256")?;
        if !is_sha256_hex(&sha256) {
            return bad("desired.firmware.sha256 is not 64 hex digits".into());
        }
        let Some(size) = fw
            .get("size")
            .and_then(Value::as_u64)
            .filter(|s| (1..=MAX_IMAGE_BYTES).contains(s))
        else {
            return bad(format!(
                "desired.firmware.size is not a whole number of bytes in 1..={MAX_IMAGE_BYTES}"
            ));
        };
        let signature = match fw.get("signature") {
            None | Some(Value::Null) => None,
            Some(_) => Some(text("signature")?),
        };
        let models = match fw.get("models") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|m| m.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    InvalidDesiredFirmware(
                        "desired.firmware.models is not a list of strings".into(),
                    )
                })?,
            Some(_) => return bad("desired.firmware.models is not a list of strings".into()),
        };
        Ok(Some(DesiredFirmware {
            version,
            url,
            sha256: sha256.to_ascii_lowercase(),
            size,
            signature,
            models,
        }))
    }

    /// The image's SHA-256 as bytes; `None` unless `sha256` is 64 hex digits.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        if !is_sha256_hex(&self.sha256) {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(self.sha256.as_bytes().chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(out)
    }

    /// The manifest the hub signed for this image, for checking `signature`; an error names the
    /// field that makes it impossible.
    pub fn manifest(&self) -> Result<Manifest, InvalidDesiredFirmware> {
        Manifest::new(&self.version, &self.models, self.size, &self.sha256)
            .map_err(|e| InvalidDesiredFirmware(format!("desired.firmware: {e}")))
    }

    /// `{"firmware": {…}}`: the desired-properties section that asks for this image.
    pub fn desired_section(&self) -> Value {
        json!({ "firmware": self })
    }

    /// The body of `PATCH /twins/{id}` (and a job's `updateTwin`) that asks for this image.
    pub fn twin_patch(&self) -> Value {
        json!({ "properties": { "desired": self.desired_section() } })
    }
}

/// What a device reports about an update, `reported.firmware.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    /// No update asked for, or nothing to do.
    Idle,
    /// Writing the image into the inactive slot; `progress` moves.
    Downloading,
    /// Every byte is in flash.
    Downloaded,
    /// Checking the image's SHA-256, or a newly booted image running its self-test.
    Verifying,
    /// Switching the boot slot.
    Applying,
    /// The boot slot is switched; the device restarts.
    Rebooting,
    /// The new image booted, passed its self-test and is marked valid.
    Success,
    /// This attempt failed (`error` says why); the device retries with backoff.
    Failed,
    /// The new image failed on the device and the old one runs again.
    RolledBack,
}

impl UpdateStatus {
    /// Every status, in the order an update passes through them.
    pub const ALL: [UpdateStatus; 9] = [
        UpdateStatus::Idle,
        UpdateStatus::Downloading,
        UpdateStatus::Downloaded,
        UpdateStatus::Verifying,
        UpdateStatus::Applying,
        UpdateStatus::Rebooting,
        UpdateStatus::Success,
        UpdateStatus::Failed,
        UpdateStatus::RolledBack,
    ];

    /// The value in `reported.firmware.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStatus::Idle => "idle",
            UpdateStatus::Downloading => "downloading",
            UpdateStatus::Downloaded => "downloaded",
            UpdateStatus::Verifying => "verifying",
            UpdateStatus::Applying => "applying",
            UpdateStatus::Rebooting => "rebooting",
            UpdateStatus::Success => "success",
            UpdateStatus::Failed => "failed",
            UpdateStatus::RolledBack => "rolled_back",
        }
    }

    /// The status whose `as_str` is `text`.
    pub fn parse(text: &str) -> Option<UpdateStatus> {
        UpdateStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether an update is under way (downloading … rebooting).
    pub fn is_updating(self) -> bool {
        matches!(
            self,
            UpdateStatus::Downloading
                | UpdateStatus::Downloaded
                | UpdateStatus::Verifying
                | UpdateStatus::Applying
                | UpdateStatus::Rebooting
        )
    }
}

impl fmt::Display for UpdateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `reported.firmware`: what runs on the device and how its last update went. A device reports
/// the whole section each time, so a field it no longer has is sent as `null` (which deletes it
/// from the twin); firmware that knows only `current_version`, `status` and `last_update_time`
/// still reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedFirmware {
    /// The version of the image running now.
    pub current_version: String,
    pub status: UpdateStatus,
    /// 0–100 while downloading; 100 from `downloaded` on.
    #[serde(default)]
    pub progress: Option<u8>,
    /// The version the current or last update is about.
    #[serde(default)]
    pub target_version: Option<String>,
    /// The device's clock when the last update ended, in IoT Hub's timestamp format.
    #[serde(default)]
    pub last_update_time: Option<String>,
    /// A sentence saying what went wrong, naming the version.
    #[serde(default)]
    pub error: Option<String>,
}

impl ReportedFirmware {
    /// `{"firmware": {…}}`: the reported-properties patch a device sends.
    pub fn reported_patch(&self) -> Value {
        json!({ "firmware": self })
    }

    /// `reported.firmware` of a twin as the REST API serves it (`properties.reported`), or of a
    /// bare reported-properties document; `None` when absent or not in the contract's shape.
    pub fn from_twin(twin: &Value) -> Option<ReportedFirmware> {
        let reported = twin
            .pointer("/properties/reported")
            .unwrap_or(twin)
            .get("firmware")?;
        serde_json::from_value(reported.clone()).ok()
    }

    /// Whether this report says the device is updated to `version` (the rule in
    /// `docs/device-protocol.md`: that version running, with status `success`).
    pub fn is_updated_to(&self, version: &str) -> bool {
        self.current_version == version && self.status == UpdateStatus::Success
    }
}

/// SHA-256 as `desired.firmware.sha256` carries it: 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Whether `text` is 64 hex digits (either case).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests;
