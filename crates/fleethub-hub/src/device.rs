//! A device's identity as the registry keeps it (status, authentication, capabilities, revision)
//! and the etags derived from revision counters. Registry and twins both build on it; it depends
//! on neither.

use fleethub_core::sas;
use fleethub_core::{HubError, HubResult};
use fleethub_store::{DeviceEntryRow, DeviceRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whether a device may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    #[default]
    Enabled,
    Disabled,
}

impl DeviceStatus {
    /// "enabled" or "disabled", as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Enabled => "enabled",
            DeviceStatus::Disabled => "disabled",
        }
    }
}

/// How a device proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum AuthenticationType {
    #[default]
    Sas,
    SelfSigned,
    CertificateAuthority,
    None,
}

/// A device's two symmetric keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
}

/// A device's two X.509 thumbprints (SHA-1, hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct X509Thumbprint {
    pub primary_thumbprint: Option<String>,
    pub secondary_thumbprint: Option<String>,
}

/// The authentication mechanism, as IoT Hub's registry shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    #[serde(rename = "type", default)]
    pub kind: AuthenticationType,
    #[serde(default)]
    pub symmetric_key: SymmetricKey,
    #[serde(default)]
    pub x509_thumbprint: X509Thumbprint,
}

/// Device capabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub iot_edge: bool,
}

/// A registry entry, serialized in IoT Hub's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub device_id: String,
    #[serde(default)]
    pub generation_id: String,
    #[serde(default)]
    pub etag: String,
    #[serde(default)]
    pub status: DeviceStatus,
    #[serde(default)]
    pub status_reason: Option<String>,
    #[serde(default)]
    pub status_updated_time: String,
    #[serde(default = "disconnected")]
    pub connection_state: String,
    #[serde(default)]
    pub connection_state_updated_time: String,
    #[serde(default)]
    pub last_activity_time: String,
    #[serde(default)]
    pub cloud_to_device_message_count: u64,
    #[serde(default)]
    pub authentication: Authentication,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Bumped on every registry change; the etag is derived from it.
    #[serde(default, rename = "$revision", skip_serializing_if = "is_zero")]
    pub revision: u64,
}

pub(crate) fn disconnected() -> String {
    "Disconnected".into()
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An etag derived from a revision counter, in the base64 style IoT Hub uses ("AAAAAAAAAAE=").
pub fn etag_for(revision: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(revision.to_be_bytes())
}

/// Strips the quotes an If-Match value may carry; `None` and `*` match anything.
pub fn etag_matches(if_match: Option<&str>, current: &str) -> bool {
    pinned_etag(if_match).is_none_or(|tag| tag == current)
}

/// The etag an If-Match value pins a change to, without quotes; `None` for none or `*`.
pub(crate) fn pinned_etag(if_match: Option<&str>) -> Option<&str> {
    if_match
        .map(|s| s.trim().trim_matches('"'))
        .filter(|tag| !tag.is_empty() && *tag != "*")
}

impl Device {
    /// The registry entry a stored row holds; its revision is the row's `revision` column.
    pub(crate) fn from_row(row: &DeviceRow) -> HubResult<Device> {
        Device::from_stored(&row.device_id, &row.identity, row.revision)
    }

    /// The registry entry a stored entry (a device read without its twin) holds.
    pub(crate) fn from_entry(row: &DeviceEntryRow) -> HubResult<Device> {
        Device::from_stored(&row.device_id, &row.identity, row.revision)
    }

    fn from_stored(device_id: &str, identity: &Value, revision: i64) -> HubResult<Device> {
        let mut d = Device::deserialize(identity).map_err(|e| {
            HubError::server(format!(
                "stored identity of '{device_id}' is unreadable: {e}"
            ))
        })?;
        d.revision = revision.max(0) as u64;
        Ok(d)
    }

    /// The stored form of the entry, without its revision: the store keeps that in a column of
    /// its own, which writes carry to detect a concurrent change.
    pub(crate) fn to_identity(&self) -> Value {
        let mut identity = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(fields) = identity.as_object_mut() {
            fields.remove("$revision");
        }
        identity
    }

    /// Validates a submitted registry entry and fills keys the hub generates.
    pub(crate) fn normalize(&mut self) -> HubResult<()> {
        let auth = &mut self.authentication;
        match auth.kind {
            AuthenticationType::Sas => {
                let keys = &mut auth.symmetric_key;
                for key in [&mut keys.primary_key, &mut keys.secondary_key] {
                    match key.as_deref() {
                        None | Some("") => *key = Some(sas::generate_key()),
                        Some(k) => validate_key(k)?,
                    }
                }
            }
            AuthenticationType::SelfSigned => {
                let t = &mut auth.x509_thumbprint;
                if t.primary_thumbprint.as_deref().unwrap_or("").is_empty() {
                    return Err(HubError::invalid(
                        "authentication type selfSigned needs x509Thumbprint.primaryThumbprint (40 hex digits)",
                    ));
                }
                for tp in [&mut t.primary_thumbprint, &mut t.secondary_thumbprint]
                    .into_iter()
                    .flatten()
                {
                    validate_thumbprint(tp)?;
                    *tp = tp.to_ascii_uppercase();
                }
                auth.symmetric_key = SymmetricKey::default();
            }
            AuthenticationType::CertificateAuthority | AuthenticationType::None => {
                auth.symmetric_key = SymmetricKey::default();
                auth.x509_thumbprint = X509Thumbprint::default();
            }
        }
        Ok(())
    }
}

fn validate_key(k: &str) -> HubResult<()> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(k)
        .map_err(|_| HubError::invalid("symmetric key is not valid base64"))?;
    if !(16..=64).contains(&bytes.len()) {
        return Err(HubError::invalid(format!(
            "symmetric key is {} bytes; it must be 16 to 64 bytes, base64-encoded",
            bytes.len()
        )));
    }
    Ok(())
}

fn validate_thumbprint(t: &str) -> HubResult<()> {
    let ok = (t.len() == 40 || t.len() == 64) && t.chars().all(|c| c.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(HubError::invalid(format!(
            "thumbprint '{t}' must be 40 (SHA-1) or 64 (SHA-256) hex digits"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_look_like_iot_hubs_and_if_match_strips_quotes() {
        assert_eq!(etag_for(1), "AAAAAAAAAAE=");
        assert!(etag_matches(Some("\"AAAAAAAAAAE=\""), "AAAAAAAAAAE="));
        assert!(etag_matches(Some("\"*\""), "x"));
        assert!(!etag_matches(Some("AAAAAAAAAAI="), "AAAAAAAAAAE="));
    }

    /// The store keeps an entry packed against `stored_entry::new_entry`; if `Device` gains,
    /// loses or reorders a field, or a new device's defaults change, every entry would be
    /// stored in full (correct, but 2-3 times larger) until the template follows.
    #[test]
    fn a_new_devices_entry_is_the_template_the_store_packs_against() {
        use fleethub_core::stored_entry;
        let mut d: Device = serde_json::from_value(serde_json::json!({ "deviceId": "d" })).unwrap();
        // What `stamp_new` sets besides the generated id, time and revision.
        d.connection_state = disconnected();
        d.connection_state_updated_time = fleethub_core::time::NEVER.into();
        d.last_activity_time = fleethub_core::time::NEVER.into();
        d.revision = 1;
        let entry = d.to_identity();
        assert_eq!(
            entry.to_string(),
            stored_entry::new_entry("d", "enabled").to_string()
        );
        assert_eq!(
            stored_entry::pack(&entry, "d", "enabled").unwrap(),
            r#"{"$entry":1}"#
        );
    }
}
