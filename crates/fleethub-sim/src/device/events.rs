//! What the hub pushes to a device, delivered in arrival order.

use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// Something the hub sent the device unasked, or the end of the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// A desired-properties patch; `version` is the topic's `$version` (else the body's).
    DesiredPatch {
        /// The desired properties' new version.
        version: u64,
        /// The patch as sent, `$version` included.
        body: Value,
    },
    /// A direct method call; answer with [`DeviceClient::method_response`](super::DeviceClient::method_response).
    MethodRequest {
        /// The method name, decoded.
        name: String,
        /// The request id to echo in the response.
        rid: String,
        /// The JSON payload (Null when empty).
        payload: Value,
    },
    /// A cloud-to-device message.
    C2d {
        /// The property bag from the topic, decoded, in topic order.
        topic_props: Vec<(String, String)>,
        /// The message body.
        body: Bytes,
    },
    /// The connection ended; no event follows.
    Disconnected {
        /// Why: hub closed it, I/O error, keepalive timeout, or the client disconnected.
        reason: String,
    },
}

/// The stream of [`DeviceEvent`]s of one connection. Unbounded, so a device that never reads
/// its events cannot stall the acknowledgements and twin responses its requests wait for.
#[derive(Debug)]
pub struct DeviceEvents {
    rx: mpsc::UnboundedReceiver<DeviceEvent>,
}

impl DeviceEvents {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<DeviceEvent>) -> Self {
        DeviceEvents { rx }
    }

    /// The next event; None once the connection task is gone and every event was read.
    pub async fn recv(&mut self) -> Option<DeviceEvent> {
        self.rx.recv().await
    }

    /// The next event if one is already waiting.
    pub fn try_recv(&mut self) -> Option<DeviceEvent> {
        self.rx.try_recv().ok()
    }

    /// The first event matching `want` within `timeout`, skipping others; None on timeout or end.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&DeviceEvent) -> bool,
    ) -> Option<DeviceEvent> {
        let search = async {
            while let Some(event) = self.rx.recv().await {
                if want(&event) {
                    return Some(event);
                }
            }
            None
        };
        tokio::time::timeout(timeout, search).await.ok().flatten()
    }

    /// The underlying channel, for `select!` loops or stream adapters.
    pub fn into_inner(self) -> mpsc::UnboundedReceiver<DeviceEvent> {
        self.rx
    }
}
