//! HTTPS connection limits. Idle and slow HTTPS clients once held the hub's file descriptors
//! until no device could connect: now they are closed after a timeout, no address (and no crowd
//! of addresses) holds more than HTTPS's share, and devices keep connecting through an attack.

use crate::harness::{eventually, spawn_hub_with, TestHub, DEADLINE};
use bytes::{Bytes, BytesMut};
use fleethub::fd_budget::FdBudget;
use fleethub_hub::metrics::HttpsMetrics;
use fleethub_mqtt::codec::{self, ConnAck, Packet};
use fleethub_sim::{ConnectOptions, DeviceAuth, DeviceClient};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Tls = TlsStream<TcpStream>;

/// 127.0.0.n: each test's connections come from addresses of their own, so they count as their
/// own source (Linux answers the whole of 127.0.0.0/8 on loopback).
fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TLS session with the hub's HTTPS port from `source`, or what ended the handshake.
async fn tls_from(
    tls: &Arc<rustls::ClientConfig>,
    source: IpAddr,
    https: SocketAddr,
) -> io::Result<Tls> {
    tls_within(DEADLINE, tls, source, https).await
}

/// [`tls_from`], giving up after `patience`.
async fn tls_within(
    patience: Duration,
    tls: &Arc<rustls::ClientConfig>,
    source: IpAddr,
    https: SocketAddr,
) -> io::Result<Tls> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let handshake = async {
        let tcp = socket.connect(https).await?;
        TlsConnector::from(tls.clone()).connect(name, tcp).await
    };
    tokio::time::timeout(patience, handshake)
        .await
        .map_err(|_| io::Error::other("TLS handshake timed out"))?
}

/// Reads (and discards) until the hub closes the stream; how long that took.
async fn closed_after(stream: &mut (impl AsyncRead + Unpin)) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Err(_) => panic!("the hub kept the connection open for {DEADLINE:?}"),
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether the hub still holds `stream` open: nothing to read, and no end of stream.
async fn still_open(stream: &mut Tls) -> bool {
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf))
        .await
        .is_err()
}

fn count(hub: &TestHub, counter: impl Fn(&HttpsMetrics) -> &AtomicU64) -> u64 {
    counter(&hub.running.hub.metrics().https).load(Ordering::Relaxed)
}

/// A hub whose HTTPS limits the test sets.
async fn hub_with(configure: impl FnOnce(&mut fleethub::config::HttpsLimitArgs)) -> TestHub {
    TestHub::start_with(|cfg| configure(&mut cfg.https_limits)).await
}

#[tokio::test]
async fn a_tls_connection_that_never_sends_a_request_is_closed() {
    let header_timeout = Duration::from_millis(400);
    let hub = hub_with(|limits| limits.header_timeout = header_timeout).await;
    let mut silent = tls_from(&hub.tls, loopback(11), hub.running.https_addr)
        .await
        .unwrap();
    let lived = closed_after(&mut silent).await;
    assert!(lived >= header_timeout, "closed after {lived:?}");
    assert_eq!(count(&hub, |m| &m.idle_timeouts), 1);
    assert_eq!(count(&hub, |m| &m.header_timeouts), 0);
    assert_eq!(count(&hub, |m| &m.open), 0, "its place is given back");
}

/// hyper times out an HTTP/1 keep-alive connection waiting for its next request the same way as
/// a slowloris; the hub tells them apart by whether any of a request arrived.
#[tokio::test]
async fn an_http1_keep_alive_connection_is_closed_once_idle_and_counted_as_idle() {
    let header_timeout = Duration::from_millis(400);
    let hub = hub_with(|limits| limits.header_timeout = header_timeout).await;
    let mut conn = tls_from(&hub.tls, loopback(12), hub.running.https_addr)
        .await
        .unwrap();
    let start = Instant::now();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"{\"status\":\"ok\"}") {
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).await.unwrap();
        assert_ne!(n, 0, "closed before the response was complete");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200"));
    closed_after(&mut conn).await;
    assert!(start.elapsed() >= header_timeout, "{:?}", start.elapsed());
    assert_eq!(count(&hub, |m| &m.idle_timeouts), 1);
    assert_eq!(count(&hub, |m| &m.header_timeouts), 0);
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let idle_timeout = Duration::from_millis(400);
    let hub = hub_with(|limits| limits.idle_timeout = idle_timeout).await;
    let mut h2_config = (*hub.tls).clone();
    h2_config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tls_from(&Arc::new(h2_config), loopback(13), hub.running.https_addr)
        .await
        .unwrap();
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let start = Instant::now();
    let request = hyper::Request::get("https://localhost/healthz")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    tokio::time::timeout(DEADLINE, connection)
        .await
        .expect("the hub closes an idle HTTP/2 connection")
        .unwrap()
        .expect("with a GOAWAY, not an error");
    assert!(start.elapsed() >= idle_timeout, "{:?}", start.elapsed());
    assert_eq!(count(&hub, |m| &m.idle_timeouts), 1);
}

#[tokio::test]
async fn a_slowloris_sending_a_header_byte_at_a_time_is_closed_after_the_header_timeout() {
    let header_timeout = Duration::from_secs(1);
    let hub = hub_with(|limits| {
        limits.header_timeout = header_timeout;
        limits.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let slow = tls_from(&hub.tls, loopback(14), hub.running.https_addr)
        .await
        .unwrap();
    let start = Instant::now();
    let (mut reader, mut writer) = tokio::io::split(slow);
    let drip = tokio::spawn(async move {
        let head = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    closed_after(&mut reader).await;
    drip.abort();
    let lived = start.elapsed();
    assert!(lived >= header_timeout, "closed after {lived:?}");
    assert_eq!(count(&hub, |m| &m.header_timeouts), 1);
    assert_eq!(count(&hub, |m| &m.idle_timeouts), 0);
}

#[tokio::test]
async fn the_https_connection_past_a_cap_is_closed_before_tls() {
    let hub = hub_with(|limits| {
        limits.per_address = 3;
        limits.max_connections = Some(5);
    })
    .await;
    let (tls, https) = (&hub.tls, hub.running.https_addr);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            tls_from(tls, loopback(15), https)
                .await
                .expect("under the cap"),
        );
    }
    let fourth = tls_from(tls, loopback(15), https).await;
    assert!(fourth.is_err(), "a 4th connection from one address got TLS");
    assert_eq!(count(&hub, |m| &m.refused_address_cap), 1);

    for other in [16, 17] {
        let conn = tls_from(tls, loopback(other), https).await;
        held.push(conn.expect("another address has its own share"));
    }
    let sixth = tls_from(tls, loopback(18), https).await;
    assert!(
        sixth.is_err(),
        "a 6th connection past --https-max-connections"
    );
    assert_eq!(count(&hub, |m| &m.refused_connection_cap), 1);
    assert_eq!(count(&hub, |m| &m.open), 5);

    held.swap_remove(0);
    eventually("a closed connection's place to be given back", || async {
        tls_from(tls, loopback(15), https).await.ok()
    })
    .await;
}

/// MQTT over WebSocket arrives as HTTPS and is upgraded: it is a device connection from then on,
/// never closed as an idle HTTP connection and not counted against its address's HTTPS share.
#[tokio::test]
async fn a_websocket_device_outlives_the_idle_timeout_and_gives_back_its_https_place() {
    let timeout = Duration::from_millis(300);
    let hub = hub_with(|limits| {
        limits.header_timeout = timeout;
        limits.idle_timeout = timeout;
        limits.per_address = 1;
    })
    .await;
    let key = hub.create_device("ws-idle").await;
    let (source, https) = (loopback(19), hub.running.https_addr);
    let tls = tls_from(&hub.tls, source, https).await.unwrap();
    let mut request = format!("wss://localhost:{}/$iothub/websocket", https.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    let connect = crate::harness::sas_connect_packet("ws-idle", &key);
    let mut received = BytesMut::new();
    let mut exchange = async |packet: Packet| {
        let mut out = BytesMut::new();
        codec::encode(&packet, &mut out);
        socket.send(Message::Binary(out.freeze())).await.unwrap();
        loop {
            if let Some(packet) = codec::decode(&mut received, 1 << 20).unwrap() {
                return packet;
            }
            let next = tokio::time::timeout(DEADLINE, socket.next()).await;
            match next.expect("an answer").expect("the socket open").unwrap() {
                Message::Binary(bytes) => received.extend_from_slice(&bytes),
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    };
    let connack = exchange(connect).await;
    assert_eq!(
        connack,
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: 0
        })
    );
    // Several idle timeouts with no HTTP request in flight: an HTTP connection would be gone.
    tokio::time::sleep(timeout * 4).await;
    assert_eq!(exchange(Packet::PingReq).await, Packet::PingResp);
    // The REST connection that registered the device was closed as idle meanwhile.
    assert_eq!(count(&hub, |m| &m.open), 0);
    tls_from(&hub.tls, source, https)
        .await
        .expect("the address's one HTTPS place is free again");
}

/// Past the header, a slowloris can drip the body instead: the request it starts must not stay in
/// flight forever. A body that sends nothing for the idle timeout fails, and the request ends.
#[tokio::test]
async fn a_request_body_that_stalls_ends_its_request_after_the_idle_timeout() {
    let idle_timeout = Duration::from_millis(400);
    let hub = hub_with(|limits| limits.idle_timeout = idle_timeout).await;
    let mut conn = tls_from(&hub.tls, loopback(20), hub.running.https_addr)
        .await
        .unwrap();
    let head = format!(
        "PUT /devices/stalled HTTP/1.1\r\nhost: localhost\r\nauthorization: {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"deviceId\"",
        hub.token("iothubowner")
    );
    let start = Instant::now();
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(DEADLINE, conn.read(&mut buf)).await {
            Err(_) => panic!("the stalled request was still in flight after {DEADLINE:?}"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
        }
    }
    assert!(start.elapsed() >= idle_timeout, "{:?}", start.elapsed());
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert_eq!(count(&hub, |m| &m.body_timeouts), 1);
}

/// A request in flight is never idle, however long it takes: a direct method waiting on a slow
/// device, and a live telemetry stream that sends nothing for a while, outlast both timeouts.
#[tokio::test]
async fn a_slow_direct_method_and_a_quiet_live_stream_outlast_the_idle_timeouts() {
    let timeout = Duration::from_millis(300);
    let hub = hub_with(|limits| {
        limits.header_timeout = timeout;
        limits.idle_timeout = timeout;
    })
    .await;
    let (device, mut events, _) = hub.online_device("slow-1").await;
    let stream = hub
        .http
        .get(format!("{}/v1/telemetry/stream?deviceId=slow-1", hub.base))
        .header("Authorization", hub.token("service"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut stream = stream.bytes_stream();
    let call = tokio::spawn({
        let request = hub
            .http
            .post(format!("{}/twins/slow-1/methods", hub.base))
            .header("Authorization", hub.token("service"))
            .json(&serde_json::json!({"methodName": "slow", "responseTimeoutInSeconds": 10}));
        async move { request.send().await.unwrap() }
    });
    let rid = crate::harness::next_event(&mut events, "the method request", |e| match e {
        fleethub_sim::DeviceEvent::MethodRequest { rid, .. } => Some(rid),
        _ => None,
    })
    .await;
    // The device takes several idle timeouts to answer.
    tokio::time::sleep(timeout * 4).await;
    device
        .method_response(&rid, 200, &serde_json::json!({"done": true}))
        .await
        .unwrap();
    let answer = call.await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    device
        .send_telemetry("after-quiet", &[], Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("after-quiet") {
        let chunk = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("telemetry on the live stream")
            .expect("the live stream still open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Connections an attacker holds open: silent ones, and slowloris ones dripping a request head.
#[derive(Default)]
struct Attack {
    silent: Vec<Tls>,
    dripping: Vec<JoinHandle<()>>,
}

impl Attack {
    /// Opens `per_source` connections from each source; keeps those the hub lets through TLS.
    async fn open(
        &mut self,
        tls: &Arc<rustls::ClientConfig>,
        sources: &[IpAddr],
        per_source: usize,
        https: SocketAddr,
    ) {
        let attempts = sources
            .iter()
            .flat_map(|source| std::iter::repeat_n(*source, per_source));
        let mut sessions = futures_util::stream::iter(attempts)
            // A hub out of descriptors accepts nothing: each attempt would wait the whole deadline.
            .map(|source| tls_within(Duration::from_secs(2), tls, source, https))
            .buffer_unordered(100);
        while let Some(session) = sessions.next().await {
            let Ok(mut session) = session else { continue };
            if self.held().is_multiple_of(2) {
                self.silent.push(session);
                continue;
            }
            self.dripping.push(tokio::spawn(async move {
                let head = b"POST /devices HTTP/1.1\r\nhost: localhost\r\nx-slow: ";
                for byte in head.iter().chain(std::iter::repeat(&b'a')) {
                    let sent = session.write_all(&[*byte]).await;
                    if sent.is_err() || session.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }));
        }
    }

    fn held(&self) -> usize {
        self.silent.len() + self.dripping.len()
    }

    /// Whether the hub still holds every connection it let through.
    async fn all_open(&mut self) -> bool {
        for conn in &mut self.silent {
            if !still_open(conn).await {
                return false;
            }
        }
        self.dripping.iter().all(|drip| !drip.is_finished())
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        for drip in &self.dripping {
            drip.abort();
        }
    }
}

/// Connects a device over MQTT/TLS and has one telemetry message acknowledged (so stored).
async fn device_publishes(ready: &Value, tls: &Arc<rustls::ClientConfig>, id: &str, key: &str) {
    let opts = ConnectOptions {
        host: "127.0.0.1".into(),
        port: ready["mqttPort"].as_u64().unwrap() as u16,
        hub_host_name: "localhost".into(),
        device_id: id.into(),
        auth: DeviceAuth::SasKey(key.into()),
        tls: Some(tls.clone()),
        clean_session: true,
        keep_alive_secs: 60,
        local_addr: None,
        sas_lifetime_secs: fleethub_sim::TOKEN_LIFETIME_SECS,
    };
    let (device, _events) = tokio::time::timeout(DEADLINE, DeviceClient::connect(opts))
        .await
        .unwrap_or_else(|_| panic!("{id} could not connect within {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{id} could not connect: {e}"));
    let sent = device.send_telemetry("during-attack", &[], Bytes::from_static(b"{\"ok\":1}"));
    tokio::time::timeout(DEADLINE, sent)
        .await
        .expect("telemetry acknowledged in time")
        .expect("telemetry acknowledged");
}

fn closed_total(metrics: &str, reason: &str) -> u64 {
    let key = format!("fleethub_https_connections_closed_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&key))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key}in /metrics:\n{metrics}"))
}

/// About 1,000 idle HTTPS connections with no credentials once used up the hub's file
/// descriptors and stopped every device from connecting for as long as they stayed. Here 1,500
/// from one address, against a hub whose open-file limit is 1,024 (raised from a soft 512), are
/// held silent or dripping a request head while a device connects and publishes and a fresh REST
/// connection is served; then a crowd of addresses fills HTTPS's whole share of descriptors and
/// another device still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_https_connections_no_longer_stop_devices_from_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let limits = [
        "--https-port",
        "0",
        "--mqtt-port",
        "0",
        "--https-header-timeout-seconds",
        "300",
        "--https-idle-timeout-seconds",
        "300",
    ];
    let hub = spawn_hub_with(dir.path(), &limits, Some((512, 1024)));
    let budget = FdBudget::plan(1024, Some(512), None);
    let log = std::fs::read_to_string(dir.path().join("hub.log")).unwrap();
    assert!(
        log.contains(&budget.to_string()),
        "the budget is logged: {log}"
    );
    let per_address = 64;
    assert!(budget.https_connections > per_address as u64);
    let ready = &hub.ready;
    let https = SocketAddr::new(loopback(1), ready["httpsPort"].as_u64().unwrap() as u16);
    let ca = std::fs::read(ready["caFile"].as_str().unwrap()).unwrap();
    let tls = fleethub_sim::tls_config_trusting(&ca).unwrap();
    let rest = hub.client();
    let mut keys = Vec::new();
    for id in ["through-1", "through-2"] {
        let body = serde_json::json!({ "deviceId": id });
        let device = rest.put_device(id, &body).await.unwrap();
        let key = &device["authentication"]["symmetricKey"]["primaryKey"];
        keys.push(key.as_str().unwrap().to_string());
    }
    drop(rest);

    let mut attack = Attack::default();
    attack.open(&tls, &[loopback(2)], 1_500, https).await;
    assert_eq!(
        attack.held(),
        per_address,
        "the per-address cap let through"
    );
    let rest = hub.client();
    let twin = rest.twin("through-1").await;
    assert!(
        matches!(twin, Ok(Some(_))),
        "a fresh REST connection: {twin:?}"
    );
    drop(rest);
    device_publishes(ready, &tls, "through-1", &keys[0]).await;

    let crowd: Vec<IpAddr> = (3..=12).map(loopback).collect();
    attack.open(&tls, &crowd, 30, https).await;
    // The REST connection above may not be closed yet: then it holds one place.
    let held = attack.held() as u64;
    assert!(
        (budget.https_connections - 1..=budget.https_connections).contains(&held),
        "{held} attack connections held, the HTTPS share is {}",
        budget.https_connections
    );
    device_publishes(ready, &tls, "through-2", &keys[1]).await;
    assert!(
        attack.all_open().await,
        "the hub closed attack connections early: the attack was not held throughout"
    );

    drop(attack);
    let rest = hub.client();
    let metrics = eventually("HTTPS to serve again", || async {
        rest.metrics().await.ok()
    })
    .await;
    let refused_address = closed_total(&metrics, "address_cap");
    assert!(refused_address >= 1_500 - 64, "{refused_address}");
    let refused_total = closed_total(&metrics, "connection_cap");
    let crowd_held = held - per_address as u64;
    assert!(refused_total >= 300 - crowd_held, "{refused_total}");
    for id in ["through-1", "through-2"] {
        let telemetry = rest.telemetry(Some(id), 0).await.unwrap();
        let first = telemetry.items.first().map(|m| m.message_id.as_str());
        assert_eq!(first, Some("during-attack"), "{telemetry:?}");
    }
}

/// A process that does run out of file descriptors (more device connections than the budget,
/// say) must wait it out: the MQTT listener neither spins nor stops, warns a few times rather
/// than thousands, and a device connects as soon as descriptors free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_listener_accepts_again_after_the_process_ran_out_of_file_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let ports = ["--https-port", "0", "--mqtt-port", "0"];
    let hub = spawn_hub_with(dir.path(), &ports, Some((256, 256)));
    let ready = &hub.ready;
    let ca = std::fs::read(ready["caFile"].as_str().unwrap()).unwrap();
    let tls = fleethub_sim::tls_config_trusting(&ca).unwrap();
    let rest = hub.client();
    let body = serde_json::json!({ "deviceId": "after-emfile" });
    let device = rest.put_device("after-emfile", &body).await.unwrap();
    let key = device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_string();
    drop(rest);

    // More connections than the hub has descriptors, none of them starting TLS.
    let mqtt = SocketAddr::new(loopback(1), ready["mqttPort"].as_u64().unwrap() as u16);
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(TcpStream::connect(mqtt).await.unwrap());
    }
    let log_file = dir.path().join("hub.log");
    let warning = "MQTT/TLS: out of file descriptors";
    eventually("the hub to run out of file descriptors", || async {
        let log = std::fs::read_to_string(&log_file).ok()?;
        log.contains(warning).then_some(())
    })
    .await;
    // Long enough for a spinning loop to fill the log; a backing-off one warns once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(flood);
    device_publishes(ready, &tls, "after-emfile", &key).await;
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert_eq!(log.matches(warning).count(), 1, "{log}");
}
