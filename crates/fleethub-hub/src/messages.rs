//! Device-to-cloud telemetry (stored, deduplicated, streamed) and cloud-to-device messages
//! (queued durably, delivered at QoS 1, expired after their TTL).

use crate::{DeviceCommand, Hub};
use bytes::Bytes;
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_rollout::Observation;
use fleethub_store::{C2dRow, Reads, TelemetryRow};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A cloud-to-device message the hub queued: its id and when it expires undelivered.
#[derive(Debug, Clone, PartialEq)]
pub struct C2dQueued {
    pub message_id: String,
    pub expiry: chrono::DateTime<chrono::Utc>,
}

/// Largest telemetry or cloud-to-device message body: 256 KB.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A telemetry message as the gateway decoded it.
#[derive(Debug, Clone, Default)]
pub struct TelemetryIn {
    /// `$.mid`; when absent the hub assigns one (and cannot deduplicate).
    pub message_id: Option<String>,
    /// System (`$.ct`, `$.ce`, …) and application properties, decoded.
    pub properties: Vec<(String, String)>,
    pub body: Bytes,
}

/// A stored telemetry message, as REST and the live stream show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryEvent {
    pub seq: i64,
    pub device_id: String,
    pub message_id: String,
    pub enqueued_time: String,
    pub properties: Map<String, Value>,
    /// The body as UTF-8 text when it is, else base64.
    pub body: String,
    pub body_encoding: &'static str,
}

impl TelemetryEvent {
    fn from_row(row: TelemetryRow) -> TelemetryEvent {
        use base64::Engine;
        let (body, body_encoding) = match String::from_utf8(row.body) {
            Ok(s) => (s, "utf-8"),
            Err(e) => (
                base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
                "base64",
            ),
        };
        let enqueued = chrono::DateTime::from_timestamp_millis(row.enqueued_ms).unwrap_or_default();
        TelemetryEvent {
            seq: row.seq,
            device_id: row.device_id,
            message_id: row.message_id,
            enqueued_time: fleethub_core::time::format_timestamp(enqueued),
            properties: row.properties.as_object().cloned().unwrap_or_default(),
            body,
            body_encoding,
        }
    }
}

/// A cloud-to-device message to queue.
#[derive(Debug, Clone, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct C2dRequest {
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// The body, as text.
    #[serde(default)]
    pub body: String,
    /// Time to live; the hub's default (one hour) when absent. At most 48 hours.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

fn props_json(props: &[(String, String)]) -> Value {
    Value::Object(
        props
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

impl Hub {
    /// Stores a telemetry message; a repeated `$.mid` is acknowledged but stored once.
    pub async fn ingest_telemetry(&self, device_id: &str, msg: TelemetryIn) -> HubResult<()> {
        if msg.body.len() > MAX_MESSAGE_BYTES {
            return Err(HubError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "message is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                    msg.body.len()
                ),
            ));
        }
        let message_id = msg
            .message_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let row = TelemetryRow {
            seq: 0,
            device_id: device_id.to_string(),
            message_id,
            enqueued_ms: self.now_ms(),
            properties: props_json(&msg.properties),
            body: msg.body.to_vec(),
        };
        let mut stored = row.clone();
        let hub = self.clone();
        let inserted = self
            .store()
            .write(move |tx| {
                let seq = tx.insert_telemetry(&row).map_err(HubError::from)?;
                if seq.is_some() {
                    hub.rollouts_observe_on_commit(tx, || Observation::Telemetry {
                        device: row.device_id.clone(),
                    });
                }
                Ok::<_, HubError>(seq)
            })
            .await?;
        let m = self.metrics();
        if let Some(seq) = inserted {
            stored.seq = seq;
            m.telemetry_stored.fetch_add(1, Ordering::Relaxed);
            if self.inner.telemetry_tx.receiver_count() > 0 {
                let _ = self
                    .inner
                    .telemetry_tx
                    .send(Arc::new(TelemetryEvent::from_row(stored)));
            }
        } else {
            m.telemetry_duplicates.fetch_add(1, Ordering::Relaxed);
            // Stored before under its id, but sent again now: the device is alive (a device that
            // lost power may reuse message ids), which is what a soaking rollout watches for.
            self.rollouts_state().observe(Observation::Telemetry {
                device: device_id.to_string(),
            });
        }
        Ok(())
    }

    /// Stored telemetry after `after_seq`, oldest first.
    pub async fn read_telemetry(
        &self,
        device_id: Option<&str>,
        after_seq: i64,
        limit: usize,
    ) -> HubResult<Vec<TelemetryEvent>> {
        let device = device_id.map(str::to_string);
        let limit = limit.clamp(1, 1000);
        let rows = self
            .store()
            .read(move |r| r.telemetry_after(device.as_deref(), after_seq, limit))
            .await?;
        Ok(rows.into_iter().map(TelemetryEvent::from_row).collect())
    }

    /// The newest `limit` (1..=1000) telemetry messages of one device, oldest first.
    pub async fn latest_telemetry(
        &self,
        device_id: &str,
        limit: usize,
    ) -> HubResult<Vec<TelemetryEvent>> {
        let device = device_id.to_string();
        let limit = limit.clamp(1, 1000);
        let rows = self
            .store()
            .read(move |r| r.telemetry_latest(&device, limit))
            .await?;
        Ok(rows.into_iter().map(TelemetryEvent::from_row).collect())
    }

    /// A live stream of telemetry as it is stored.
    pub fn subscribe_telemetry(&self) -> tokio::sync::broadcast::Receiver<Arc<TelemetryEvent>> {
        self.inner.telemetry_tx.subscribe()
    }

    /// Queues a cloud-to-device message durably; delivers it at once when the device listens.
    pub async fn send_c2d(&self, device_id: &str, req: C2dRequest) -> HubResult<C2dQueued> {
        if req.body.len() > 64 * 1024 {
            return Err(HubError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "cloud-to-device body is {} bytes; the limit is 65,536",
                    req.body.len()
                ),
            ));
        }
        let ttl = req.ttl_seconds.unwrap_or(3600);
        if ttl == 0 || ttl > 48 * 3600 {
            return Err(HubError::invalid(format!(
                "ttlSeconds is {ttl}; it must be 1 to 172,800 (48 hours)"
            )));
        }
        let now = self.now_ms();
        let message_id = req
            .message_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let row = C2dRow {
            seq: 0,
            device_id: device_id.to_string(),
            message_id: message_id.clone(),
            properties: Value::Object(req.properties.clone()),
            body: req.body.into_bytes(),
            enqueued_ms: now,
            expiry_ms: now + (ttl as i64) * 1000,
        };
        let max_queue = self.config().c2d_max_queue;
        let key = device_id.to_string();
        let hub = self.clone();
        self.store()
            .write(move |tx| -> HubResult<()> {
                if tx.device_stamp(&key)?.is_none() {
                    return Err(HubError::device_not_found(&key));
                }
                let queued = tx.count_c2d(&key)?;
                if queued >= max_queue {
                    return Err(HubError::new(
                        ErrorCode::DeviceMaximumQueueDepthExceeded,
                        format!("device '{key}' already has {queued} undelivered messages; the limit is {max_queue}"),
                    ));
                }
                tx.enqueue_c2d(&row)?;
                // Only the new message: the ones queued before went out when the device
                // subscribed.
                tx.on_commit(move || {
                    hub.deliver_c2d(&key, row);
                });
                Ok(())
            })
            .await?;
        self.metrics().c2d_enqueued.fetch_add(1, Ordering::Relaxed);
        let expiry =
            chrono::DateTime::from_timestamp_millis(now + (ttl as i64) * 1000).unwrap_or_default();
        Ok(C2dQueued { message_id, expiry })
    }

    /// Sends every pending message to the device if it listens for them.
    pub fn flush_c2d(&self, device_id: &str) {
        if !self.inner.connections.is_connected(device_id) {
            return;
        }
        let hub = self.clone();
        let id = device_id.to_string();
        // The queue never holds more than the cap, so one flush sends everything pending.
        let limit = usize::try_from(self.config().c2d_max_queue).unwrap_or(usize::MAX);
        tokio::spawn(async move {
            let now = hub.now_ms();
            let key = id.clone();
            let rows = match hub
                .store()
                .read(move |r| r.pending_c2d(&key, now, limit))
                .await
            {
                Ok(rows) => rows,
                Err(e) => return tracing::warn!(device = %id, "c2d flush failed: {e}"),
            };
            for row in rows {
                if !hub.deliver_c2d(&id, row) {
                    break;
                }
            }
        });
    }

    /// Hands one queued message to the device's connection if it listens for messages.
    fn deliver_c2d(&self, device_id: &str, row: C2dRow) -> bool {
        let mut properties: Vec<(String, String)> = vec![
            ("$.mid".into(), row.message_id.clone()),
            (
                "$.to".into(),
                format!("/devices/{device_id}/messages/devicebound"),
            ),
        ];
        if let Some(obj) = row.properties.as_object() {
            for (k, v) in obj {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                properties.push((k.clone(), v));
            }
        }
        let cmd = DeviceCommand::C2d {
            message_id: row.message_id,
            properties,
            body: Bytes::from(row.body),
        };
        self.inner
            .connections
            .send_if(device_id, |s| s.c2d.load(Ordering::Relaxed), cmd)
    }

    /// The device acknowledged (PUBACK) a cloud-to-device message: it is complete.
    pub async fn c2d_delivered(&self, device_id: &str, message_id: &str) -> HubResult<()> {
        let (d, m) = (device_id.to_string(), message_id.to_string());
        let done = self
            .store()
            .write(move |tx| tx.complete_c2d(&d, &m).map_err(HubError::from))
            .await?;
        if done {
            self.metrics().c2d_delivered.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
