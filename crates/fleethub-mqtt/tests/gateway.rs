//! The gateway against a real hub (SQLite in a temporary directory) over in-memory streams: what a
//! device SDK sees on the wire. TLS end to end is tested by the binary crate.
#![allow(clippy::unwrap_used)] // a panic here fails a test or a probe; it never reaches the hub
#![cfg(feature = "gateway")]

use bytes::Bytes;
use fleethub_core::{sas, Clock, ManualClock, SystemClock};
use fleethub_hub::{C2dRequest, Hub, HubConfig, MethodRequest, QuotaConfig, Rate};
use fleethub_mqtt::codec::{ConnAck, Connect, Packet, Publish, SubAck, Subscribe};
use fleethub_mqtt::connect::thumbprint;
use fleethub_mqtt::transport::{PacketReader, PacketWriter};
use fleethub_mqtt::{ConnectionInfo, Gateway, GatewayConfig};
use fleethub_store::{Store, StoreConfig};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

const WAIT: Duration = Duration::from_secs(10);

struct TestHub {
    hub: Hub,
    gateway: Gateway,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn test_hub() -> TestHub {
    test_hub_with(HubConfig::default()).await
}

async fn test_hub_with(config: HubConfig) -> TestHub {
    test_hub_on(config, Arc::new(SystemClock)).await
}

/// A hub whose time is `clock`'s.
async fn test_hub_on(config: HubConfig, clock: Arc<dyn Clock>) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("hub.sqlite"))).unwrap();
    let hub = Hub::open(store.clone(), clock, config).await.unwrap();
    let gateway = Gateway::new(hub.clone(), GatewayConfig::default());
    TestHub {
        hub,
        gateway,
        store,
        _dir: dir,
    }
}

impl TestHub {
    /// Registers a SAS device and returns a token for it valid for an hour.
    async fn sas_device(&self, id: &str) -> String {
        let expiry = self.hub.now().timestamp() as u64 + 3600;
        self.sas_device_until(id, expiry).await
    }

    /// Registers a SAS device and returns a token for it that expires at `expiry` (Unix seconds).
    async fn sas_device_until(&self, id: &str, expiry: u64) -> String {
        let key = sas::generate_key();
        let body = json!({
            "deviceId": id,
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": sas::generate_key()}},
        });
        self.hub.put_device(id, body, None).await.unwrap();
        sas::generate_token(&format!("localhost/devices/{id}"), &key, None, expiry).unwrap()
    }

    fn client(&self, info: ConnectionInfo) -> Device {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let gateway = self.gateway.clone();
        tokio::spawn(async move { gateway.serve_connection(theirs, info).await });
        let (r, w) = tokio::io::split(ours);
        Device {
            r: PacketReader::new(r, 1 << 20),
            w: PacketWriter::new(w),
            next_id: 0,
        }
    }

    /// A device connected with clean_session=0; returns it with CONNACK's session-present flag.
    async fn connected(&self, id: &str, token: &str) -> (Device, bool) {
        let mut d = self.client(ConnectionInfo::default());
        d.send(connect(id, Some(token), false)).await;
        match d.recv().await {
            Some(Packet::ConnAck(ConnAck {
                code: 0,
                session_present,
            })) => (d, session_present),
            other => panic!("expected CONNACK 0, got {other:?}"),
        }
    }
}

struct Device {
    r: PacketReader<ReadHalf<DuplexStream>>,
    w: PacketWriter<WriteHalf<DuplexStream>>,
    next_id: u16,
}

impl Device {
    async fn send(&mut self, p: Packet) {
        self.w.send(&p).await.unwrap();
    }

    /// The next packet, or None once the gateway closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.r.next())
            .await
            .expect("no packet within 10 s")
            .ok()
            .flatten()
    }

    async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, payload: &[u8]) -> u16 {
        self.next_id += 1;
        let p = Publish {
            dup: false,
            qos: 1,
            retain: false,
            topic: topic.into(),
            packet_id: Some(self.next_id),
            payload: Bytes::copy_from_slice(payload),
        };
        self.send(Packet::Publish(p)).await;
        self.next_id
    }

    async fn subscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        self.next_id += 1;
        let filters = filters.iter().map(|f| (f.to_string(), 1)).collect();
        self.send(Packet::Subscribe(Subscribe {
            packet_id: self.next_id,
            filters,
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(SubAck { packet_id, codes })) if packet_id == self.next_id => codes,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

fn connect(id: &str, token: Option<&str>, clean_session: bool) -> Packet {
    Packet::Connect(Connect {
        protocol_level: 4,
        clean_session,
        keep_alive: 60,
        client_id: id.into(),
        username: Some(format!(
            "localhost/{id}/?api-version=2019-10-01&DeviceClientType=test"
        )),
        password: token.map(|t| Bytes::from(t.to_string())),
        will: None,
    })
}

fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).unwrap()
}

#[tokio::test]
async fn refused_connects_get_the_iot_hub_connack_codes() {
    let t = test_hub().await;
    let token = t.sas_device("dev1").await;
    let other = t.sas_device("dev2").await;
    for (id, token, code) in [
        ("dev1", other.as_str(), 4),
        ("ghost", token.as_str(), 5),
        ("dev1/mod1", token.as_str(), 2),
    ] {
        let mut d = t.client(ConnectionInfo::default());
        d.send(connect(id, Some(token), false)).await;
        assert_eq!(
            d.recv().await,
            Some(Packet::ConnAck(ConnAck {
                session_present: false,
                code
            })),
            "{id}"
        );
        assert_eq!(d.recv().await, None, "{id}: closed after the refusal");
    }
    assert_eq!(
        t.hub.metrics().connections_refused.load(Ordering::Relaxed),
        3
    );
}

#[tokio::test]
async fn twin_get_is_answered_before_subscribing_and_reports_commit() {
    let t = test_hub().await;
    let token = t.sas_device("dev1").await;
    let (mut d, _) = t.connected("dev1", &token).await;
    let id = d.publish("$iothub/twin/GET/?$rid=r1", b" ").await;
    assert_eq!(d.recv().await, Some(Packet::PubAck(id)));
    let res = d.recv_publish().await;
    assert_eq!(res.topic, "$iothub/twin/res/200/?$rid=r1");
    assert!(json_of(&res.payload)["desired"]["$version"].is_u64());

    assert_eq!(d.subscribe(&["$iothub/twin/res/#"]).await, vec![1]);
    let id = d
        .publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=r2",
            br#"{"fw":"1.0"}"#,
        )
        .await;
    assert_eq!(d.recv().await, Some(Packet::PubAck(id)));
    let res = d.recv_publish().await;
    assert!(
        res.topic
            .starts_with("$iothub/twin/res/204/?$rid=r2&$version="),
        "{}",
        res.topic
    );
    let twin = t.hub.get_twin("dev1").await.unwrap();
    assert_eq!(twin.reported.values["fw"], "1.0");

    d.publish("$iothub/twin/PATCH/properties/reported/?$rid=r3", b"[1]")
        .await;
    d.recv().await; // PUBACK
    let res = d.recv_publish().await;
    assert!(
        res.topic.starts_with("$iothub/twin/res/400/?$rid=r3"),
        "{}",
        res.topic
    );
    assert!(json_of(&res.payload)["errorCode"].is_u64());
}

#[tokio::test]
async fn subscriptions_survive_a_reconnect_without_resubscribing() {
    let t = test_hub().await;
    let token = t.sas_device("dev1").await;
    let (mut d, present) = t.connected("dev1", &token).await;
    assert!(!present);
    let codes = d
        .subscribe(&[
            "$iothub/twin/PATCH/properties/desired/#",
            "#",
            "devices/dev2/messages/devicebound/#",
        ])
        .await;
    assert_eq!(codes, vec![1, 0x80, 0x80]);
    d.send(Packet::Disconnect).await;
    assert_eq!(d.recv().await, None);

    let (mut d, present) = t.connected("dev1", &token).await;
    assert!(present, "the persistent session is restored");
    t.hub
        .update_twin(
            "dev1",
            json!({"properties": {"desired": {"temp": 25}}}),
            None,
        )
        .await
        .unwrap();
    let patch = d.recv_publish().await;
    assert!(
        patch
            .topic
            .starts_with("$iothub/twin/PATCH/properties/desired/?$version="),
        "{}",
        patch.topic
    );
    let body = json_of(&patch.payload);
    assert_eq!(body["temp"], 25);
    assert!(body["$version"].is_u64());
}

#[tokio::test]
async fn a_reconnect_subscribing_again_to_the_same_topics_writes_no_session() {
    let t = test_hub().await;
    let token = t.sas_device("dev1").await;
    let filters = [
        "$iothub/twin/PATCH/properties/desired/#",
        "$iothub/methods/POST/#",
    ];
    let (mut d, _) = t.connected("dev1", &token).await;
    let granted = d.subscribe(&filters).await;
    d.send(Packet::Disconnect).await;
    assert_eq!(d.recv().await, None);
    let (mut d, present) = t.connected("dev1", &token).await;
    assert!(present);
    // From here the store takes no writes, so a SUBSCRIBE that needed one would fail.
    t.store.close();
    assert_eq!(
        d.subscribe(&filters).await,
        granted,
        "the same topics again"
    );
    // A new topic changes the session: it must be committed before SUBACK, and cannot be.
    d.send(Packet::Subscribe(Subscribe {
        packet_id: 99,
        filters: vec![("devices/dev1/messages/devicebound/#".into(), 1)],
    }))
    .await;
    assert_eq!(d.recv().await, None, "no SUBACK for a session not saved");
}

#[tokio::test]
async fn telemetry_is_acknowledged_and_other_devices_topics_close_the_connection() {
    let t = test_hub().await;
    let token = t.sas_device("dev1").await;
    let (mut d, _) = t.connected("dev1", &token).await;
    let id = d
        .publish(
            "devices/dev1/messages/events/%24.mid=mid-1&alert=high%20temp",
            b"{}",
        )
        .await;
    assert_eq!(d.recv().await, Some(Packet::PubAck(id)));
    assert_eq!(t.hub.metrics().telemetry_stored.load(Ordering::Relaxed), 1);
    d.publish("devices/dev2/messages/events/", b"{}").await;
    assert_eq!(d.recv().await, None, "strict isolation: closed, no PUBACK");
    assert_eq!(t.hub.metrics().telemetry_stored.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn c2d_is_delivered_and_completed_on_puback() {
    let t = test_hub().await;
    let token = t.sas_device("dev1").await;
    let (mut d, _) = t.connected("dev1", &token).await;
    let req = C2dRequest {
        body: "hello".into(),
        message_id: Some("m1".into()),
        ..Default::default()
    };
    t.hub.send_c2d("dev1", req).await.unwrap();
    assert_eq!(
        d.subscribe(&["devices/dev1/messages/devicebound/#"]).await,
        vec![1]
    );
    let msg = d.recv_publish().await;
    assert!(
        msg.topic
            .starts_with("devices/dev1/messages/devicebound/%24.mid=m1"),
        "{}",
        msg.topic
    );
    assert_eq!(&msg.payload[..], b"hello");
    d.send(Packet::PubAck(msg.packet_id.unwrap())).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while t.hub.metrics().c2d_delivered.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "c2d never completed"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn direct_method_round_trip() {
    let t = test_hub().await;
    let token = t.sas_device("dev1").await;
    let (mut d, _) = t.connected("dev1", &token).await;
    assert_eq!(d.subscribe(&["$iothub/methods/POST/#"]).await, vec![1]);
    let hub = t.hub.clone();
    let call = tokio::spawn(async move {
        let req = MethodRequest {
            method_name: "reboot now".into(),
            payload: json!({"delay": 1}),
            response_timeout_in_seconds: Some(10),
            connect_timeout_in_seconds: None,
        };
        hub.invoke_method("dev1", req).await
    });
    let request = d.recv_publish().await;
    let rid = request
        .topic
        .strip_prefix("$iothub/methods/POST/reboot%20now/?$rid=")
        .expect(&request.topic)
        .to_string();
    d.send(Packet::PubAck(request.packet_id.unwrap())).await;
    d.publish(
        &format!("$iothub/methods/res/200/?$rid={rid}"),
        br#"{"ok":true}"#,
    )
    .await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(
        (response.status, response.payload),
        (200, json!({"ok": true}))
    );
}

#[tokio::test]
async fn a_newer_connection_replaces_the_older_one() {
    let t = test_hub().await;
    let token = t.sas_device("dev1").await;
    let (mut old, _) = t.connected("dev1", &token).await;
    let (_new, _) = t.connected("dev1", &token).await;
    assert_eq!(old.recv().await, None);
    assert!(t.hub.connections().is_connected("dev1"));
}

#[tokio::test]
async fn self_signed_device_connects_with_its_certificate_thumbprint() {
    let t = test_hub().await;
    let leaf = b"not really DER, but the thumbprint is all that is compared".to_vec();
    let body = json!({
        "deviceId": "x509dev",
        "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": thumbprint(&leaf)}},
    });
    t.hub.put_device("x509dev", body, None).await.unwrap();
    let mut d = t.client(ConnectionInfo {
        peer: None,
        client_cert_chain: vec![leaf],
    });
    d.send(connect("x509dev", None, true)).await;
    assert_eq!(
        d.recv().await,
        Some(Packet::ConnAck(ConnAck {
            session_present: false,
            code: 0
        }))
    );
}

#[tokio::test]
async fn anything_but_connect_first_closes_the_connection() {
    let t = test_hub().await;
    let mut d = t.client(ConnectionInfo::default());
    d.send(Packet::PingReq).await;
    assert_eq!(d.recv().await, None);
}

#[tokio::test]
async fn qos2_and_oversized_publishes_close_only_their_connection() {
    let t = test_hub().await;
    let token = t.sas_device("dev1").await;
    let (mut bystander, _) = t.connected("dev1", &token).await;
    let other = t.sas_device("dev2").await;
    let (mut d, _) = t.connected("dev2", &other).await;
    let qos2 = Publish {
        dup: false,
        qos: 2,
        retain: false,
        topic: "devices/dev2/messages/events/".into(),
        packet_id: Some(1),
        payload: Bytes::new(),
    };
    d.send(Packet::Publish(qos2)).await;
    assert_eq!(d.recv().await, None);
    let (mut d, _) = t.connected("dev2", &other).await;
    d.publish("devices/dev2/messages/events/", &vec![b'x'; 300 * 1024])
        .await;
    assert_eq!(d.recv().await, None);
    bystander.send(Packet::PingReq).await;
    assert_eq!(bystander.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn silence_beyond_one_and_a_half_keepalives_closes_the_connection() {
    let t = test_hub().await;
    let token = t.sas_device("dev1").await;
    let mut d = t.client(ConnectionInfo::default());
    let Packet::Connect(mut c) = connect("dev1", Some(&token), true) else {
        unreachable!()
    };
    c.keep_alive = 1;
    d.send(Packet::Connect(c)).await;
    assert!(matches!(
        d.recv().await,
        Some(Packet::ConnAck(ConnAck { code: 0, .. }))
    ));
    let started = tokio::time::Instant::now();
    assert_eq!(d.recv().await, None);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
}

/// A hub whose only quota is `set` applied to an unlimited configuration.
async fn hub_with_quota(set: impl FnOnce(&mut QuotaConfig)) -> TestHub {
    let mut quotas = QuotaConfig {
        device_telemetry: None,
        device_reported: None,
        ..QuotaConfig::default()
    };
    set(&mut quotas);
    test_hub_with(HubConfig {
        quotas,
        ..HubConfig::default()
    })
    .await
}

#[tokio::test]
async fn a_device_publishing_faster_than_its_quota_is_slowed_and_loses_nothing() {
    let rate = Rate {
        per_second: 20.0,
        burst: 5,
    };
    let t = hub_with_quota(|q| q.device_telemetry = Some(rate)).await;
    let token = t.sas_device("dev1").await;
    let (mut d, _) = t.connected("dev1", &token).await;
    const SENT: usize = 25;
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    for n in 0..SENT {
        let topic = format!("devices/dev1/messages/events/%24.mid=m-{n}");
        ids.push(d.publish(&topic, b"{}").await);
    }
    for id in ids {
        assert_eq!(d.recv().await, Some(Packet::PubAck(id)));
    }
    // The burst goes at once; the other 20 at 20 per second: at least one second in all.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(950),
        "{elapsed:?}: not slowed"
    );
    let stored = t.hub.read_telemetry(Some("dev1"), 0, 100).await.unwrap();
    assert_eq!(stored.len(), SENT, "back-pressure must not drop messages");
    // How many had to wait depends on how fast this machine sent them (a busy one refills
    // the bucket between sends), so only that some did is certain; the elapsed time above is
    // what proves the rate.
    let throttled = t.hub.metrics().throttled_telemetry.load(Ordering::Relaxed);
    assert!(
        (1..=(SENT - 5) as u64).contains(&throttled),
        "{throttled} delayed"
    );
    assert!(t.hub.metrics_text().contains(&format!(
        "fleethub_throttled_total{{kind=\"telemetry\"}} {throttled}"
    )));
}

#[tokio::test]
async fn a_reported_patch_flood_gets_429_on_the_twin_response_topic() {
    // A burst of three and then one per 100 s: nothing refills during the test.
    let rate = Rate {
        per_second: 0.01,
        burst: 3,
    };
    let t = hub_with_quota(|q| q.device_reported = Some(rate)).await;
    let token = t.sas_device("dev1").await;
    let (mut d, _) = t.connected("dev1", &token).await;
    let mut statuses = Vec::new();
    for n in 0..6 {
        let topic = format!("$iothub/twin/PATCH/properties/reported/?$rid=r{n}");
        let id = d
            .publish(&topic, format!(r#"{{"n":{n}}}"#).as_bytes())
            .await;
        assert_eq!(d.recv().await, Some(Packet::PubAck(id)));
        let res = d.recv_publish().await;
        let status = res.topic.split('/').nth(3).unwrap().to_string();
        if status == "429" {
            assert_eq!(json_of(&res.payload)["errorCode"], 429001, "{res:?}");
            assert!(res.topic.ends_with(&format!("?$rid=r{n}")), "{}", res.topic);
        }
        statuses.push(status);
    }
    assert_eq!(statuses, ["204", "204", "204", "429", "429", "429"]);
    let twin = t.hub.get_twin("dev1").await.unwrap();
    assert_eq!(
        twin.reported.values["n"], 2,
        "throttled patches are not applied"
    );
    assert_eq!(
        t.hub.metrics().throttled_reported.load(Ordering::Relaxed),
        3
    );
}

#[tokio::test]
async fn connections_beyond_the_hub_connection_rate_are_refused_with_connack_3() {
    let rate = Rate {
        per_second: 0.01,
        burst: 2,
    };
    let t = hub_with_quota(|q| q.hub_connections = Some(rate)).await;
    let token = t.sas_device("dev1").await;
    let _first = t.connected("dev1", &token).await;
    let _second = t.connected("dev1", &token).await;
    let mut third = t.client(ConnectionInfo::default());
    third.send(connect("dev1", Some(&token), false)).await;
    assert_eq!(
        third.recv().await,
        Some(Packet::ConnAck(ConnAck {
            session_present: false,
            code: 3
        }))
    );
    assert_eq!(
        t.hub
            .metrics()
            .throttled_connections
            .load(Ordering::Relaxed),
        1
    );
}

/// A hub on a manual clock at 2026-06-01T00:00:00Z.
async fn hub_on_manual_clock() -> (TestHub, ManualClock) {
    let clock = ManualClock::new("2026-06-01T00:00:00Z".parse().unwrap());
    let t = test_hub_on(HubConfig::default(), Arc::new(clock.clone())).await;
    (t, clock)
}

impl TestHub {
    /// The CONNACK code a CONNECT as `id` (clean_session=0) gets.
    async fn connack(&self, info: ConnectionInfo, id: &str, token: Option<&str>) -> u8 {
        let mut d = self.client(info);
        d.send(connect(id, token, false)).await;
        match d.recv().await {
            Some(Packet::ConnAck(ack)) => ack.code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

impl Device {
    /// Whether the connection still answers a PINGREQ (false once the gateway closed it).
    async fn alive(&mut self) -> bool {
        self.send(Packet::PingReq).await;
        match self.recv().await {
            Some(Packet::PingResp) => true,
            None => false,
            other => panic!("expected PINGRESP or close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_sas_session_is_closed_when_its_token_expires_by_the_hub_clock() {
    let (t, clock) = hub_on_manual_clock().await;
    let se = clock.unix() + 600;
    let token = t.sas_device_until("dev1", se).await;
    let (mut d, _) = t.connected("dev1", &token).await;
    clock.advance(chrono::Duration::seconds(599));
    assert!(d.alive().await, "one second before se the session stays");
    clock.advance(chrono::Duration::seconds(1));
    assert!(!d.alive().await, "at se the hub closes the session");
    let deadline = tokio::time::Instant::now() + WAIT;
    while t.hub.connections().is_connected("dev1") {
        assert!(tokio::time::Instant::now() < deadline, "still registered");
        tokio::task::yield_now().await;
    }
    // And the same token is now refused.
    assert_eq!(
        t.connack(ConnectionInfo::default(), "dev1", Some(&token))
            .await,
        4
    );
}

#[tokio::test]
async fn a_silent_sas_session_is_closed_at_expiry_without_any_packet() {
    let t = test_hub().await;
    let token = t
        .sas_device_until("dev1", t.hub.now().timestamp() as u64 + 2)
        .await;
    let (mut d, _) = t.connected("dev1", &token).await;
    // Keepalive is 90 s; the close comes from the token's expiry, within 2 s.
    assert_eq!(d.recv().await, None);
}

#[tokio::test]
async fn a_token_naming_the_device_id_in_another_case_is_refused() {
    let t = test_hub().await;
    let key = sas::generate_key();
    let body = json!({
        "deviceId": "Dev1",
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": sas::generate_key()}},
    });
    t.hub.put_device("Dev1", body, None).await.unwrap();
    let expiry = t.hub.now().timestamp() as u64 + 600;
    for resource in ["localhost/devices/dev1", "localhost/devices/DEV1"] {
        let token = sas::generate_token(resource, &key, None, expiry).unwrap();
        let code = t
            .connack(ConnectionInfo::default(), "Dev1", Some(&token))
            .await;
        assert_eq!(code, 4, "{resource}");
    }
    let token = sas::generate_token("localhost/devices/Dev1", &key, None, expiry).unwrap();
    t.connected("Dev1", &token).await;
}

/// A CA uploaded to the hub and a leaf for `device_id` it issued, valid until `not_after`.
async fn ca_device(t: &TestHub, device_id: &str, not_after: (i32, u8, u8)) -> Vec<u8> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let params = |cn: &str, ca: bool| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = if ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        p
    };
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca = params("fleet CA", true);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    t.hub.put_certificate("fleet", &ca_pem).await.unwrap();
    let body = json!({"deviceId": device_id, "authentication": {"type": "certificateAuthority"}});
    t.hub.put_device(device_id, body, None).await.unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = params(device_id, false)
        .signed_by(&key, &Issuer::new(ca, ca_key))
        .unwrap();
    leaf.der().to_vec()
}

#[tokio::test]
async fn a_certificate_session_is_closed_at_the_leaf_not_after_and_then_refused() {
    let (t, clock) = hub_on_manual_clock().await;
    let leaf = ca_device(&t, "cert1", (2026, 6, 2)).await;
    let info = ConnectionInfo {
        peer: None,
        client_cert_chain: vec![leaf],
    };
    // Valid by the hub's clock (2026-06-01), whatever the machine's clock says.
    let mut d = t.client(info.clone());
    d.send(connect("cert1", None, false)).await;
    assert!(matches!(
        d.recv().await,
        Some(Packet::ConnAck(ConnAck { code: 0, .. }))
    ));
    clock.advance(chrono::Duration::hours(23));
    assert!(d.alive().await);
    clock.advance(chrono::Duration::hours(1));
    assert!(!d.alive().await, "at notAfter the hub closes the session");
    // Expired by the hub's clock: refused at CONNECT.
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(t.connack(info, "cert1", None).await, 4);
}

/// Port 8883 had HTTPS's old exposure: connections that never authenticate were unbounded, so a
/// client re-opening them could hold every file descriptor. Now at most
/// `max_pending_connections` wait at once; the next is closed at accept, and a device that
/// authenticates gives its place back, so devices still get in while the attack holds.
#[tokio::test]
async fn connections_that_never_authenticate_are_capped_and_devices_still_connect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let th = test_hub().await;
    let gateway = Gateway::new(
        th.hub.clone(),
        GatewayConfig {
            max_pending_connections: 3,
            ..GatewayConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = gateway.clone();
    tokio::spawn(async move { served.serve_plain(listener).await });

    // A device that authenticates first: it does not count against the cap afterwards.
    let token = th.sas_device("d1").await;
    let connect_device = |id: &'static str, token: String| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (r, w) = tcp.into_split();
        let (mut r, mut w) = (PacketReader::new(r, 1 << 20), PacketWriter::new(w));
        w.send(&connect(id, Some(&token), true)).await.unwrap();
        let answer = tokio::time::timeout(WAIT, r.next()).await.unwrap();
        (answer.ok().flatten(), r, w)
    };
    let (answer, _r1, _w1) = connect_device("d1", token.clone()).await;
    assert!(
        matches!(answer, Some(Packet::ConnAck(ConnAck { code: 0, .. }))),
        "{answer:?}"
    );

    // Three silent connections fill the waiting places...
    let mut silent = Vec::new();
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[]).await.unwrap();
        silent.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so the next one is closed at once, before it sends anything.
    let mut refused = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(WAIT, refused.read(&mut buf))
        .await
        .expect("a connection over the cap is closed, not left waiting")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(th.hub.metrics().connections_refused.load(Ordering::Relaxed) >= 1);

    // One silent connection goes away: its place comes back and a device gets in.
    drop(silent.pop());
    let token2 = th.sas_device("d2").await;
    let mut answer = None;
    for _ in 0..50 {
        let (a, ..) = connect_device("d2", token2.clone()).await;
        if a.is_some() {
            answer = a;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        matches!(answer, Some(Packet::ConnAck(ConnAck { code: 0, .. }))),
        "{answer:?}"
    );
    // Authenticated devices hold no waiting place: with two silent connections left, a third
    // fits again and is kept open (waiting for its CONNECT), not closed.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "the third silent connection is held, not closed: {waited:?}"
    );
}
