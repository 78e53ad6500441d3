//! The device registry: identities, their credentials and status, with etags.

use crate::Hub;
use fleethub_core::sas;
use fleethub_core::{DeviceId, ErrorCode, HubError, HubResult};
use fleethub_store::{DeviceRow, EncodedDeviceRow, Reads, WriteTx};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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

fn disconnected() -> String {
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
    match if_match.map(|s| s.trim().trim_matches('"')) {
        None | Some("*") | Some("") => true,
        Some(tag) => tag == current,
    }
}

fn precondition_failed(what: &str, id: &str, current: &str) -> HubError {
    HubError::new(
        ErrorCode::PreconditionFailed,
        format!("{what} '{id}' has etag \"{current}\", not the one in If-Match; read it again and retry"),
    )
}

impl Device {
    pub(crate) fn from_row(row: &DeviceRow) -> HubResult<Device> {
        Device::deserialize(&row.identity).map_err(|e| {
            HubError::server(format!(
                "stored identity of '{}' is unreadable: {e}",
                row.device_id
            ))
        })
    }

    fn to_identity(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Validates a submitted registry entry and fills keys the hub generates.
    fn normalize(&mut self) -> HubResult<()> {
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

/// One entry of a bulk registry request (`POST /devices`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportImportDevice {
    pub id: String,
    #[serde(default)]
    pub import_mode: Option<String>,
    #[serde(default)]
    pub e_tag: Option<String>,
    #[serde(default)]
    pub status: Option<DeviceStatus>,
    #[serde(default)]
    pub status_reason: Option<String>,
    #[serde(default)]
    pub authentication: Option<Authentication>,
    #[serde(default)]
    pub tags: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub properties: Option<Value>,
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
}

impl Hub {
    pub(crate) async fn load_device(&self, id: &str) -> HubResult<Option<Device>> {
        let id = id.to_string();
        let row = self.store().read_point(move |r| r.get_device(&id)).await?;
        row.as_ref().map(Device::from_row).transpose()
    }

    /// Shows a registry entry with its live connection state.
    fn present(&self, mut d: Device) -> Device {
        d.etag = etag_for(d.revision);
        if self.inner.connections.is_connected(&d.device_id) {
            d.connection_state = "Connected".into();
        }
        d
    }

    /// `GET /devices/{id}`.
    pub async fn get_device(&self, id: &str) -> HubResult<Device> {
        let d = self
            .load_device(id)
            .await?
            .ok_or_else(|| HubError::device_not_found(id))?;
        Ok(self.present(d))
    }

    /// `GET /devices?top=N`: the first `top` devices by id.
    pub async fn list_devices(&self, top: usize) -> HubResult<Vec<Device>> {
        let top = top.clamp(1, 1000);
        let rows = self
            .store()
            .read(move |r| r.list_devices(None, top))
            .await?;
        rows.iter()
            .map(|r| Device::from_row(r).map(|d| self.present(d)))
            .collect()
    }

    /// `PUT /devices/{id}`: creates the device, or with If-Match updates it.
    pub async fn put_device(
        &self,
        id: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> HubResult<Device> {
        let id = DeviceId::parse(id)?;
        let mut submitted: Device = serde_json::from_value(body).map_err(|e| {
            HubError::format(format!("device body is not a valid registry entry: {e}"))
        })?;
        if submitted.device_id != id.as_str() {
            return Err(HubError::invalid(format!(
                "deviceId '{}' in the body does not match '{}' in the URL",
                submitted.device_id, id
            )));
        }
        submitted.normalize()?;
        let now = self.now_string();
        let if_match = if_match.map(str::to_string);
        let hub = self.clone();
        let device = self
            .store()
            .write(move |tx| hub.upsert_in(tx, submitted, if_match.as_deref(), &now))
            .await?;
        if device.status == DeviceStatus::Disabled {
            self.inner.connections.send(
                &device.device_id,
                crate::DeviceCommand::Disconnect {
                    reason: "device disabled".into(),
                },
            );
        }
        Ok(self.present(device))
    }

    /// Fills the fields a device gets when it is created.
    fn stamp_new(&self, d: &mut Device, now: &str) {
        d.generation_id = format!("{}", self.now_nanos());
        d.revision = 1;
        d.status_updated_time = now.to_string();
        d.connection_state = disconnected();
        d.connection_state_updated_time = fleethub_core::time::NEVER.into();
        d.last_activity_time = fleethub_core::time::NEVER.into();
        d.cloud_to_device_message_count = 0;
    }

    /// Inserts a new device's row and its creation event; an existing id is refused.
    fn insert_new_in(&self, tx: &mut WriteTx, row: &EncodedDeviceRow) -> HubResult<()> {
        if !tx.insert_encoded_device(row)? {
            return Err(already_exists(&row.device_id));
        }
        tx.append_event(
            Some(&row.device_id),
            "device.created",
            &json!({}),
            self.now_ms(),
        )?;
        Ok(())
    }

    fn upsert_in(
        &self,
        tx: &mut WriteTx,
        mut d: Device,
        if_match: Option<&str>,
        now: &str,
    ) -> HubResult<Device> {
        let existing = tx.get_device(&d.device_id)?;
        match existing {
            None => {
                self.stamp_new(&mut d, now);
                let row = crate::twin::new_device_row(&d, now);
                self.insert_new_in(tx, &encode(&row)?)?;
            }
            Some(row) => {
                let old = Device::from_row(&row)?;
                if if_match.is_none() {
                    return Err(already_exists(&d.device_id));
                }
                if !etag_matches(if_match, &etag_for(old.revision)) {
                    return Err(precondition_failed(
                        "device",
                        &d.device_id,
                        &etag_for(old.revision),
                    ));
                }
                d.generation_id = old.generation_id;
                d.revision = old.revision + 1;
                d.status_updated_time = if d.status != old.status {
                    now.to_string()
                } else {
                    old.status_updated_time
                };
                d.connection_state_updated_time = old.connection_state_updated_time;
                d.last_activity_time = old.last_activity_time;
                d.cloud_to_device_message_count = old.cloud_to_device_message_count;
                d.connection_state = disconnected();
                tx.update_identity(&d.device_id, d.status.as_str(), &d.to_identity())?;
                tx.append_event(
                    Some(&d.device_id),
                    "device.updated",
                    &json!({}),
                    self.now_ms(),
                )?;
            }
        }
        Ok(d)
    }

    /// `DELETE /devices/{id}`.
    pub async fn delete_device(&self, id: &str, if_match: Option<&str>) -> HubResult<()> {
        let id = id.to_string();
        let if_match = if_match.map(str::to_string);
        let hub = self.clone();
        let target = id.clone();
        self.store()
            .write(move |tx| hub.delete_in(tx, &target, if_match.as_deref()))
            .await?;
        self.inner.connections.send(
            &id,
            crate::DeviceCommand::Disconnect {
                reason: "device deleted".into(),
            },
        );
        Ok(())
    }

    fn delete_in(&self, tx: &mut WriteTx, id: &str, if_match: Option<&str>) -> HubResult<()> {
        let row = tx
            .get_device(id)?
            .ok_or_else(|| HubError::device_not_found(id))?;
        let current = etag_for(Device::from_row(&row)?.revision);
        if !etag_matches(if_match, &current) {
            return Err(precondition_failed("device", id, &current));
        }
        tx.delete_device(id)?;
        tx.append_event(Some(id), "device.deleted", &json!({}), self.now_ms())?;
        Ok(())
    }

    /// `POST /devices`: bulk create, update or delete. Every entry is checked and applied on its
    /// own; the answer lists each failure.
    pub async fn bulk_devices(&self, entries: Vec<ExportImportDevice>) -> HubResult<Value> {
        if entries.len() > 100 {
            return Err(HubError::invalid(format!(
                "bulk request has {} devices; at most 100 per call",
                entries.len()
            )));
        }
        let now = self.now_string();
        let prepared: Vec<_> = entries
            .into_iter()
            .map(|e| {
                let fresh = self.fresh_row(&e, &now);
                (e, fresh)
            })
            .collect();
        let hub = self.clone();
        let errors = self
            .store()
            .write(move |tx| -> HubResult<Vec<Value>> {
                let mut errors = Vec::new();
                let mut created = Vec::new();
                for (e, fresh) in prepared {
                    if let Err(err) = hub.bulk_one(tx, &e, fresh, &mut created, &now) {
                        errors.push(json!({
                            "deviceId": e.id,
                            "errorCode": err.code.name(),
                            "errorStatus": err.message,
                        }));
                    }
                }
                if !created.is_empty() {
                    // One event for the call rather than one per device: bulk import is the
                    // path that writes a million devices, and the log row is a fifth of its cost.
                    let body = json!({ "deviceIds": created });
                    tx.append_event(None, "devices.created", &body, hub.now_ms())?;
                }
                Ok(errors)
            })
            .await?;
        Ok(json!({ "isSuccessful": errors.is_empty(), "errors": errors, "warnings": [] }))
    }

    /// The registry entry a bulk import entry describes (not yet stamped or stored).
    fn import_identity(e: &ExportImportDevice) -> HubResult<Device> {
        let mut d = Device {
            device_id: DeviceId::parse(&e.id)?.to_string(),
            generation_id: String::new(),
            etag: String::new(),
            status: e.status.unwrap_or_default(),
            status_reason: e.status_reason.clone(),
            status_updated_time: String::new(),
            connection_state: disconnected(),
            connection_state_updated_time: String::new(),
            last_activity_time: String::new(),
            cloud_to_device_message_count: 0,
            authentication: e.authentication.clone().unwrap_or_default(),
            capabilities: e.capabilities.clone().unwrap_or_default(),
            revision: 0,
        };
        d.normalize()?;
        Ok(d)
    }

    /// For an entry that may create a device, its whole new row (identity and twin sections),
    /// checked and encoded off the writer thread; `None` for modes that never create.
    fn fresh_row(&self, e: &ExportImportDevice, now: &str) -> Option<HubResult<EncodedDeviceRow>> {
        let mode = e.import_mode.as_deref().unwrap_or("createOrUpdate");
        if !mode.starts_with("create") {
            return None;
        }
        Some((|| {
            let mut d = Self::import_identity(e)?;
            self.stamp_new(&mut d, now);
            let mut row = crate::twin::new_device_row(&d, now);
            crate::twin::seed_twin(&mut row, e.tags.as_ref(), e.properties.as_ref(), now)?;
            encode(&row)
        })())
    }

    fn bulk_one(
        &self,
        tx: &mut WriteTx,
        e: &ExportImportDevice,
        fresh: Option<HubResult<EncodedDeviceRow>>,
        created: &mut Vec<String>,
        now: &str,
    ) -> HubResult<()> {
        let id = DeviceId::parse(&e.id)?;
        let mode = e.import_mode.as_deref().unwrap_or("createOrUpdate");
        let if_match = match mode {
            "delete" => return self.delete_in(tx, id.as_str(), Some("*")),
            "deleteIfMatchETag" => return self.delete_in(tx, id.as_str(), e.e_tag.as_deref()),
            "create" => None,
            "update" | "createOrUpdate" => Some("*"),
            "updateIfMatchETag" | "createOrUpdateIfMatchETag" => e.e_tag.as_deref(),
            other => return Err(HubError::invalid(format!("unknown importMode '{other}'"))),
        };
        // `create` needs no lookup: the insert itself refuses an existing id.
        let exists = mode != "create" && tx.get_device(id.as_str())?.is_some();
        if !exists {
            // The caller logs one event for every device the call created.
            let row = fresh.ok_or_else(|| HubError::device_not_found(id.as_str()))??;
            if !tx.insert_encoded_device(&row)? {
                return Err(already_exists(&row.device_id));
            }
            created.push(row.device_id);
            return Ok(());
        }
        self.upsert_in(tx, Self::import_identity(e)?, if_match.or(Some("*")), now)?;
        if e.tags.is_some() || e.properties.is_some() {
            crate::twin::import_twin_in(
                self,
                tx,
                id.as_str(),
                e.tags.as_ref(),
                e.properties.as_ref(),
                now,
            )?;
        }
        Ok(())
    }

    /// `GET /statistics/devices`.
    pub async fn device_statistics(&self) -> HubResult<Value> {
        let c = self.store().read(|r| r.device_counts()).await?;
        Ok(
            json!({ "totalDeviceCount": c.total, "enabledDeviceCount": c.enabled, "disabledDeviceCount": c.disabled }),
        )
    }

    /// `GET /statistics/service`.
    pub fn service_statistics(&self) -> Value {
        json!({ "connectedDeviceCount": self.inner.connections.count() })
    }
}

fn encode(row: &DeviceRow) -> HubResult<EncodedDeviceRow> {
    row.encode()
        .map_err(|err| HubError::server(format!("cannot encode device '{}': {err}", row.device_id)))
}

fn already_exists(id: &str) -> HubError {
    HubError::new(
        ErrorCode::DeviceAlreadyExists,
        format!(
            "device '{id}' already exists; send If-Match with its etag (or \"*\") to update it"
        ),
    )
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
}
