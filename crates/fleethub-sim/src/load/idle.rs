//! Idle connections for the connection-memory benchmark.

use super::connect::{connect_all, disconnect_all, ConnectTemplate, Subscriptions};
use crate::device::{ClientError, DeviceClient};

/// Idle connections held open for a connection-memory benchmark.
#[derive(Debug)]
pub struct IdleFleet {
    /// The connected devices, each subscribed to all four feeds.
    pub clients: Vec<DeviceClient>,
    /// Devices that could not connect or subscribe, with why.
    pub failures: Vec<(String, ClientError)>,
}

impl IdleFleet {
    /// Disconnects every device and waits until all connections are closed.
    pub async fn disconnect(self) {
        disconnect_all(self.clients).await;
    }
}

/// Connects `devices` (id, key) and keeps them idle (keepalive pings only) until disconnected.
pub async fn connect_idle(template: &ConnectTemplate, devices: &[(String, String)]) -> IdleFleet {
    let mut fleet = IdleFleet {
        clients: Vec::with_capacity(devices.len()),
        failures: Vec::new(),
    };
    for outcome in connect_all(template, devices, Subscriptions::All).await {
        match outcome {
            Ok((client, _events)) => fleet.clients.push(client),
            Err(failure) => fleet.failures.push(failure),
        }
    }
    fleet
}
