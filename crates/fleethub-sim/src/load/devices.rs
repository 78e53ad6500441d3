//! [`LoadDevices`]: the devices a load run drives, connected once and then driven (or held)
//! on command, so a benchmark can time the connect phase and the load phase separately.

use super::connect::{connect_all, disconnect_all, ConnectTemplate, DeviceSessions, Subscriptions};
use super::drive::{drive, LoadShape};
use super::stats::LoadReport;
use crate::device::{ClientError, DeviceClient, DeviceEvent, DeviceEvents};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

/// What the devices of a [`LoadDevices`] do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadKind {
    /// Reported-property patches, each waiting for `$iothub/twin/res/204`.
    Reported,
    /// QoS 1 telemetry, each waiting for PUBACK; subscribes to nothing.
    Telemetry,
    /// Connect subscribed to all four feeds and wait for what the hub pushes.
    Hold,
}

/// Connected load devices of one kind.
#[derive(Debug)]
pub struct LoadDevices {
    kind: LoadKind,
    clients: Vec<DeviceClient>,
    /// Kept for [`LoadDevices::serve_events`]; taken by its first call.
    events: Mutex<Vec<DeviceEvents>>,
    failures: Vec<(String, ClientError)>,
}

impl LoadDevices {
    /// Connects and subscribes `devices` (id, key), [`CONNECT_CONCURRENCY`](super::CONNECT_CONCURRENCY)
    /// at a time; devices that fail are recorded, not fatal.
    pub async fn connect(
        template: &ConnectTemplate,
        devices: &[(String, String)],
        kind: LoadKind,
    ) -> LoadDevices {
        Self::connect_with(template, devices, kind, None).await
    }

    /// [`connect`](Self::connect), each device with its own TLS session store from `sessions`
    /// (one per device, in the order of `devices`), so that connecting the same devices again
    /// with the same `sessions` resumes their TLS sessions.
    pub async fn connect_with_sessions(
        template: &ConnectTemplate,
        devices: &[(String, String)],
        kind: LoadKind,
        sessions: &DeviceSessions,
    ) -> LoadDevices {
        Self::connect_with(template, devices, kind, Some(sessions)).await
    }

    async fn connect_with(
        template: &ConnectTemplate,
        devices: &[(String, String)],
        kind: LoadKind,
        sessions: Option<&DeviceSessions>,
    ) -> LoadDevices {
        let subscriptions = match kind {
            LoadKind::Reported => Subscriptions::TwinResponses,
            LoadKind::Telemetry => Subscriptions::None,
            LoadKind::Hold => Subscriptions::All,
        };
        let mut load = LoadDevices {
            kind,
            clients: Vec::with_capacity(devices.len()),
            events: Mutex::new(Vec::new()),
            failures: Vec::new(),
        };
        let mut events = Vec::new();
        for outcome in connect_all(template, devices, subscriptions, sessions).await {
            match outcome {
                Ok((client, device_events)) => {
                    load.clients.push(client);
                    // Load devices ignore pushes; dropping their streams costs nothing.
                    if kind == LoadKind::Hold {
                        events.push(device_events);
                    }
                }
                Err((device_id, e)) => {
                    tracing::warn!(%device_id, error = %e, "load device failed to connect");
                    load.failures.push((device_id, e));
                }
            }
        }
        load.events = Mutex::new(events);
        load
    }

    /// How many devices are connected.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True when no device is connected.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// How many of the connected devices resumed a TLS session instead of a full handshake.
    pub fn tls_resumed(&self) -> u64 {
        self.clients.iter().filter(|c| c.tls_resumed()).count() as u64
    }

    /// How many devices failed to connect or subscribe.
    pub fn failed_connects(&self) -> u64 {
        self.failures.len() as u64
    }

    /// The devices that failed to connect or subscribe, with why.
    pub fn failures(&self) -> &[(String, ClientError)] {
        &self.failures
    }

    /// The failures, consuming the load devices (any connected device is disconnected).
    pub fn into_failures(self) -> Vec<(String, ClientError)> {
        self.failures
    }

    /// The connected devices.
    pub fn clients(&self) -> &[DeviceClient] {
        &self.clients
    }

    /// Runs these devices' kind of request load ([`LoadKind::Hold`] sends nothing) and reports.
    pub async fn run(&self, shape: LoadShape) -> LoadReport {
        let mut report = match self.kind {
            LoadKind::Hold => LoadReport::default(),
            kind => drive(&self.clients, kind, &shape).await,
        };
        report.failed_connects = self.failed_connects();
        report
    }

    /// Starts one task per device (of [`LoadKind::Hold`] devices) that counts every push from
    /// the hub into `received` and, if `answer_methods`, answers each method with 200 echoing
    /// its payload. Dropping the returned [`EventTasks`] stops them. Later calls start nothing.
    pub fn serve_events(&self, answer_methods: bool, received: Arc<AtomicU64>) -> EventTasks {
        let streams = std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()));
        let mut tasks = JoinSet::new();
        for (client, events) in self.clients.iter().zip(streams) {
            let handler = EventHandler {
                client: client.clone(),
                answer_methods,
                received: received.clone(),
            };
            tasks.spawn(handler.run(events));
        }
        EventTasks { _tasks: tasks }
    }

    /// Disconnects every device and waits until all connections are closed.
    pub async fn disconnect(self) {
        disconnect_all(self.clients).await;
    }
}

/// Tasks started by [`LoadDevices::serve_events`]; dropping this stops them.
#[derive(Debug)]
pub struct EventTasks {
    _tasks: JoinSet<()>,
}

struct EventHandler {
    client: DeviceClient,
    answer_methods: bool,
    received: Arc<AtomicU64>,
}

impl EventHandler {
    async fn run(self, mut events: DeviceEvents) {
        while let Some(event) = events.recv().await {
            match event {
                DeviceEvent::MethodRequest { rid, payload, .. } => {
                    self.received.fetch_add(1, Ordering::Relaxed);
                    if self.answer_methods {
                        self.answer(&rid, &payload).await;
                    }
                }
                DeviceEvent::DesiredPatch { .. } | DeviceEvent::C2d { .. } => {
                    self.received.fetch_add(1, Ordering::Relaxed);
                }
                DeviceEvent::Disconnected { .. } => break,
            }
        }
    }

    async fn answer(&self, rid: &str, payload: &Value) {
        if let Err(e) = self.client.method_response(rid, 200, payload).await {
            tracing::debug!(device = %self.client.device_id(), error = %e, "method response failed");
        }
    }
}
