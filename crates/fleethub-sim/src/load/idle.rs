//! Idle connections for the connection-memory benchmark.

use super::connect::{connect_all, disconnect_all, ConnectTemplate, Subscriptions};
use crate::device::{ClientError, DeviceClient};

/// Idle connections held open for a connection-memory benchmark.
#[derive(Debug)]
pub struct IdleConnections {
    /// The connected devices, each subscribed to all four feeds.
    pub clients: Vec<DeviceClient>,
    /// Devices that could not connect or subscribe, with why.
    pub failures: Vec<(String, ClientError)>,
}

impl IdleConnections {
    /// Disconnects every device and waits until all connections are closed.
    pub async fn disconnect(self) {
        disconnect_all(self.clients).await;
    }
}

/// Connects `devices` (id, key) and keeps them idle (keepalive pings only) until disconnected.
pub async fn connect_idle(
    template: &ConnectTemplate,
    devices: &[(String, String)],
) -> IdleConnections {
    let mut idle = IdleConnections {
        clients: Vec::with_capacity(devices.len()),
        failures: Vec::new(),
    };
    for outcome in connect_all(template, devices, Subscriptions::All, None).await {
        match outcome {
            Ok((client, _events)) => idle.clients.push(client),
            Err(failure) => idle.failures.push(failure),
        }
    }
    idle
}
