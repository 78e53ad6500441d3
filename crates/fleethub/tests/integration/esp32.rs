//! The fleet simulator's virtual ESP32 devices against a real hub: MQTT over TLS, twins
//! through REST, firmware over HTTPS with Range requests from the hub's firmware store (signed,
//! per-device URLs) or from a small TLS server in the test.

use crate::harness::TestHub;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fleethub_client::HubClient;
use fleethub_core::firmware::{sha256_hex, DesiredFirmware};
use fleethub_sim::esp32::{
    device_seed, spawn_device, BadFirmware, Behavior, DeviceSpec, Faults, FirmwareFailure,
    SimClock, SimulationStats, StatsSnapshot,
};
use fleethub_sim::{ConnectTemplate, FirmwareKey};
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The key every simulated device is registered with.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Fleet tests wait longer than the harness: a loaded two-core machine runs them.
const FLEET_DEADLINE: Duration = Duration::from_secs(120);

/// Simulated seconds per real second.
const SCALE: f64 = 100.0;

/// Firmware images served over HTTPS, by file name, with the count of resumed requests.
struct FirmwareServer {
    base: String,
    resumed: Arc<AtomicU64>,
    _task: JoinHandle<()>,
}

#[derive(Clone)]
struct Images {
    blobs: Arc<HashMap<String, Vec<u8>>>,
    resumed: Arc<AtomicU64>,
}

/// Serves `blobs` at `https://localhost:{port}/fw/{name}` with the hub's own certificate, so
/// devices trusting the hub's CA trust it too.
async fn firmware_server(hub: &TestHub, blobs: HashMap<String, Vec<u8>>) -> FirmwareServer {
    let tls_dir = hub.running.ca_file.as_ref().unwrap().parent().unwrap();
    let paths = fleethub_tls::CertificatePaths {
        ca: None,
        server_cert: tls_dir.join("server.pem"),
        server_key: tls_dir.join("server.key"),
        // The hub's own ticket keys stay the hub's: this server keeps its keys in memory.
        ticket_keys_dir: None,
    };
    let tls = tokio_rustls::TlsAcceptor::from(fleethub_tls::https_server_config(&paths).unwrap());
    let resumed = Arc::new(AtomicU64::new(0));
    let images = Images {
        blobs: Arc::new(blobs),
        resumed: resumed.clone(),
    };
    let router = axum::Router::new()
        .route("/fw/{name}", axum::routing::get(serve_image))
        .with_state(images);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, router) = (tls.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    FirmwareServer {
        base: format!("https://localhost:{port}/fw"),
        resumed,
        _task: task,
    }
}

async fn serve_image(
    State(images): State<Images>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(blob) = images.blobs.get(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = blob.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            let start: usize = a.parse().ok()?;
            let end: usize = if b.is_empty() {
                len - 1
            } else {
                b.parse().ok()?
            };
            (start <= end && end < len).then_some((start, end))
        });
    match range {
        None => (StatusCode::OK, blob.clone()).into_response(),
        Some((start, end)) => {
            // A fresh download asks in 64 KiB chunks, so only a resume starts off that grid.
            if start % (64 * 1024) != 0 {
                images.resumed.fetch_add(1, Ordering::Relaxed);
            }
            let content_range = format!("bytes {start}-{end}/{len}");
            (
                StatusCode::PARTIAL_CONTENT,
                [(header::CONTENT_RANGE, content_range)],
                blob[start..=end].to_vec(),
            )
                .into_response()
        }
    }
}

/// A deterministic pseudo-random image.
pub(crate) fn image(len: usize, salt: u64) -> Vec<u8> {
    let mut x = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A running simulated fleet.
pub(crate) struct Fleet {
    pub(crate) ids: Vec<String>,
    pub(crate) stats: Arc<SimulationStats>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("device stops")
                .expect("device task does not panic");
        }
    }
}

/// Registers `count` devices `{prefix}-{n}` in bulk; returns their ids.
pub(crate) async fn register(hub: &TestHub, prefix: &str, count: usize) -> Vec<String> {
    register_through(&hub.client, prefix, count).await
}

/// [`register`] through any hub's REST client (a hub process, say).
pub(crate) async fn register_through(
    client: &HubClient,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for chunk in ids.chunks(100) {
        let body: Vec<Value> = chunk
            .iter()
            .map(|id| {
                json!({"id": id, "importMode": "create", "authentication":
                {"type": "sas", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}})
            })
            .collect();
        let body = json!(body);
        let r = client
            .call(Method::POST, "/devices", Some(&body))
            .await
            .expect("request sent");
        assert!(
            r.status.is_success(),
            "bulk registration: {} {}",
            r.status,
            r.body
        );
    }
    ids
}

/// Registers `groups` (prefix, count, behavior) and starts every device.
async fn start_fleet(hub: &TestHub, groups: &[(&str, usize, Behavior)]) -> Fleet {
    let mut registered = Vec::new();
    for (prefix, count, behavior) in groups {
        registered.push((
            register(hub, prefix, *count).await,
            *prefix,
            behavior.clone(),
        ));
    }
    spawn_fleet(hub, registered)
}

/// Starts registered devices: (ids, group, behavior) per group.
pub(crate) fn spawn_fleet(hub: &TestHub, groups: Vec<(Vec<String>, &str, Behavior)>) -> Fleet {
    spawn_pinned_fleet(hub, groups, None)
}

/// [`spawn_fleet`] with devices that pin the hub's firmware key.
pub(crate) fn spawn_pinned_fleet(
    hub: &TestHub,
    groups: Vec<(Vec<String>, &str, Behavior)>,
    firmware_key: Option<Arc<FirmwareKey>>,
) -> Fleet {
    let port = hub.running.mqtt_addr.port();
    spawn_fleet_to(port, hub.tls.clone(), groups, firmware_key)
}

/// Starts registered devices against the hub whose MQTT port is `mqtt_port` (a hub process a
/// test may kill and start again on the same port: the devices reconnect to it).
pub(crate) fn spawn_fleet_to(
    mqtt_port: u16,
    tls: Arc<rustls::ClientConfig>,
    groups: Vec<(Vec<String>, &str, Behavior)>,
    firmware_key: Option<Arc<FirmwareKey>>,
) -> Fleet {
    let connect = Arc::new(ConnectTemplate {
        host: "127.0.0.1".into(),
        port: mqtt_port,
        hub_host_name: "localhost".into(),
        tls: Some(tls),
        sas_lifetime_secs: None,
    });
    let clock = SimClock::new(SCALE);
    let stats = Arc::new(SimulationStats::default());
    let (stop, stop_rx) = watch::channel(false);
    let (mut all, mut tasks) = (Vec::new(), Vec::new());
    for (ids, group, behavior) in groups {
        let behavior = Arc::new(behavior);
        for id in ids {
            let index = all.len();
            let spec = DeviceSpec {
                device_id: id.clone(),
                key: KEY.into(),
                group: group.to_string(),
                factory_version: "1.0.0".into(),
                behavior: behavior.clone(),
                seed: device_seed(2026, index),
                index,
                firmware_key: firmware_key.clone(),
            };
            let task = spawn_device(
                spec,
                connect.clone(),
                clock.clone(),
                stats.clone(),
                stop_rx.clone(),
            );
            tasks.push(task);
            all.push(id);
        }
    }
    Fleet {
        ids: all,
        stats,
        stop,
        tasks,
    }
}

/// Polls `check` until it returns Some, failing with `what` and the last state after
/// [`FLEET_DEADLINE`].
pub(crate) async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + FLEET_DEADLINE;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(state) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last: {state}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn reported_firmware(client: &HubClient, id: &str) -> Value {
    let twin = client.twin(id).await.expect("request sent");
    twin.unwrap_or_default()["properties"]["reported"]["firmware"].clone()
}

/// Waits until every device in `ids` reports a firmware section `accept` takes.
pub(crate) async fn wait_for_reports(
    hub: &TestHub,
    ids: &[String],
    what: &str,
    accept: impl Fn(&Value) -> bool,
) {
    wait_for_reports_through(&hub.client, ids, what, accept).await
}

/// [`wait_for_reports`] through any hub's REST client.
pub(crate) async fn wait_for_reports_through(
    client: &HubClient,
    ids: &[String],
    what: &str,
    accept: impl Fn(&Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + FLEET_DEADLINE;
    let mut pending = ids.to_vec();
    loop {
        let mut still = Vec::new();
        let mut last = Value::Null;
        for id in pending {
            let fw = reported_firmware(client, &id).await;
            if !accept(&fw) {
                last = json!({"device": id, "firmware": fw});
                still.push(id);
            }
        }
        if still.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {} devices left, e.g. {last}",
            still.len()
        );
        pending = still;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) fn snapshot_text(s: &StatsSnapshot) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn desired_firmware(version: &str, url: &str, blob: &[u8]) -> Value {
    DesiredFirmware {
        version: version.into(),
        url: url.into(),
        sha256: sha256_hex(blob),
        size: blob.len() as u64,
        signature: None,
        models: Vec::new(),
    }
    .twin_patch()
}

async fn set_desired(hub: &TestHub, ids: &[String], patch: &Value) {
    for id in ids {
        let r = hub
            .call(Method::PATCH, &format!("/twins/{id}"), Some(patch.clone()))
            .await;
        assert!(r.status.is_success(), "{id}: {} {}", r.status, r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_connect_over_tls_report_and_survive_link_flaps() {
    let hub = TestHub::start().await;
    let rss_before = resident_kib();
    let behavior = Behavior {
        telemetry_interval_s: 120.0,
        telemetry_buffer: 20,
        boot_delay_s: 1.0,
        faults: Faults {
            link_drop_mean_s: Some(600.0),
            link_down_s: 5.0,
            link_drops_until_s: Some(600.0),
            duplicate_rate: 0.05,
            ..Faults::default()
        },
    };
    let started = tokio::time::Instant::now();
    let fleet = start_fleet(&hub, &[("flap", 1000, behavior)]).await;
    let stats = fleet.stats.clone();
    let settled = wait_for("1,000 devices connected again after the link storm", || {
        let s = stats.snapshot();
        async move {
            if s.connected == 1000 && s.reconnects >= 300 && s.telemetry_sent > 0 {
                Ok(s)
            } else {
                Err(snapshot_text(&s))
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    let rss_after = resident_kib();
    eprintln!(
        "1,000 TLS devices (hub in the same process): settled after {elapsed:?} with {} reconnects; \
         RSS grew {} KiB ({} KiB per device, hub side included)",
        settled.reconnects,
        rss_after.saturating_sub(rss_before),
        rss_after.saturating_sub(rss_before) / 1000
    );
    assert_eq!(settled.versions, [("1.0.0".to_string(), 1000)].into());
    assert_eq!(settled.group_versions["flap"]["1.0.0"], 1000);
    wait_for_reports(
        &hub,
        &fleet.ids,
        "every twin to report firmware 1.0.0",
        |fw| fw["current_version"] == "1.0.0" && fw["status"] == "idle",
    )
    .await;
    let twin = hub.call(Method::GET, "/twins/flap-7", None).await;
    assert_eq!(twin.body["connectionState"], "Connected");
    let stats = fleet.stats.clone();
    fleet.stop().await;
    assert_eq!(stats.snapshot().connected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_through_desired_state_survives_power_loss_on_every_step() {
    let hub = TestHub::start().await;
    let blob = image(200 * 1024, 1);
    let server = firmware_server(
        &hub,
        HashMap::from([("2.0.0.bin".to_string(), blob.clone())]),
    )
    .await;
    let behavior = Behavior {
        telemetry_interval_s: 60.0,
        telemetry_buffer: 10,
        boot_delay_s: 2.0,
        faults: Faults {
            power_loss: 0.3,
            bandwidth_bytes_per_s: Some(32 * 1024),
            link_drop_mean_s: Some(300.0),
            link_down_s: 3.0,
            ..Faults::default()
        },
    };
    // Half the fleet finds the update in its twin when it first connects, half gets a patch.
    let early = register(&hub, "ota-early", 15).await;
    let late = register(&hub, "ota-late", 15).await;
    let patch = desired_firmware("2.0.0", &format!("{}/2.0.0.bin", server.base), &blob);
    set_desired(&hub, &early, &patch).await;
    let fleet = spawn_fleet(
        &hub,
        vec![
            (early, "early", behavior.clone()),
            (late.clone(), "late", behavior),
        ],
    );
    let stats = fleet.stats.clone();
    wait_for("the fleet to connect", || {
        let s = stats.snapshot();
        async move {
            if s.reporting >= 15 {
                Ok(())
            } else {
                Err(snapshot_text(&s))
            }
        }
    })
    .await;
    set_desired(&hub, &late, &patch).await;
    wait_for_reports(
        &hub,
        &fleet.ids,
        "every device to report 2.0.0 success",
        |fw| {
            fw["current_version"] == "2.0.0"
                && fw["status"] == "success"
                && fw["progress"] == 100
                && fw["error"].is_null()
                && fw["last_update_time"].is_string()
        },
    )
    .await;
    let s = fleet.stats.snapshot();
    assert!(s.power_losses > 0, "{}", snapshot_text(&s));
    assert!(
        server.resumed.load(Ordering::Relaxed) > 0,
        "no download resumed with a Range request"
    );
    wait_for("the counters to settle", || {
        let s = stats.snapshot();
        async move {
            if s.versions == [("2.0.0".to_string(), 30)].into() && s.updating == 0 && s.failed == 0
            {
                Ok(())
            } else {
                Err(snapshot_text(&s))
            }
        }
    })
    .await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_firmware_of_each_kind_is_rolled_back_and_reported() {
    let hub = TestHub::start().await;
    let blob = image(64 * 1024, 2);
    let server = firmware_server(
        &hub,
        HashMap::from([("2.0.0-bad.bin".to_string(), blob.clone())]),
    )
    .await;
    let bad = |failure| Behavior {
        telemetry_interval_s: 60.0,
        boot_delay_s: 2.0,
        faults: Faults {
            bad_firmware: vec![BadFirmware {
                version: "2.0.0-bad".into(),
                failure,
                failed_boots: 2,
                after_s: 30.0,
            }],
            ..Faults::default()
        },
        ..Behavior::default()
    };
    let fleet = start_fleet(
        &hub,
        &[
            ("wifi", 3, bad(FirmwareFailure::WifiBreaks)),
            ("loop", 3, bad(FirmwareFailure::BootLoop)),
            ("health", 3, bad(FirmwareFailure::HealthCheckFails)),
        ],
    )
    .await;
    let patch = desired_firmware(
        "2.0.0-bad",
        &format!("{}/2.0.0-bad.bin", server.base),
        &blob,
    );
    set_desired(&hub, &fleet.ids, &patch).await;
    wait_for_reports(&hub, &fleet.ids, "every device to roll back", |fw| {
        fw["current_version"] == "1.0.0"
            && fw["status"] == "rolled_back"
            && fw["error"]
                .as_str()
                .is_some_and(|e| e.contains("2.0.0-bad"))
    })
    .await;
    let stats = fleet.stats.clone();
    wait_for("the counters to show nine rollbacks", || {
        let s = stats.snapshot();
        async move {
            if s.rolled_back == 9
                && s.versions == [("1.0.0".to_string(), 9)].into()
                && s.connected == 9
            {
                Ok(())
            } else {
                Err(snapshot_text(&s))
            }
        }
    })
    .await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_methods_answer_and_reboot_reconnects() {
    let hub = TestHub::start().await;
    let fleet = start_fleet(&hub, &[("m", 1, Behavior::default())]).await;
    let stats = fleet.stats.clone();
    wait_for("the device to report", || {
        let s = stats.snapshot();
        async move {
            if s.reporting == 1 {
                Ok(())
            } else {
                Err(snapshot_text(&s))
            }
        }
    })
    .await;
    let call = |name: &str, payload: Value| {
        let body = json!({"methodName": name, "payload": payload, "responseTimeoutInSeconds": 30});
        hub.call(Method::POST, "/twins/m-0/methods", Some(body))
    };
    let diag = call("diagnostics", Value::Null).await;
    assert_eq!(diag.body["status"], 200, "{}", diag.body);
    assert_eq!(diag.body["payload"]["slots"][0]["version"], "1.0.0");
    let unknown = call("self_destruct", Value::Null).await;
    assert_eq!(unknown.body["status"], 404, "{}", unknown.body);
    assert!(unknown.body["payload"]["error"]
        .as_str()
        .unwrap()
        .contains("diagnostics"));
    let set = call("set_property", json!({"name": "interval", "value": 30})).await;
    assert_eq!(set.body["status"], 200, "{}", set.body);
    wait_for("the new setting in reported properties", || async {
        let twin = hub.call(Method::GET, "/twins/m-0", None).await;
        let reported = &twin.body["properties"]["reported"];
        if reported["settings"]["interval"] == 30 {
            Ok(())
        } else {
            Err(reported.to_string())
        }
    })
    .await;
    let reboot = call("reboot", Value::Null).await;
    assert_eq!(reboot.body["status"], 200, "{}", reboot.body);
    wait_for("the device to come back after its reboot", || {
        let s = stats.snapshot();
        async move {
            if s.reconnects >= 1 && s.connected == 1 {
                Ok(())
            } else {
                Err(snapshot_text(&s))
            }
        }
    })
    .await;
    let get = call("get_property", json!({"name": "interval"})).await;
    assert_eq!(
        get.body["payload"]["value"], 30,
        "settings live in flash: {}",
        get.body
    );
    fleet.stop().await;
}

/// The hub's published firmware key, as firmware pins it.
async fn pinned_key(hub: &TestHub) -> Arc<FirmwareKey> {
    let key = hub.call(Method::GET, "/v1/firmware/key", None).await;
    let pem = key.body["publicKeyPem"].as_str().expect("a published key");
    Arc::new(FirmwareKey::from_pem(pem).unwrap())
}

/// Uploads `blob` as `version` for the simulated boards; the stored artifact.
pub(crate) async fn store(hub: &TestHub, version: &str, blob: &[u8]) -> Value {
    let query = format!("version={version}&model=esp32");
    let (status, artifact) = crate::firmware::upload(hub, &query, blob.to_vec()).await;
    assert!(status.is_success(), "upload {version}: {status} {artifact}");
    artifact
}

/// The `desired.firmware` patch the hub mints for `device`.
async fn minted_patch(hub: &TestHub, sha256: &str, device: &str) -> Value {
    let minted = crate::firmware::mint(hub, sha256, device, "").await;
    json!({"properties": {"desired": {"firmware": minted["desiredFirmware"]}}})
}

/// `(bytes, requests)` the hub's store served `device` for artifact `sha256`.
async fn served_to(hub: &TestHub, sha256: &str, device: &str) -> (u64, u64) {
    let shown = hub
        .call(Method::GET, &format!("/v1/firmware/{sha256}"), None)
        .await;
    shown.body["downloads"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["deviceId"] == device)
        .map_or((0, 0), |d| {
            (
                d["bytesServed"].as_u64().unwrap_or(0),
                d["requests"].as_u64().unwrap_or(0),
            )
        })
}

async fn diagnostics(hub: &TestHub, device: &str) -> Value {
    let body = json!({"methodName": "diagnostics", "payload": {}, "responseTimeoutInSeconds": 30});
    let r = hub
        .call(
            Method::POST,
            &format!("/twins/{device}/methods"),
            Some(body),
        )
        .await;
    assert_eq!(r.body["status"], 200, "{}", r.body);
    r.body["payload"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_updates_from_the_hub_store_resuming_by_range_after_power_is_cut() {
    let hub = TestHub::start().await;
    let blob = image(256 * 1024, 3);
    let size = blob.len() as u64;
    let sha = store(&hub, "2.0.0", &blob).await["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let cut = 150_000;
    let behavior = Behavior {
        faults: Faults {
            power_loss_at_byte: Some(cut),
            ..Faults::default()
        },
        ..Behavior::default()
    };
    let ids = register(&hub, "store", 1).await;
    set_desired(&hub, &ids, &minted_patch(&hub, &sha, &ids[0]).await).await;
    let fleet = spawn_pinned_fleet(
        &hub,
        vec![(ids.clone(), "store", behavior)],
        Some(pinned_key(&hub).await),
    );
    wait_for_reports(&hub, &ids, "the device to run 2.0.0 from the store", |fw| {
        fw["current_version"] == "2.0.0" && fw["status"] == "success"
    })
    .await;
    assert_eq!(fleet.stats.snapshot().power_losses, 1);
    // Resumed, not restarted: a second download from byte 0 would have been sent at least
    // `cut` bytes again on top of the whole image.
    let (bytes, requests) = served_to(&hub, &sha, &ids[0]).await;
    assert!(
        bytes >= size && bytes < size + cut,
        "the hub served {bytes} bytes of a {size}-byte image cut at {cut}"
    );
    // Two probes, the chunks up to the cut, and the resume.
    assert!(requests >= 6, "{requests} requests");
    let diag = diagnostics(&hub, &ids[0]).await;
    assert_eq!(diag["running_slot"], "B", "{diag}");
    assert_eq!(diag["slots"][1]["state"], "valid", "{diag}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_refuses_an_image_whose_signature_does_not_verify() {
    let hub = TestHub::start().await;
    let good = image(40 * 1024, 4);
    let other = image(40 * 1024, 5);
    let sha = store(&hub, "2.0.0", &good).await["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    // A signature the hub really made, but over another artifact's manifest.
    let foreign = store(&hub, "2.0.1", &other).await["signature"].clone();
    let ids = register(&hub, "signed", 1).await;
    let device = ids[0].clone();
    let fleet = spawn_pinned_fleet(
        &hub,
        vec![(ids.clone(), "signed", Behavior::default())],
        Some(pinned_key(&hub).await),
    );
    wait_for_reports(&hub, &ids, "the device to report", |fw| {
        fw["status"] == "idle"
    })
    .await;
    let mut forged = minted_patch(&hub, &sha, &device).await;
    forged["properties"]["desired"]["firmware"]["signature"] = foreign;
    set_desired(&hub, &ids, &forged).await;
    wait_for_reports(&hub, &ids, "the device to refuse the signature", |fw| {
        fw["status"] == "failed"
            && fw["current_version"] == "1.0.0"
            && fw["error"]
                .as_str()
                .is_some_and(|e| e.contains("2.0.0") && e.contains("does not verify"))
    })
    .await;
    // Refused before anything was fetched or erased.
    assert_eq!(served_to(&hub, &sha, &device).await, (0, 0));
    let diag = diagnostics(&hub, &device).await;
    assert_eq!(diag["slots"][0]["version"], "1.0.0", "{diag}");
    assert_eq!(diag["slots"][0]["state"], "valid", "{diag}");
    assert_eq!(diag["slots"][1]["state"], "empty", "{diag}");
    assert!(diag["download"].is_null(), "{diag}");
    // The operator's fix, the URL the hub minted with its own signature, goes through.
    set_desired(&hub, &ids, &minted_patch(&hub, &sha, &device).await).await;
    wait_for_reports(&hub, &ids, "the device to run the signed image", |fw| {
        fw["current_version"] == "2.0.0" && fw["status"] == "success"
    })
    .await;
    fleet.stop().await;
}
