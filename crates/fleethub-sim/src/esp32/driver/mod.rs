//! One device's task: boots the model, keeps its MQTT connection, and carries out what the
//! model decides — reports, telemetry, downloads, reboots — on simulated time. Faults of the
//! network (link drops, sleep) live here; faults of the device live in the model.

use super::clock::{secs, SimClock};
use super::download::{Download, Fetched};
use super::methods::AfterMethod;
use super::model::{Boot, Model, Now, OtaCommand};
use super::stats::StatsHandle;
use super::telemetry::{self, Telemetry};
use super::DeviceSpec;
use crate::device::{DeviceClient, DeviceEvent};
use crate::load::{ConnectTemplate, CONNECT_CONCURRENCY};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

mod ota;

/// TLS handshakes in flight across the whole process, like `load::connect_all`.
static HANDSHAKES: Semaphore = Semaphore::const_new(CONNECT_CONCURRENCY);

/// What a device subscribes to on its first connect (the hub keeps the session after that).
const SUBSCRIPTIONS: [&str; 3] = [
    "$iothub/twin/res/#",
    "$iothub/twin/PATCH/properties/desired/#",
    "$iothub/methods/POST/#",
];

/// How long (simulated) an image whose Wi-Fi never comes up waits before its watchdog resets it.
const WIFI_WATCHDOG: Duration = Duration::from_secs(60);

/// Any one request to the hub (report, telemetry, twin GET, method answer), in real time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Real time between two timers of one device at least, so that no scale or scenario value
/// (zero link-down time, a huge scale) turns a device into a busy loop.
const MIN_REAL_GAP: Duration = Duration::from_millis(2);

/// Simulated reconnect backoff: 1 s doubling to 60 s, plus jitter.
const RECONNECT_MAX: Duration = Duration::from_secs(60);

/// How a boot of the device ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// A deliberate restart (method, update, crash, watchdog): RAM is lost.
    Reboot,
    PowerLoss,
    Stop,
}

/// What woke the event loop.
enum Wake {
    Stop,
    Event(Option<DeviceEvent>),
    Fetched(Option<Fetched>),
    Timer,
}

struct Conn {
    client: DeviceClient,
    events: mpsc::UnboundedReceiver<DeviceEvent>,
}

pub(crate) struct Driver {
    model: Model,
    key: String,
    index: usize,
    connect: Arc<ConnectTemplate>,
    http: Option<reqwest::Client>,
    clock: SimClock,
    stats: StatsHandle,
    stop: watch::Receiver<bool>,
    conn: Option<Conn>,
    subscribed: bool,
    ever_connected: bool,
    connect_failures: u32,
    connect_at: Instant,
    link_up: bool,
    link_change_at: Option<Instant>,
    awake: bool,
    sleep_change_at: Option<Instant>,
    telemetry_at: Option<Instant>,
    health_at: Option<(Instant, Duration)>,
    ota_retry_at: Option<Instant>,
    download: Option<Download>,
}

impl Driver {
    pub(crate) fn new(
        spec: DeviceSpec,
        connect: Arc<ConnectTemplate>,
        http: Option<reqwest::Client>,
        clock: SimClock,
        stats: StatsHandle,
        stop: watch::Receiver<bool>,
    ) -> Driver {
        let mut model = Model::new(
            &spec.device_id,
            &spec.factory_version,
            spec.behavior.clone(),
            spec.seed,
        );
        model.firmware_key = spec.firmware_key;
        let mut driver = Driver {
            model,
            key: spec.key,
            index: spec.index,
            connect,
            http,
            clock,
            stats,
            stop,
            conn: None,
            subscribed: false,
            ever_connected: false,
            connect_failures: 0,
            connect_at: Instant::now(),
            link_up: true,
            link_change_at: None,
            awake: true,
            sleep_change_at: None,
            telemetry_at: None,
            health_at: None,
            ota_retry_at: None,
            download: None,
        };
        driver.link_change_at = driver.next_link_drop();
        driver.sleep_change_at = driver.sleep_cycle().map(|(awake, _)| driver.at(awake));
        driver
    }

    /// Power cycles until stopped.
    pub(crate) async fn run(mut self) {
        loop {
            let boot_delay = secs(self.model.behavior.boot_delay_s);
            if !self.pause(boot_delay).await {
                break;
            }
            match self.boot().await {
                Flow::Stop => break,
                Flow::PowerLoss => {
                    self.stats.power_lost();
                    self.model.lose_power();
                }
                Flow::Reboot | Flow::Continue => {}
            }
            self.drop_connection();
        }
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn.client.disconnect()).await;
        }
    }

    fn now(&self) -> Now {
        Now {
            elapsed: self.clock.elapsed(),
            wall: self.clock.now(),
        }
    }

    /// The real instant `sim` simulated time from now, never sooner than [`MIN_REAL_GAP`].
    fn at(&self, sim: Duration) -> Instant {
        self.clock.deadline(sim).max(Instant::now() + MIN_REAL_GAP)
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `sim` simulated time; false when told to stop meanwhile.
    async fn pause(&mut self, sim: Duration) -> bool {
        if self.stopped() {
            return false;
        }
        let until = self.at(sim);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => !self.stopped(),
            _ = self.stop.changed() => false,
        }
    }

    fn online(&self) -> bool {
        self.link_up && self.awake
    }

    fn sleep_cycle(&self) -> Option<(Duration, Duration)> {
        let cycle = self.model.behavior.faults.sleep.as_ref()?;
        let awake = secs(cycle.awake_s);
        (!awake.is_zero()).then(|| (awake, secs(cycle.asleep_s)))
    }

    fn next_link_drop(&mut self) -> Option<Instant> {
        let mean = self
            .model
            .behavior
            .faults
            .link_drop_mean_s
            .filter(|m| m.is_finite() && *m > 0.0)?;
        let after = self.model.rng.link_drop_after(mean);
        let when = self.clock.elapsed() + after;
        let faults = &self.model.behavior.faults;
        if faults
            .link_drops_until_s
            .is_some_and(|until| when > secs(until))
        {
            return None;
        }
        Some(self.at(after))
    }

    /// Power on: the bootloader, then the image's life until it resets.
    async fn boot(&mut self) -> Flow {
        let now = self.now();
        let boot = self.model.power_on(&now);
        self.sync_stats();
        let first = self
            .model
            .telemetry_interval()
            .map(|d| self.model.rng.phase(d));
        self.telemetry_at = first.map(|d| self.at(d));
        self.health_at = None;
        self.ota_retry_at = None;
        match boot {
            Boot::Crashed => Flow::Reboot,
            Boot::NoNetwork => {
                if self.pause(WIFI_WATCHDOG).await {
                    Flow::Reboot
                } else {
                    Flow::Stop
                }
            }
            Boot::Dead => {
                while self.pause(Duration::from_secs(3600)).await {}
                Flow::Stop
            }
            Boot::Running { health_fails_after } => {
                self.health_at = health_fails_after.map(|after| (self.at(after), after));
                self.event_loop().await
            }
        }
    }

    async fn event_loop(&mut self) -> Flow {
        loop {
            let flow = self.start_due_work().await;
            if flow != Flow::Continue {
                return flow;
            }
            let wake = self.next_wake();
            let woke = tokio::select! {
                _ = self.stop.changed() => Wake::Stop,
                event = next_event(&mut self.conn) => Wake::Event(event),
                fetched = next_fetched(&mut self.download) => Wake::Fetched(fetched),
                _ = tokio::time::sleep_until(wake) => Wake::Timer,
            };
            let flow = match woke {
                Wake::Stop => Flow::Stop,
                Wake::Event(event) => self.on_event(event).await,
                Wake::Fetched(fetched) => self.on_fetched(fetched).await,
                Wake::Timer => self.on_timers().await,
            };
            if flow != Flow::Continue || self.stopped() {
                return if self.stopped() { Flow::Stop } else { flow };
            }
        }
    }

    /// Connects and starts downloads when they are due.
    async fn start_due_work(&mut self) -> Flow {
        let now = Instant::now();
        if self.conn.is_none() && self.online() && now >= self.connect_at {
            self.try_connect().await;
        }
        let retry_due = self.ota_retry_at.is_none_or(|at| now >= at);
        if self.download.is_none()
            && self.model.ram.ota.is_some()
            && self.online()
            && retry_due
            && !self.stopped()
        {
            self.ota_retry_at = None;
            return self.start_download().await;
        }
        Flow::Continue
    }

    fn next_wake(&self) -> Instant {
        let connect = (self.conn.is_none() && self.online()).then_some(self.connect_at);
        let retry = self
            .ota_retry_at
            .filter(|_| self.download.is_none() && self.model.ram.ota.is_some());
        [
            self.telemetry_at,
            self.link_change_at,
            self.sleep_change_at,
            self.health_at.map(|(at, _)| at),
            retry,
            connect,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    async fn try_connect(&mut self) {
        let opts = self.connect.options(self.index, &self.model.id, &self.key);
        let connected = {
            let Ok(_permit) = HANDSHAKES.acquire().await else {
                return;
            };
            let subscribe = !self.subscribed;
            let attempt = Box::pin(async move {
                let (client, events) = DeviceClient::connect(opts).await?;
                if subscribe {
                    // No cloud-to-device feed: the simulated firmware takes no messages.
                    client.subscribe(&SUBSCRIPTIONS).await?;
                }
                Ok::<_, crate::ClientError>((client, events))
            });
            tokio::select! {
                result = attempt => Some(result),
                _ = self.stop.changed() => None,
            }
        };
        match connected {
            None => {}
            Some(Ok((client, events))) => {
                self.subscribed = true;
                self.conn = Some(Conn {
                    client,
                    events: events.into_inner(),
                });
                self.connect_failures = 0;
                self.stats.set_connected(true);
                if self.ever_connected {
                    self.stats.reconnected();
                }
                self.ever_connected = true;
                self.on_connected().await;
            }
            Some(Err(e)) => {
                tracing::debug!(device = %self.model.id, error = %e, "connect failed");
                self.connection_lost();
            }
        }
    }

    /// The connection is gone: count it, and reconnect after a backoff.
    fn connection_lost(&mut self) {
        self.conn = None;
        self.stats.set_connected(false);
        self.connect_failures = self.connect_failures.saturating_add(1);
        let exp = self.connect_failures.min(7) - 1;
        let base = Duration::from_secs(1u64 << exp).min(RECONNECT_MAX);
        let wait = self.model.rng.jitter(base);
        self.connect_at = self
            .at(wait)
            .max(Instant::now() + Duration::from_millis(50));
    }

    /// Drops the connection without a word: power loss, link loss.
    fn drop_connection(&mut self) {
        self.conn = None;
        self.stats.set_connected(false);
        self.download = None;
    }

    /// After CONNACK: report where the device stands, read the twin and act on `desired`,
    /// pass the self-test, replay buffered telemetry.
    async fn on_connected(&mut self) {
        let _ = self.model.take_report();
        let patch = self.model.report_patch();
        self.report(&patch).await;
        let Some(conn) = &self.conn else { return };
        let twin = tokio::time::timeout(REQUEST_TIMEOUT, conn.client.get_twin()).await;
        let Ok(Ok(twin)) = twin else {
            self.connection_lost();
            return;
        };
        let desired = twin.get("desired").cloned().unwrap_or(Value::Null);
        let version = desired.get("$version").and_then(Value::as_u64).unwrap_or(0);
        let now = self.now();
        let command = self.model.set_desired(desired, version, &now);
        self.ota_command(command);
        if self.model.ram.pending && self.health_at.is_none() {
            self.model.self_test_passed(&now);
            self.flush_report().await;
            let command = self.model.evaluate_desired(&now);
            self.ota_command(command);
        }
        self.flush_report().await;
        while let Some(message) = self.model.ram.telemetry.pop_front() {
            if !self.send_telemetry(&message).await {
                self.model.ram.telemetry.push_front(message);
                break;
            }
        }
    }

    fn ota_command(&mut self, command: OtaCommand) {
        match command {
            OtaCommand::Nothing => {}
            OtaCommand::Start => {
                self.download = None;
                self.ota_retry_at = None;
            }
            OtaCommand::Abort => self.download = None,
        }
    }

    /// Sends a reported patch when connected; a failed one is sent again with the next.
    async fn report(&mut self, patch: &Value) {
        self.sync_stats();
        let Some(conn) = &self.conn else { return };
        match tokio::time::timeout(REQUEST_TIMEOUT, conn.client.report(patch)).await {
            Ok(Ok(_)) => self.stats.set_reporting(true),
            _ => self.model.mark_dirty(),
        }
    }

    async fn flush_report(&mut self) {
        self.sync_stats();
        if self.conn.is_none() {
            return;
        }
        if let Some(patch) = self.model.take_report() {
            self.report(&patch).await;
        }
    }

    fn sync_stats(&mut self) {
        self.stats.set_version(self.model.running_version());
        self.stats.set_status(self.model.status());
    }

    async fn send_telemetry(&mut self, message: &Telemetry) -> bool {
        let Some(conn) = &self.conn else { return false };
        let props = telemetry::properties();
        let send = conn
            .client
            .send_telemetry(&message.mid, &props, message.body.clone());
        if !matches!(
            tokio::time::timeout(REQUEST_TIMEOUT, send).await,
            Ok(Ok(()))
        ) {
            return false;
        }
        self.stats.telemetry_sent();
        if self.model.duplicate() {
            let again = conn
                .client
                .send_telemetry(&message.mid, &props, message.body.clone());
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, again).await;
        }
        true
    }

    async fn on_event(&mut self, event: Option<DeviceEvent>) -> Flow {
        let now = self.now();
        match event {
            None | Some(DeviceEvent::Disconnected { .. }) => {
                self.connection_lost();
                Flow::Continue
            }
            Some(DeviceEvent::DesiredPatch { version, body }) => {
                if version > self.model.ram.desired_version {
                    let mut desired = self.model.ram.desired.clone();
                    merge_desired_patch(&mut desired, &body);
                    let command = self.model.set_desired(desired, version, &now);
                    self.ota_command(command);
                    self.flush_report().await;
                }
                Flow::Continue
            }
            Some(DeviceEvent::MethodRequest { name, rid, payload }) => {
                self.on_method(&name, &rid, &payload, &now).await
            }
            Some(DeviceEvent::C2d { .. }) => Flow::Continue,
        }
    }

    async fn on_method(&mut self, name: &str, rid: &str, payload: &Value, now: &Now) -> Flow {
        let reply = self.model.call_method(name, payload, now);
        if let Some(conn) = &self.conn {
            let answer = conn
                .client
                .method_response(rid, reply.status, &reply.payload);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer).await;
        }
        match reply.then {
            AfterMethod::Nothing => Flow::Continue,
            AfterMethod::Report(patch) => {
                self.report(&patch).await;
                Flow::Continue
            }
            AfterMethod::Reboot | AfterMethod::FactoryReset => {
                self.disconnect().await;
                Flow::Reboot
            }
        }
    }

    /// A clean DISCONNECT, as firmware sends before restarting.
    async fn disconnect(&mut self) {
        self.download = None;
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn.client.disconnect()).await;
        }
        self.stats.set_connected(false);
    }

    async fn on_timers(&mut self) -> Flow {
        let now = Instant::now();
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if due(self.telemetry_at) {
            self.telemetry_at = self.model.telemetry_interval().map(|d| self.at(d));
            let message = self.model.sample(&self.now());
            if !self.send_telemetry(&message).await {
                self.model.buffer(message);
            }
        }
        if due(self.link_change_at) {
            self.link_up = !self.link_up;
            if self.link_up {
                self.link_change_at = self.next_link_drop();
                self.connect_at = now;
            } else {
                self.drop_connection();
                self.link_change_at = Some(self.at(secs(self.model.behavior.faults.link_down_s)));
            }
        }
        if due(self.sleep_change_at) {
            if let Some((awake, asleep)) = self.sleep_cycle() {
                self.awake = !self.awake;
                if self.awake {
                    self.sleep_change_at = Some(self.at(awake));
                    self.connect_at = now;
                } else {
                    self.disconnect().await;
                    self.sleep_change_at = Some(self.at(asleep));
                }
            }
        }
        if let Some((at, after)) = self.health_at {
            if at <= now {
                self.health_at = None;
                if self.model.health_check_failed(after, &self.now()) {
                    self.disconnect().await;
                    return Flow::Reboot;
                }
            }
        }
        if due(self.ota_retry_at) {
            self.ota_retry_at = None;
        }
        Flow::Continue
    }
}

async fn next_event(conn: &mut Option<Conn>) -> Option<DeviceEvent> {
    match conn {
        Some(conn) => conn.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_fetched(download: &mut Option<Download>) -> Option<Fetched> {
    match download {
        Some(download) => download.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A desired patch merged the way the hub merges it (core's RFC 7396 merge patch); its
/// `$version` is the patch's version, not a property. The hub only sends objects; anything else
/// changes nothing.
fn merge_desired_patch(desired: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        return;
    };
    if !desired.is_object() {
        *desired = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target) = desired {
        let mut patch = patch.clone();
        patch.remove("$version");
        fleethub_core::twin::patch::merge_patch(target, &patch);
    }
}

#[cfg(test)]
mod tests;
