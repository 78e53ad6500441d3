//! TLS material: the generated CA persists across restarts; a supplied certificate is used as is.

use crate::harness::{unix_now, TestHub};
use fleethub::ServeConfig;
use fleethub_sim::{DeviceAuth, DeviceClient};
use reqwest::StatusCode;

#[tokio::test]
async fn a_supplied_certificate_replaces_the_generated_one() {
    let own = tempfile::tempdir().unwrap();
    // The operator's own PKI, made here with the same generator into a separate directory.
    let theirs = fleethub_tls::ensure_certificates(own.path(), "localhost", None).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = ServeConfig::ephemeral(data.path());
    cfg.tls_cert = Some(theirs.server_cert.clone());
    cfg.tls_key = Some(theirs.server_key.clone());
    let running = fleethub::start(cfg).await.unwrap();
    assert!(
        running.ca_file.is_none(),
        "no CA is generated when a certificate is supplied"
    );
    // The hub's tls directory holds only its session-ticket keys: no CA, no certificate.
    let mut kept: Vec<String> = std::fs::read_dir(data.path().join("tls"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, ["https-ticket-keys", "mqtt-ticket-keys"]);
    let ca = std::fs::read(theirs.ca.unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let r = http
        .get(format!(
            "https://localhost:{}/healthz",
            running.https_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    running.shutdown();
}

#[tokio::test]
async fn the_generated_ca_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = fleethub::start(ServeConfig::ephemeral(dir.path()))
        .await
        .unwrap();
    let ca_before = std::fs::read(first.ca_file.clone().unwrap()).unwrap();
    let owner_before = first.hub.policy("iothubowner").unwrap().primary_key;
    first.shutdown();
    let second = fleethub::start(ServeConfig::ephemeral(dir.path()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(second.ca_file.clone().unwrap()).unwrap(),
        ca_before
    );
    assert_eq!(
        second.hub.policy("iothubowner").unwrap().primary_key,
        owner_before
    );
    second.shutdown();
}

#[tokio::test]
async fn a_device_may_connect_with_a_token_from_the_device_policy() {
    let hub = TestHub::start().await;
    hub.create_device("pol-1").await;
    let policy_key = hub.running.hub.policy("device").unwrap().primary_key;
    let token = fleethub_core::sas::generate_token(
        "localhost/devices/pol-1",
        &policy_key,
        Some("device"),
        unix_now() + 600,
    )
    .unwrap();
    let mut opts = hub.connect_options("pol-1", "unused");
    opts.auth = DeviceAuth::SasToken(token);
    let (dev, _events) = DeviceClient::connect(opts)
        .await
        .expect("device policy token accepted");
    assert!(dev
        .report(&serde_json::json!({"via": "policy"}))
        .await
        .is_ok());
    // The service policy grants no DeviceConnect.
    let service_key = hub.running.hub.policy("service").unwrap().primary_key;
    let token = fleethub_core::sas::generate_token(
        "localhost/devices/pol-1",
        &service_key,
        Some("service"),
        unix_now() + 600,
    )
    .unwrap();
    let mut opts = hub.connect_options("pol-1", "unused");
    opts.auth = DeviceAuth::SasToken(token);
    assert_eq!(crate::harness::refusal(opts).await, 4);
}

/// One MQTT/TLS session with the hub as a device with a SAS key: TLS with `tls`, CONNECT, the
/// CONNACK code, DISCONNECT. Returns the handshake kind and the code.
async fn connect_raw(
    hub: &TestHub,
    tls: &std::sync::Arc<rustls::ClientConfig>,
    id: &str,
    key: &str,
) -> (rustls::HandshakeKind, u8) {
    use fleethub_mqtt::codec::{decode, encode, Packet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(hub.running.mqtt_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let connect = crate::harness::sas_connect_packet(id, key);
    let mut out = bytes::BytesMut::new();
    encode(&connect, &mut out);
    stream.write_all(&out).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let code = loop {
        if let Some(packet) = decode(&mut buf, 1 << 16).unwrap() {
            match packet {
                Packet::ConnAck(ack) => break ack.code,
                other => panic!("expected CONNACK, got {other:?}"),
            }
        }
        let read = tokio::time::timeout(crate::harness::DEADLINE, stream.read_buf(&mut buf))
            .await
            .expect("CONNACK in time")
            .unwrap();
        assert!(read > 0, "the hub closed the connection before CONNACK");
    };
    let kind = stream.get_ref().1.handshake_kind().unwrap();
    encode(&Packet::Disconnect, &mut out);
    let _ = stream.write_all(&out.split()).await;
    let _ = stream.shutdown().await;
    (kind, code)
}

#[tokio::test]
async fn a_reconnecting_device_resumes_its_tls_session_and_is_authenticated_again() {
    let hub = TestHub::start().await;
    let key = hub.create_device("resume-1").await;
    let ca = std::fs::read(hub.running.ca_file.as_ref().unwrap()).unwrap();
    // The device's own session store, kept between its connects as a device keeps it in RAM.
    let tls = fleethub_tls::client_config_trusting(&ca).unwrap();
    let first = connect_raw(&hub, &tls, "resume-1", &key).await;
    assert_eq!(first, (rustls::HandshakeKind::Full, 0));
    let again = connect_raw(&hub, &tls, "resume-1", &key).await;
    assert_eq!(again, (rustls::HandshakeKind::Resumed, 0));
    // Resumption skips the certificate, not the device's authentication: a wrong key is still
    // refused on a resumed session.
    let wrong = fleethub_core::sas::generate_key();
    let refused = connect_raw(&hub, &tls, "resume-1", &wrong).await;
    assert_eq!(refused, (rustls::HandshakeKind::Resumed, 4));
}

#[tokio::test]
async fn a_device_resumes_its_tls_session_after_the_hub_restarts() {
    let hub = TestHub::start().await;
    let key = hub.create_device("restart-1").await;
    let tls = hub.tls.clone();
    let first = connect_raw(&hub, &tls, "restart-1", &key).await;
    assert_eq!(first, (rustls::HandshakeKind::Full, 0));
    let hub = TestHub::start_in(hub.stop()).await;
    // The ticket from before the restart still opens: its key was kept beside the certificates.
    let again = connect_raw(&hub, &tls, "restart-1", &key).await;
    assert_eq!(again, (rustls::HandshakeKind::Resumed, 0));
}

#[tokio::test]
async fn load_devices_with_their_own_sessions_resume_when_they_reconnect() {
    let hub = TestHub::start().await;
    let mut devices = Vec::new();
    for i in 0..3 {
        let id = format!("resume-load-{i}");
        let key = hub.create_device(&id).await;
        devices.push((id, key));
    }
    let template = fleethub_sim::ConnectTemplate {
        host: "127.0.0.1".into(),
        port: hub.running.mqtt_addr.port(),
        hub_host_name: "localhost".into(),
        tls: Some(hub.tls.clone()),
        sas_lifetime_secs: None,
    };
    let sessions = fleethub_sim::DeviceSessions::new(&hub.tls, devices.len());
    let kind = fleethub_sim::LoadKind::Hold;
    let first =
        fleethub_sim::LoadDevices::connect_with_sessions(&template, &devices, kind, &sessions)
            .await;
    assert_eq!((first.len(), first.tls_resumed()), (3, 0), "{first:?}");
    first.disconnect().await;
    let again =
        fleethub_sim::LoadDevices::connect_with_sessions(&template, &devices, kind, &sessions)
            .await;
    assert_eq!((again.len(), again.tls_resumed()), (3, 3), "{again:?}");
    again.disconnect().await;
}
