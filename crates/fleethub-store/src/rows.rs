//! The rows the store keeps, as plain data. JSON columns are `serde_json::Value`s stored as TEXT.

use fleethub_core::stored_entry;
use serde_json::Value;

/// One device: its registry entry and its twin.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    /// The device id (primary key).
    pub device_id: String,
    /// `"enabled"` or `"disabled"`.
    pub status: String,
    /// The registry entry (authentication and the rest), owned by the hub.
    pub identity: Value,
    /// The twin's tags.
    pub tags: Value,
    /// The twin's desired properties.
    pub desired: Value,
    /// The twin's reported properties.
    pub reported: Value,
    /// The twin's version, bumped by the hub on every twin change.
    pub twin_version: i64,
    /// The twin's etag.
    pub twin_etag: String,
    /// The registry entry's revision, bumped by the hub on every identity change; an update or
    /// delete carries the one it read and fails with [`crate::StoreError::Conflict`] if it moved.
    pub revision: i64,
}

/// A device's registry entry without its twin: what authentication at connect, the registry's
/// calls, direct methods and existence checks read. The twin's sections are the costly part of
/// a [`DeviceRow`] (rebuilt from their stored parts with their metadata), and these never use them.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEntryRow {
    /// The device id (primary key).
    pub device_id: String,
    /// `"enabled"` or `"disabled"`.
    pub status: String,
    /// The registry entry (authentication and the rest), owned by the hub.
    pub identity: Value,
    /// The twin's version.
    pub twin_version: i64,
    /// The registry entry's revision (see [`DeviceRow::revision`]).
    pub revision: i64,
}

/// What changes whenever a device does: its row key (a device deleted and registered again gets
/// another), its twin version and its registry revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStamp {
    /// The row's key.
    pub row: i64,
    /// The twin's version.
    pub twin_version: i64,
    /// The registry entry's revision.
    pub revision: i64,
}

/// A device row with its JSON columns already encoded as text, so that callers can do the
/// encoding off the writer thread (bulk import builds thousands of rows per second).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedDeviceRow {
    /// The device id (primary key).
    pub device_id: String,
    /// `"enabled"` or `"disabled"`.
    pub status: String,
    /// The registry entry, as the text the store keeps: packed, only what differs from a new
    /// device's entry and from `device_id` and `status` ([`fleethub_core::stored_entry`], as
    /// [`DeviceRow::encode`] writes it; an entry in full reads the same, stored larger).
    pub identity: String,
    /// The tags, as JSON text.
    pub tags: String,
    /// The desired properties, as JSON text (the metadata packed, as [`DeviceRow::encode`]
    /// writes it; a full tree reads the same, stored larger).
    pub desired: String,
    /// The reported properties, as JSON text (likewise).
    pub reported: String,
    /// The twin's version.
    pub twin_version: i64,
    /// The twin's etag.
    pub twin_etag: String,
    /// The registry entry's revision.
    pub revision: i64,
}

impl DeviceRow {
    /// Encodes the JSON columns.
    pub fn encode(&self) -> Result<EncodedDeviceRow, serde_json::Error> {
        Ok(EncodedDeviceRow {
            device_id: self.device_id.clone(),
            status: self.status.clone(),
            identity: stored_entry::pack(&self.identity, &self.device_id, &self.status)?,
            tags: serde_json::to_string(&self.tags)?,
            desired: section_text(&self.desired)?,
            reported: section_text(&self.reported)?,
            twin_version: self.twin_version,
            twin_etag: self.twin_etag.clone(),
            revision: self.revision,
        })
    }
}

/// A desired or reported section (`{"values":…,"metadata":…,"version":N}`) as the text a write
/// stores: its metadata packed ([`fleethub_core::twin::stored_metadata`]), the rest as it is.
pub(crate) fn section_text(section: &Value) -> Result<String, serde_json::Error> {
    let (Value::Object(parts), Some(Value::Object(values))) = (section, section.get("values"))
    else {
        return serde_json::to_string(section);
    };
    let mut out = String::from("{");
    for (key, part) in parts {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key)?);
        out.push(':');
        match part {
            Value::Object(metadata) if key == "metadata" => {
                out.push_str(&fleethub_core::twin::stored_metadata::pack(
                    values, metadata,
                )?);
            }
            _ => out.push_str(&serde_json::to_string(part)?),
        }
    }
    out.push('}');
    Ok(out)
}

/// One device-to-cloud telemetry message.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryRow {
    /// Position in the telemetry log, assigned by the store (ignored on insert).
    pub seq: i64,
    /// The sending device.
    pub device_id: String,
    /// The message id; a repeat from the same device is a duplicate.
    pub message_id: String,
    /// When the hub accepted it, in Unix milliseconds.
    pub enqueued_ms: i64,
    /// Application and system properties.
    pub properties: Value,
    /// The payload.
    pub body: Vec<u8>,
}

/// One queued cloud-to-device message.
#[derive(Debug, Clone, PartialEq)]
pub struct C2dRow {
    /// Position in the queue, assigned by the store (ignored on enqueue).
    pub seq: i64,
    /// The receiving device.
    pub device_id: String,
    /// The message id.
    pub message_id: String,
    /// Application and system properties.
    pub properties: Value,
    /// The payload.
    pub body: Vec<u8>,
    /// When it was queued, in Unix milliseconds.
    pub enqueued_ms: i64,
    /// When it expires, in Unix milliseconds; 0 means never.
    pub expiry_ms: i64,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Position in the log, assigned by the store.
    pub seq: i64,
    /// When it happened, in Unix milliseconds.
    pub time_ms: i64,
    /// The device it concerns, if any.
    pub device_id: Option<String>,
    /// What happened (e.g. `"twin.reported"`).
    pub kind: String,
    /// The details.
    pub body: Value,
}

/// How many devices exist, by status.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DeviceCounts {
    /// All devices.
    pub total: u64,
    /// Devices whose status is `"enabled"`.
    pub enabled: u64,
    /// Devices whose status is `"disabled"`.
    pub disabled: u64,
}

/// How many devices report one reported firmware version and update status.
#[derive(Debug, Clone, PartialEq)]
pub struct FirmwareCount {
    /// `properties.reported.firmware.current_version`, `None` where a device reports none.
    pub version: Option<Value>,
    /// `properties.reported.firmware.status`, `None` where a device reports none.
    pub status: Option<Value>,
    /// Devices reporting both.
    pub devices: u64,
}

/// A desired or reported section in its parts: values and metadata as JSON texts (the caller
/// guarantees each is a valid JSON object) and the section's version.
#[derive(Debug, Clone, Copy)]
pub struct SectionParts<'a> {
    /// The section's values, `$metadata` and `$version` apart, as JSON text.
    pub values: &'a str,
    /// Their metadata tree, as JSON text: packed (`TwinProperties::stored_metadata`, what the
    /// store keeps) or the full tree (read the same, stored larger).
    pub metadata: &'a str,
    /// The section's `$version`.
    pub version: i64,
}

/// A twin as a writer holds a copy of it: its row key, the id the row must still carry, and the
/// twin version (and registry revision, when the copy holds the registry entry) the copy was
/// taken at.
#[derive(Debug, Clone, Copy)]
pub struct HeldTwin<'a> {
    /// The device's row key (`devices.row`, `twin_metadata.row`).
    pub row: i64,
    /// The device's id.
    pub id: &'a str,
    /// The twin version the copy was taken at.
    pub twin_version: i64,
    /// The registry revision the copy was taken at, when the copy holds the registry entry.
    pub revision: Option<i64>,
}

/// The twin sections an update replaces; `None` leaves a section as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct TwinSections<'a> {
    /// New tags, if they change.
    pub tags: Option<&'a Value>,
    /// New desired properties, if they change.
    pub desired: Option<&'a Value>,
    /// New reported properties, if they change.
    pub reported: Option<&'a Value>,
}

/// A device with empty tags and reported properties and the given desired values, for unit
/// tests that need rows in the `devices` table.
#[cfg(test)]
pub(crate) fn test_device(id: &str, desired: Value) -> DeviceRow {
    let section =
        |values: Value| serde_json::json!({"values": values, "metadata": {}, "version": 1});
    DeviceRow {
        device_id: id.to_string(),
        status: "enabled".into(),
        identity: serde_json::json!({}),
        tags: serde_json::json!({}),
        desired: section(desired),
        reported: section(serde_json::json!({})),
        twin_version: 1,
        twin_etag: "e".into(),
        revision: 1,
    }
}
