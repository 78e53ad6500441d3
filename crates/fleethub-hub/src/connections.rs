//! The connection registry: which devices are online, and the only way anything reaches one.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// Something the hub asks the gateway to deliver to one connected device.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceCommand {
    /// `$iothub/twin/PATCH/properties/desired/?$version={version}` with `body` (contains `$version`).
    DesiredPatch { version: u64, body: Bytes },
    /// `$iothub/methods/POST/{name}/?$rid={rid}`.
    MethodRequest {
        name: String,
        rid: String,
        payload: Bytes,
    },
    /// `devices/{id}/messages/devicebound/{properties}`; the gateway reports the PUBACK back with
    /// [`crate::Hub::c2d_delivered`].
    C2d {
        message_id: String,
        properties: Vec<(String, String)>,
        body: Bytes,
    },
    /// Close the connection (device disabled, deleted, or replaced by a newer connection).
    Disconnect { reason: String },
}

struct Entry {
    conn_id: u64,
    tx: mpsc::UnboundedSender<DeviceCommand>,
    state: Arc<LinkState>,
}

/// What a live connection has subscribed to; the gateway keeps it current.
#[derive(Debug, Default)]
pub struct LinkState {
    pub methods: AtomicBool,
    pub desired: AtomicBool,
    pub c2d: AtomicBool,
}

/// The map of online devices.
#[derive(Default)]
pub struct Connections {
    map: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
    changed: Notify,
}

impl Connections {
    /// Registers a connection for `device_id`, telling an older one to close. Returns its id.
    pub(crate) fn register(
        &self,
        device_id: &str,
        tx: mpsc::UnboundedSender<DeviceCommand>,
    ) -> (u64, Arc<LinkState>) {
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let state = Arc::new(LinkState::default());
        let old = self.map.lock().insert(
            device_id.to_string(),
            Entry {
                conn_id,
                tx,
                state: state.clone(),
            },
        );
        if let Some(old) = old {
            let _ = old.tx.send(DeviceCommand::Disconnect {
                reason: "a newer connection with the same client id replaced this one".into(),
            });
        }
        self.changed.notify_waiters();
        (conn_id, state)
    }

    /// Removes the connection if it is still the registered one.
    pub(crate) fn unregister(&self, device_id: &str, conn_id: u64) -> bool {
        let mut map = self.map.lock();
        if map.get(device_id).is_some_and(|e| e.conn_id == conn_id) {
            map.remove(device_id);
            true
        } else {
            false
        }
    }

    /// Sends a command to the device if it is connected; false when it is not.
    pub fn send(&self, device_id: &str, cmd: DeviceCommand) -> bool {
        match self.map.lock().get(device_id) {
            Some(e) => e.tx.send(cmd).is_ok(),
            None => false,
        }
    }

    /// Sends a command to the device's live connection; the id of the connection it went to.
    pub fn send_to(&self, device_id: &str, cmd: DeviceCommand) -> Option<u64> {
        let map = self.map.lock();
        let e = map.get(device_id)?;
        e.tx.send(cmd).ok().map(|()| e.conn_id)
    }

    /// Whether `conn_id` is still the device's registered connection.
    pub fn is_open(&self, device_id: &str, conn_id: u64) -> bool {
        self.map
            .lock()
            .get(device_id)
            .is_some_and(|e| e.conn_id == conn_id)
    }

    /// Sends only when `wants` says the live connection subscribed to this kind of command.
    pub fn send_if(
        &self,
        device_id: &str,
        wants: impl Fn(&LinkState) -> bool,
        cmd: DeviceCommand,
    ) -> bool {
        match self.map.lock().get(device_id) {
            Some(e) if wants(&e.state) => e.tx.send(cmd).is_ok(),
            _ => false,
        }
    }

    /// Whether the device has a live connection.
    pub fn is_connected(&self, device_id: &str) -> bool {
        self.map.lock().contains_key(device_id)
    }

    /// Whether the device is connected and subscribed to direct methods.
    pub fn accepts_methods(&self, device_id: &str) -> bool {
        self.map
            .lock()
            .get(device_id)
            .is_some_and(|e| e.state.methods.load(Ordering::Relaxed))
    }

    /// How many devices are connected.
    pub fn count(&self) -> usize {
        self.map.lock().len()
    }

    /// Resolves at the next change of the map or of a subscription.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    pub(crate) fn notify(&self) {
        self.changed.notify_waiters();
    }
}

/// A registered connection. Dropping it marks the device offline (unless a newer connection took
/// its place).
pub struct ConnectionHandle {
    pub(crate) hub: crate::Hub,
    pub(crate) device_id: String,
    pub(crate) conn_id: u64,
    pub(crate) state: Arc<LinkState>,
}

impl ConnectionHandle {
    /// The device this connection belongs to.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Records what the connection is subscribed to, so the hub knows what it can deliver.
    pub fn set_subscriptions(&self, methods: bool, desired: bool, c2d: bool) {
        let was_c2d = self.state.c2d.swap(c2d, Ordering::Relaxed);
        self.state.methods.store(methods, Ordering::Relaxed);
        self.state.desired.store(desired, Ordering::Relaxed);
        self.hub.inner.connections.notify();
        if c2d && !was_c2d {
            self.hub.flush_c2d(&self.device_id);
        }
    }
}

impl Drop for ConnectionHandle {
    fn drop(&mut self) {
        self.hub.connection_closed(&self.device_id, self.conn_id);
    }
}
