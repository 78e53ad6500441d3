//! The device client against a scripted MQTT peer built on fleethub-mqtt's codec: no hub, but
//! real sockets (plain TCP and TLS), so connect, correlation, acks and keepalive are exercised
//! exactly as against a hub. The lead's end-to-end test covers a real hub.
#![allow(clippy::unwrap_used)] // a panic here fails a test or a probe; it never reaches the hub

use bytes::Bytes;
use fleethub_mqtt::codec::{ConnAck, Packet, Publish, SubAck};
use fleethub_mqtt::transport::{PacketReader, PacketWriter};
use fleethub_sim::{
    tls_config_trusting, ClientError, ConnectOptions, DeviceAuth, DeviceClient, DeviceEvent,
};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const WAIT: Duration = Duration::from_secs(5);

/// How the scripted peer behaves.
#[derive(Clone, Copy)]
struct Script {
    connack: u8,
    twin_get_status: u16,
    /// Answer reported patches in pairs, second first (else each at once).
    pair_reports: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            connack: 0,
            twin_get_status: 200,
            pair_reports: true,
        }
    }
}

/// Something the test makes the peer do.
enum Action {
    Send(Packet),
    Close,
}

/// An MQTT peer that answers like IoT Hub and records what it receives. Actions and the peer
/// address concern the first connection; later ones are only answered.
struct ScriptedHub {
    addr: SocketAddr,
    received: mpsc::UnboundedReceiver<Packet>,
    actions: mpsc::UnboundedSender<Action>,
    peer: oneshot::Receiver<SocketAddr>,
}

impl ScriptedHub {
    async fn start(script: Script, tls: Option<tokio_rustls::TlsAcceptor>) -> ScriptedHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (received_tx, received) = mpsc::unbounded_channel();
        let (actions, actions_rx) = mpsc::unbounded_channel();
        let (peer_tx, peer) = oneshot::channel();
        tokio::spawn(async move {
            let (mut peer_tx, mut actions_rx) = (Some(peer_tx), Some(actions_rx));
            loop {
                let (tcp, peer_addr) = listener.accept().await.unwrap();
                if let Some(tx) = peer_tx.take() {
                    let _ = tx.send(peer_addr);
                }
                let (tls, received, actions) =
                    (tls.clone(), received_tx.clone(), actions_rx.take());
                tokio::spawn(async move {
                    match tls {
                        // A client that rejects our certificate ends the handshake.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, script, received, actions).await
                            }
                        }
                        None => serve(tcp, script, received, actions).await,
                    }
                });
            }
        });
        ScriptedHub {
            addr,
            received,
            actions,
            peer,
        }
    }

    fn options(&self, auth: DeviceAuth) -> ConnectOptions {
        ConnectOptions::new("127.0.0.1", self.addr.port(), "localhost", "dev1", auth)
    }

    /// The next packet the client sent that matches `want`, skipping others.
    async fn expect(&mut self, what: &str, want: impl Fn(&Packet) -> bool) -> Packet {
        let search = async {
            while let Some(packet) = self.received.recv().await {
                if want(&packet) {
                    return packet;
                }
            }
            panic!("connection ended before {what}");
        };
        tokio::time::timeout(WAIT, search)
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
    }

    fn push(&self, topic: &str, packet_id: u16, payload: &'static [u8]) {
        let publish = Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: topic.into(),
            packet_id: Some(packet_id),
            payload: Bytes::from_static(payload),
        };
        self.actions
            .send(Action::Send(Packet::Publish(publish)))
            .unwrap();
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    script: Script,
    received: mpsc::UnboundedSender<Packet>,
    mut actions: Option<mpsc::UnboundedReceiver<Action>>,
) {
    let (r, w) = tokio::io::split(stream);
    let mut reader = PacketReader::new(r, 1 << 20);
    let mut writer = PacketWriter::new(w);
    let Ok(Some(connect @ Packet::Connect(_))) = reader.next().await else {
        return;
    };
    let _ = received.send(connect);
    let connack = ConnAck {
        session_present: false,
        code: script.connack,
    };
    writer.send(&Packet::ConnAck(connack)).await.unwrap();
    if script.connack != 0 {
        return;
    }
    let mut version = 0;
    // Reported patches are answered in pairs, second first, to prove rid correlation.
    let mut held_report: Option<String> = None;
    loop {
        let packet = tokio::select! {
            packet = reader.next() => match packet {
                Ok(Some(packet)) => packet,
                _ => return,
            },
            action = next_action(&mut actions) => match action {
                Some(Action::Send(packet)) => {
                    writer.send(&packet).await.unwrap();
                    continue;
                }
                Some(Action::Close) | None => return,
            },
        };
        let _ = received.send(packet.clone());
        match packet {
            Packet::Subscribe(s) => {
                let codes = s.filters.iter().map(|_| 1).collect();
                writer.queue(&Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    codes,
                }));
            }
            Packet::PingReq => writer.queue(&Packet::PingResp),
            Packet::Publish(p) => {
                let rid = fleethub_mqtt::properties::topic_query(&p.topic)
                    .into_iter()
                    .find(|(k, _)| k == "$rid")
                    .map(|(_, v)| v);
                if p.topic.starts_with("$iothub/twin/GET/") {
                    // Answer before the PUBACK: the client must cope with either order.
                    let body = if script.twin_get_status == 200 {
                        r#"{"desired":{"$version":1},"reported":{"$version":1}}"#
                    } else {
                        r#"{"errorCode":404001}"#
                    };
                    let topic = format!(
                        "$iothub/twin/res/{}/?$rid={}",
                        script.twin_get_status,
                        rid.unwrap()
                    );
                    writer.queue(&response(topic, body));
                } else if p
                    .topic
                    .starts_with("$iothub/twin/PATCH/properties/reported/")
                {
                    match held_report.take() {
                        None if !script.pair_reports => {
                            version += 1;
                            let topic = format!(
                                "$iothub/twin/res/204/?$rid={}&$version={version}",
                                rid.unwrap()
                            );
                            writer.queue(&response(topic, ""));
                        }
                        None => held_report = rid,
                        Some(first) => {
                            for rid in [rid.unwrap(), first] {
                                version += 1;
                                let topic =
                                    format!("$iothub/twin/res/204/?$rid={rid}&$version={version}");
                                writer.queue(&response(topic, ""));
                            }
                        }
                    }
                }
                writer.queue(&Packet::PubAck(p.packet_id.unwrap()));
            }
            Packet::Disconnect => {
                writer.flush().await.unwrap();
                return;
            }
            _ => {}
        }
        writer.flush().await.unwrap();
    }
}

/// The test's next action; never resolves on connections that take none.
async fn next_action(actions: &mut Option<mpsc::UnboundedReceiver<Action>>) -> Option<Action> {
    match actions {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn response(topic: String, body: &'static str) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: 0,
        retain: false,
        topic,
        packet_id: None,
        payload: Bytes::from_static(body.as_bytes()),
    })
}

#[tokio::test]
async fn connect_sends_the_sdk_user_name_and_a_token_signed_with_the_key() {
    let mut hub = ScriptedHub::start(Script::default(), None).await;
    let (client, _events) = DeviceClient::connect(hub.options(DeviceAuth::SasKey(KEY.into())))
        .await
        .unwrap();
    let Packet::Connect(connect) = hub.expect("CONNECT", |_| true).await else {
        unreachable!()
    };
    assert_eq!(connect.client_id, "dev1");
    assert!(!connect.clean_session);
    assert_eq!(connect.keep_alive, 60);
    assert_eq!(
        connect.username.as_deref(),
        Some("localhost/dev1/?api-version=2021-04-12")
    );
    let password = String::from_utf8(connect.password.unwrap().to_vec()).unwrap();
    let token = fleethub_core::sas::parse(&password).unwrap();
    assert!(token.verify(KEY), "token {password} does not verify");
    assert!(password.contains("sr=localhost%2Fdevices%2Fdev1&"));
    client.disconnect().await;
    hub.expect("DISCONNECT", |p| *p == Packet::Disconnect).await;
}

#[tokio::test]
async fn a_refused_connack_is_an_error_carrying_its_code() {
    let script = Script {
        connack: 5,
        ..Script::default()
    };
    let hub = ScriptedHub::start(script, None).await;
    let err = DeviceClient::connect(hub.options(DeviceAuth::SasToken("bad".into())))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused(5)), "{err:?}");
}

#[tokio::test]
async fn concurrent_reports_each_get_their_own_version() {
    let hub = ScriptedHub::start(Script::default(), None).await;
    let (client, _events) = DeviceClient::connect(hub.options(DeviceAuth::SasKey(KEY.into())))
        .await
        .unwrap();
    assert_eq!(client.subscribe_all().await.unwrap(), vec![1, 1, 1, 1]);
    let twin = client.get_twin().await.unwrap();
    assert_eq!(twin["desired"]["$version"], 1);

    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..40 {
        let client = client.clone();
        tasks.spawn(async move { client.report(&json!({"seq": seq})).await.unwrap() });
    }
    let mut versions = Vec::new();
    while let Some(version) = tasks.join_next().await {
        versions.push(version.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=40).collect::<Vec<u64>>());
    client.disconnect().await;
}

#[tokio::test]
async fn telemetry_topic_puts_the_message_id_first_and_encodes_properties() {
    let mut hub = ScriptedHub::start(Script::default(), None).await;
    let (client, _events) = DeviceClient::connect(hub.options(DeviceAuth::SasKey(KEY.into())))
        .await
        .unwrap();
    let props = vec![
        ("$.ct".to_string(), "application/json".to_string()),
        ("alert".to_string(), "high temp".to_string()),
    ];
    client
        .send_telemetry("mid-1", &props, Bytes::from_static(b"{\"t\":1}"))
        .await
        .unwrap();
    let Packet::Publish(p) = hub
        .expect("telemetry", |p| matches!(p, Packet::Publish(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(
        p.topic,
        "devices/dev1/messages/events/%24.mid=mid-1&%24.ct=application%2Fjson&alert=high%20temp"
    );
    assert_eq!(p.qos, 1);
    assert_eq!(&p.payload[..], b"{\"t\":1}");
}

#[tokio::test]
async fn a_twin_error_status_is_returned_with_its_body() {
    let script = Script {
        twin_get_status: 404,
        ..Script::default()
    };
    let hub = ScriptedHub::start(script, None).await;
    let (client, _events) = DeviceClient::connect(hub.options(DeviceAuth::SasKey(KEY.into())))
        .await
        .unwrap();
    match client.get_twin().await {
        Err(ClientError::Status { status: 404, body }) => assert!(body.contains("404001")),
        other => panic!("expected status 404, got {other:?}"),
    }
}

#[tokio::test]
async fn hub_pushes_become_events_and_are_acknowledged() {
    let mut hub = ScriptedHub::start(Script::default(), None).await;
    let (client, mut events) = DeviceClient::connect(hub.options(DeviceAuth::SasKey(KEY.into())))
        .await
        .unwrap();
    hub.push(
        "$iothub/twin/PATCH/properties/desired/?$version=2",
        11,
        br#"{"temp":25,"$version":2}"#,
    );
    hub.push(
        "$iothub/methods/POST/re%20boot/?$rid=1a",
        12,
        br#"{"delay":3}"#,
    );
    hub.push(
        "devices/dev1/messages/devicebound/%24.mid=m1&color=red%20blue",
        13,
        b"hello",
    );
    assert_eq!(
        events.wait_for(WAIT, |_| true).await.unwrap(),
        DeviceEvent::DesiredPatch {
            version: 2,
            body: json!({"temp": 25, "$version": 2})
        }
    );
    let method = events.wait_for(WAIT, |_| true).await.unwrap();
    assert_eq!(
        method,
        DeviceEvent::MethodRequest {
            name: "re boot".into(),
            rid: "1a".into(),
            payload: json!({"delay": 3})
        }
    );
    assert_eq!(
        events.wait_for(WAIT, |_| true).await.unwrap(),
        DeviceEvent::C2d {
            topic_props: vec![
                ("$.mid".into(), "m1".into()),
                ("color".into(), "red blue".into())
            ],
            body: Bytes::from_static(b"hello")
        }
    );
    for id in [11, 12, 13] {
        hub.expect("PUBACK", |p| *p == Packet::PubAck(id)).await;
    }
    client
        .method_response("1a", 200, &json!({"ok": true}))
        .await
        .unwrap();
    let Packet::Publish(p) = hub
        .expect("method response", |p| matches!(p, Packet::Publish(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(p.topic, "$iothub/methods/res/200/?$rid=1a");
    assert_eq!(
        serde_json::from_slice::<Value>(&p.payload).unwrap(),
        json!({"ok": true})
    );
}

#[tokio::test]
async fn a_closed_connection_fails_waiting_requests_and_says_why() {
    let hub = ScriptedHub::start(Script::default(), None).await;
    let (client, mut events) = DeviceClient::connect(hub.options(DeviceAuth::SasKey(KEY.into())))
        .await
        .unwrap();
    // One reported patch is held by the script until a second arrives, which never does.
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.report(&json!({"a": 1})).await }
    });
    let event = events.wait_for(Duration::from_millis(300), |_| true).await;
    assert!(event.is_none(), "no event before the close: {event:?}");
    hub.actions.send(Action::Close).unwrap();
    let result = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(matches!(result, Err(ClientError::Closed(_))), "{result:?}");
    let event = events.wait_for(WAIT, |_| true).await.unwrap();
    assert!(
        matches!(event, DeviceEvent::Disconnected { .. }),
        "{event:?}"
    );
    let later = client.report(&json!({"b": 2})).await;
    assert!(matches!(later, Err(ClientError::Closed(_))), "{later:?}");
}

#[tokio::test]
async fn keepalive_sends_pings() {
    let mut hub = ScriptedHub::start(Script::default(), None).await;
    let mut opts = hub.options(DeviceAuth::SasKey(KEY.into()));
    opts.keep_alive_secs = 1;
    let (_client, _events) = DeviceClient::connect(opts).await.unwrap();
    hub.expect("PINGREQ", |p| *p == Packet::PingReq).await;
}

#[tokio::test]
async fn the_source_address_can_be_chosen_within_loopback() {
    let mut hub = ScriptedHub::start(Script::default(), None).await;
    let mut opts = hub.options(DeviceAuth::SasKey(KEY.into()));
    opts.local_addr = Some("127.0.0.7".parse::<IpAddr>().unwrap());
    let (_client, _events) = DeviceClient::connect(opts).await.unwrap();
    let peer = (&mut hub.peer).await.unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.7");
}

/// A CA and a server certificate for localhost/127.0.0.1 signed by it, as the hub generates,
/// served over TLS 1.2 only (the version the test holds the client to).
fn tls_pair() -> (String, tokio_rustls::TlsAcceptor) {
    let ca = fleethub_tls::LocalCa::generate("test CA").unwrap();
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let server = ca.issue_server("localhost", &names).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(server.chain.clone(), server.key())
        .unwrap();
    (
        ca.cert_pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

#[tokio::test]
async fn tls_1_2_with_the_hub_ca_works_and_a_foreign_ca_is_refused() {
    let (ca_pem, acceptor) = tls_pair();
    let hub = ScriptedHub::start(Script::default(), Some(acceptor)).await;
    let mut opts = hub.options(DeviceAuth::SasKey(KEY.into()));
    opts.tls = Some(tls_config_trusting(ca_pem.as_bytes()).unwrap());
    let (client, _events) = DeviceClient::connect(opts).await.unwrap();
    assert_eq!(client.get_twin().await.unwrap()["reported"]["$version"], 1);

    let (_, acceptor) = tls_pair();
    let hub = ScriptedHub::start(Script::default(), Some(acceptor)).await;
    let mut opts = hub.options(DeviceAuth::SasKey(KEY.into()));
    opts.tls = Some(tls_config_trusting(ca_pem.as_bytes()).unwrap());
    let err = DeviceClient::connect(opts).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
}

#[tokio::test]
async fn report_load_counts_every_request_and_samples_latencies() {
    let script = Script {
        pair_reports: false,
        ..Script::default()
    };
    let hub = ScriptedHub::start(script, None).await;
    let devices: Vec<(String, String)> =
        (0..3).map(|i| (format!("load-{i}"), KEY.into())).collect();
    let cfg = fleethub_sim::ReportLoad {
        devices,
        connect: fleethub_sim::ConnectTemplate {
            host: "127.0.0.1".into(),
            port: hub.addr.port(),
            hub_host_name: "localhost".into(),
            tls: None,
            sas_lifetime_secs: None,
        },
        rate_per_sec: None,
        duration: Duration::from_millis(300),
        in_flight_per_device: 2,
    };
    let report = fleethub_sim::run_report_load(cfg).await.unwrap();
    assert_eq!(report.failed_connects, 0);
    assert_eq!(report.errors, 0);
    assert!(report.acked > 6, "{report:?}");
    assert_eq!(report.sent, report.acked);
    assert_eq!(report.latencies_us.len() as u64, report.acked);
    assert!(report.p50() <= report.p99());
    assert!(report.throughput() > 0.0);
}

#[tokio::test]
async fn report_load_fails_when_no_device_can_connect() {
    let script = Script {
        connack: 5,
        ..Script::default()
    };
    let hub = ScriptedHub::start(script, None).await;
    let cfg = fleethub_sim::ReportLoad {
        devices: vec![("d".into(), KEY.into())],
        connect: fleethub_sim::ConnectTemplate {
            host: "127.0.0.1".into(),
            port: hub.addr.port(),
            hub_host_name: "localhost".into(),
            tls: None,
            sas_lifetime_secs: None,
        },
        rate_per_sec: Some(10),
        duration: Duration::from_millis(100),
        in_flight_per_device: 1,
    };
    let err = fleethub_sim::run_report_load(cfg).await.unwrap_err();
    assert!(matches!(err, ClientError::Refused(5)), "{err:?}");
}

#[tokio::test]
async fn method_responder_echoes_the_payload_with_200() {
    let mut hub = ScriptedHub::start(Script::default(), None).await;
    let (client, events) = DeviceClient::connect(hub.options(DeviceAuth::SasKey(KEY.into())))
        .await
        .unwrap();
    let responder = fleethub_sim::run_method_responder(client.clone(), events)
        .await
        .unwrap();
    for (rid, payload) in [("7", br#"{"n":1}"#), ("8", br#"{"n":2}"#)] {
        hub.push(
            &format!("$iothub/methods/POST/ping/?$rid={rid}"),
            21,
            payload,
        );
        let Packet::Publish(p) = hub
            .expect("method response", |p| matches!(p, Packet::Publish(_)))
            .await
        else {
            unreachable!()
        };
        assert_eq!(p.topic, format!("$iothub/methods/res/200/?$rid={rid}"));
        assert_eq!(&p.payload[..], payload);
    }
    client.disconnect().await;
    // Answers are sequential: the second was sent only after the first was acknowledged; the
    // second's PUBACK may or may not have beaten the disconnect.
    let answered = tokio::time::timeout(WAIT, responder)
        .await
        .unwrap()
        .unwrap();
    assert!((1..=2).contains(&answered), "{answered}");
}

#[tokio::test]
async fn idle_fleet_holds_connections_subscribed_to_all_feeds() {
    let mut hub = ScriptedHub::start(Script::default(), None).await;
    let devices: Vec<(String, String)> =
        (0..4).map(|i| (format!("idle-{i}"), KEY.into())).collect();
    let template = fleethub_sim::ConnectTemplate {
        host: "127.0.0.1".into(),
        port: hub.addr.port(),
        hub_host_name: "localhost".into(),
        tls: None,
        sas_lifetime_secs: None,
    };
    let fleet = fleethub_sim::connect_idle(&template, &devices).await;
    assert!(fleet.failures.is_empty(), "{:?}", fleet.failures);
    assert_eq!(fleet.clients.len(), 4);
    let Packet::Subscribe(s) = hub
        .expect("SUBSCRIBE", |p| matches!(p, Packet::Subscribe(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(s.filters.len(), 4);
    fleet.disconnect().await;
}

fn template_for(hub: &ScriptedHub) -> fleethub_sim::ConnectTemplate {
    fleethub_sim::ConnectTemplate {
        host: "127.0.0.1".into(),
        port: hub.addr.port(),
        hub_host_name: "localhost".into(),
        tls: None,
        sas_lifetime_secs: None,
    }
}

#[tokio::test]
async fn telemetry_fleet_waits_for_each_puback() {
    let mut hub = ScriptedHub::start(Script::default(), None).await;
    let devices = vec![("t-0".to_string(), KEY.to_string())];
    let kind = fleethub_sim::LoadKind::Telemetry;
    let fleet = fleethub_sim::LoadDevices::connect(&template_for(&hub), &devices, kind).await;
    assert_eq!((fleet.len(), fleet.failed_connects()), (1, 0));
    let shape = fleethub_sim::LoadShape {
        rate_per_sec: Some(50),
        duration: Duration::from_millis(200),
        in_flight_per_device: 1,
    };
    let report = fleet.run(shape).await;
    assert_eq!(report.errors, 0);
    assert!((5..=11).contains(&report.acked), "{report:?}");
    let Packet::Publish(p) = hub
        .expect("telemetry", |p| matches!(p, Packet::Publish(_)))
        .await
    else {
        unreachable!()
    };
    assert!(
        p.topic.starts_with("devices/t-0/messages/events/%24.mid="),
        "{}",
        p.topic
    );
    fleet.disconnect().await;
}

#[tokio::test]
async fn held_fleet_counts_pushes_and_answers_methods() {
    let mut hub = ScriptedHub::start(Script::default(), None).await;
    let devices = vec![("h-0".to_string(), KEY.to_string())];
    let kind = fleethub_sim::LoadKind::Hold;
    let fleet = fleethub_sim::LoadDevices::connect(&template_for(&hub), &devices, kind).await;
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks = fleet.serve_events(true, received.clone());
    hub.push(
        "$iothub/twin/PATCH/properties/desired/?$version=3",
        31,
        br#"{"$version":3}"#,
    );
    hub.push("$iothub/methods/POST/ping/?$rid=r9", 32, b"{}");
    let Packet::Publish(p) = hub
        .expect("method response", |p| matches!(p, Packet::Publish(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(p.topic, "$iothub/methods/res/200/?$rid=r9");
    assert_eq!(received.load(std::sync::atomic::Ordering::Relaxed), 2);
    drop(tasks);
    fleet.disconnect().await;
}
