//! The change feed's vocabulary: what one committed change records. The hub writes a [`Change`]
//! in the change's own transaction; `GET /v1/events` shows it as stored; the engines, the
//! dashboard and other hub nodes read it. Its JSON (a kind and a small body) is spelled here once,
//! because it is both the stored form and what the feed shows.

use crate::jobs::JobStatus;
use serde::Serialize;
use serde_json::Value;

/// One committed change: its kind (`Change::kind`, e.g. `twin.reported`) and a small body of
/// ids, versions and statuses, never a whole twin.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "body", rename_all_fields = "camelCase")]
pub enum Change {
    /// A device was registered.
    #[serde(rename = "device.created")]
    DeviceCreated {},
    /// A registry entry changed.
    #[serde(rename = "device.updated")]
    DeviceUpdated {},
    /// A device was deleted.
    #[serde(rename = "device.deleted")]
    DeviceDeleted {},
    /// A bulk import created these devices (one change per call, not per device).
    #[serde(rename = "devices.created")]
    DevicesCreated { device_ids: Vec<String> },
    /// A service merge-patched tags or desired properties; the twin is now at `version`.
    #[serde(rename = "twin.updated")]
    TwinUpdated { version: u64 },
    /// A service replaced tags or desired properties; the twin is now at `version`.
    #[serde(rename = "twin.replaced")]
    TwinReplaced { version: u64 },
    /// The device reported; its reported properties are now at `version`.
    #[serde(rename = "twin.reported")]
    TwinReported { version: u64 },
    /// Configurations set the twin's desired properties; the twin is now at `version`.
    #[serde(rename = "twin.configured")]
    TwinConfigured { version: u64 },
    /// One batch of a configurations' application set the desired properties of `configured`
    /// twins; the first and last device of the batch (the operation's completed rows between
    /// them say which it went through). One change per batch, not per twin.
    #[serde(rename = "twins.configured")]
    TwinsConfigured {
        job_id: String,
        configured: u64,
        first_device_id: String,
        last_device_id: String,
    },
    /// A job was created (`job_type` is IoT Hub's name, e.g. `scheduleUpdateTwin`).
    #[serde(rename = "job.created")]
    JobCreated {
        job_id: String,
        #[serde(rename = "type")]
        job_type: String,
    },
    /// One batch of a twin job was written: how many twins it updated and failed, and the first
    /// and last device of the batch (its rows say exactly which).
    #[serde(rename = "job.twins_updated")]
    JobTwinsUpdated {
        job_id: String,
        updated: u64,
        failed: u64,
        first_device_id: String,
        last_device_id: String,
    },
    /// A job ended.
    #[serde(rename = "job.finished")]
    JobFinished { job_id: String, status: JobStatus },
    /// A firmware artifact was stored.
    #[serde(rename = "firmware.uploaded")]
    FirmwareUploaded { sha256: String, version: String },
    /// A firmware artifact was deleted.
    #[serde(rename = "firmware.deleted")]
    FirmwareDeleted { sha256: String },
}

impl Change {
    /// The kind and the body, as the event log stores them and the feed shows them.
    pub fn to_parts(&self) -> (String, Value) {
        let mut tagged = match serde_json::to_value(self) {
            Ok(Value::Object(tagged)) => tagged,
            // An adjacently tagged enum of plain fields always serializes to an object.
            _ => return (String::new(), Value::Null),
        };
        let kind = match tagged.remove("kind") {
            Some(Value::String(kind)) => kind,
            _ => String::new(),
        };
        (kind, tagged.remove("body").unwrap_or(Value::Null))
    }

    /// The kind and the body's JSON text, as the event log stores them: [`Change::to_parts`]
    /// serialized, without building a `Value` on the way (a change is written on every report,
    /// in the writer). The tagged form is `{"kind":K,"body":B}` with K a plain name, so the
    /// body is the text between the kind and the closing brace.
    pub fn to_stored_parts(&self) -> (String, String) {
        const HEAD: &str = r#"{"kind":""#;
        const MIDDLE: &str = r#"","body":"#;
        let text = serde_json::to_string(self).unwrap_or_default();
        let split = text
            .strip_prefix(HEAD)
            .and_then(|rest| rest.split_once(MIDDLE))
            .and_then(|(kind, body)| Some((kind, body.strip_suffix('}')?)));
        match split {
            Some((kind, body)) if !kind.contains('"') => (kind.to_string(), body.to_string()),
            _ => {
                let (kind, body) = self.to_parts();
                (kind, body.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_change_is_stored_as_its_kind_and_a_small_body() {
        let changes = [
            (Change::DeviceCreated {}, "device.created", json!({})),
            (Change::DeviceUpdated {}, "device.updated", json!({})),
            (Change::DeviceDeleted {}, "device.deleted", json!({})),
            (
                Change::DevicesCreated {
                    device_ids: vec!["a".into(), "b".into()],
                },
                "devices.created",
                json!({ "deviceIds": ["a", "b"] }),
            ),
            (
                Change::TwinUpdated { version: 3 },
                "twin.updated",
                json!({ "version": 3 }),
            ),
            (
                Change::TwinReplaced { version: 4 },
                "twin.replaced",
                json!({ "version": 4 }),
            ),
            (
                Change::TwinReported { version: 5 },
                "twin.reported",
                json!({ "version": 5 }),
            ),
            (
                Change::TwinConfigured { version: 6 },
                "twin.configured",
                json!({ "version": 6 }),
            ),
            (
                Change::TwinsConfigured {
                    job_id: "op".into(),
                    configured: 2,
                    first_device_id: "a".into(),
                    last_device_id: "c".into(),
                },
                "twins.configured",
                json!({ "jobId": "op", "configured": 2, "firstDeviceId": "a", "lastDeviceId": "c" }),
            ),
            (
                Change::JobCreated {
                    job_id: "j".into(),
                    job_type: "scheduleUpdateTwin".into(),
                },
                "job.created",
                json!({ "jobId": "j", "type": "scheduleUpdateTwin" }),
            ),
            (
                Change::JobTwinsUpdated {
                    job_id: "j".into(),
                    updated: 2,
                    failed: 1,
                    first_device_id: "a".into(),
                    last_device_id: "c".into(),
                },
                "job.twins_updated",
                json!({ "jobId": "j", "updated": 2, "failed": 1, "firstDeviceId": "a", "lastDeviceId": "c" }),
            ),
            (
                Change::JobFinished {
                    job_id: "j".into(),
                    status: JobStatus::Cancelled,
                },
                "job.finished",
                json!({ "jobId": "j", "status": "cancelled" }),
            ),
            (
                Change::FirmwareUploaded {
                    sha256: "ab".into(),
                    version: "1.2.0".into(),
                },
                "firmware.uploaded",
                json!({ "sha256": "ab", "version": "1.2.0" }),
            ),
            (
                Change::FirmwareDeleted {
                    sha256: "ab".into(),
                },
                "firmware.deleted",
                json!({ "sha256": "ab" }),
            ),
        ];
        for (change, kind, body) in changes {
            let (k, b) = change.to_parts();
            assert_eq!((k.as_str(), &b), (kind, &body));
            // Field order is part of the body: the feed shows it as stored.
            assert_eq!(b.to_string(), body.to_string());
            let (k, text) = change.to_stored_parts();
            assert_eq!((k.as_str(), text), (kind, body.to_string()));
        }
    }
}
