//! Direct methods: a call that needs the device online, answered or timed out.

use crate::{DeviceCommand, Hub};
use bytes::Bytes;
use fleethub_core::{ErrorCode, HubError, HubResult};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// Largest method request or response payload: 128 KB.
pub const MAX_METHOD_PAYLOAD: usize = 128 * 1024;

/// `POST /twins/{id}/methods` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodRequest {
    pub method_name: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub response_timeout_in_seconds: Option<u64>,
    #[serde(default)]
    pub connect_timeout_in_seconds: Option<u64>,
}

/// What the device answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodResponse {
    pub status: i32,
    pub payload: Value,
}

/// Calls waiting for their device's answer, by request id.
#[derive(Default)]
pub struct PendingMethods {
    next_rid: AtomicU64,
    waiting: Mutex<HashMap<String, Waiting>>,
}

/// A call sent to one connection of a device, waiting for its answer.
struct Waiting {
    device_id: String,
    /// The connection the request went to, once sent: if that connection closes, even because a
    /// newer one replaced it, the answer can never come.
    conn_id: Option<u64>,
    reply: oneshot::Sender<MethodResponse>,
}

struct Pending<'a> {
    pending: &'a PendingMethods,
    rid: String,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.pending.waiting.lock().remove(&self.rid);
    }
}

pub(crate) fn check_request(req: &MethodRequest) -> HubResult<(Duration, Duration, Bytes)> {
    let name = &req.method_name;
    if name.is_empty() || name.len() > 1024 || name.contains(['/', '?', '#']) {
        return Err(HubError::invalid(format!(
            "methodName '{name}' must be 1 to 1024 characters without '/', '?' or '#'"
        )));
    }
    let response = req.response_timeout_in_seconds.unwrap_or(30);
    if !(5..=300).contains(&response) {
        return Err(HubError::invalid(format!(
            "responseTimeoutInSeconds is {response}; it must be between 5 and 300"
        )));
    }
    let connect = req.connect_timeout_in_seconds.unwrap_or(0);
    if connect > 300 {
        return Err(HubError::invalid(format!(
            "connectTimeoutInSeconds is {connect}; it must be between 0 and 300"
        )));
    }
    let payload = serde_json::to_vec(&req.payload).map_err(|e| HubError::format(e.to_string()))?;
    if payload.len() > MAX_METHOD_PAYLOAD {
        return Err(HubError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "method payload is {} bytes; the limit is {MAX_METHOD_PAYLOAD}",
                payload.len()
            ),
        ));
    }
    Ok((
        Duration::from_secs(response),
        Duration::from_secs(connect),
        Bytes::from(payload),
    ))
}

impl Hub {
    /// Invokes a direct method and waits for the device's answer.
    pub async fn invoke_method(&self, id: &str, req: MethodRequest) -> HubResult<MethodResponse> {
        let (response_timeout, connect_timeout, payload) = check_request(&req)?;
        if self.load_device(id).await?.is_none() {
            return Err(HubError::device_not_found(id));
        }
        self.wait_for_method_subscriber(id, connect_timeout).await?;
        let pending = &self.inner.methods;
        let rid = format!("{:x}", pending.next_rid.fetch_add(1, Ordering::Relaxed) + 1);
        let (reply, rx) = oneshot::channel();
        let waiting = Waiting {
            device_id: id.to_string(),
            conn_id: None,
            reply,
        };
        pending.waiting.lock().insert(rid.clone(), waiting);
        let _guard = Pending {
            pending,
            rid: rid.clone(),
        };
        let cmd = DeviceCommand::MethodRequest {
            name: req.method_name.clone(),
            rid: rid.clone(),
            payload,
        };
        // Noted under the lock the close path takes, so a close cannot slip in between.
        {
            let mut waiting = pending.waiting.lock();
            let Some(conn_id) = self.inner.connections.send_to(id, cmd) else {
                return Err(not_online(id));
            };
            if !self.inner.connections.is_open(id, conn_id) {
                waiting.remove(&rid);
            } else if let Some(w) = waiting.get_mut(&rid) {
                w.conn_id = Some(conn_id);
            }
        }
        self.metrics()
            .methods_invoked
            .fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(response_timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(HubError::new(
                ErrorCode::DeviceConnectionClosedRemotely,
                format!("device '{id}' disconnected before answering method '{}'", req.method_name),
            )),
            Err(_) => Err(HubError::new(
                ErrorCode::GatewayTimeout,
                format!(
                    "device '{id}' did not answer method '{}' within {}s (responseTimeoutInSeconds)",
                    req.method_name,
                    response_timeout.as_secs()
                ),
            )),
        }
    }

    async fn wait_for_method_subscriber(
        &self,
        id: &str,
        connect_timeout: Duration,
    ) -> HubResult<()> {
        let conns = &self.inner.connections;
        let deadline = tokio::time::Instant::now() + connect_timeout;
        loop {
            let changed = conns.changed();
            if conns.accepts_methods(id) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(not_online(id));
            }
        }
    }

    /// The device's answer on `$iothub/methods/res/{status}/?$rid={rid}`. An answer for a call
    /// nobody waits for any more (timed out, or another device's rid) is dropped.
    pub fn method_response(&self, device_id: &str, rid: &str, status: i32, payload: &[u8]) {
        let mut waiting = self.inner.methods.waiting.lock();
        let owned = waiting.get(rid).is_some_and(|w| w.device_id == device_id);
        if !owned {
            return;
        }
        if let Some(Waiting { reply: tx, .. }) = waiting.remove(rid) {
            let payload = if payload.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(payload).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(payload).into_owned())
                })
            };
            let _ = tx.send(MethodResponse { status, payload });
        }
    }

    /// Fails, at once, the calls sent to a connection that closed (dropping their reply
    /// channel answers them with `DeviceConnectionClosedRemotely`).
    pub(crate) fn fail_pending_methods(&self, conn_id: u64) {
        self.inner
            .methods
            .waiting
            .lock()
            .retain(|_, w| w.conn_id != Some(conn_id));
    }
}

fn not_online(id: &str) -> HubError {
    HubError::new(
        ErrorCode::DeviceNotOnline,
        format!("Timed out waiting for device '{id}' to connect and subscribe to direct methods."),
    )
}
