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
    assert!(!data.path().join("tls").exists());
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
