//! Bad input gets its status and code, never a panic, and never disturbs other devices.

use crate::harness::{next_event, refusal, unix_now, TestHub};
use fleethub_sim::{DeviceAuth, DeviceEvent};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn forged_and_expired_device_tokens_are_refused() {
    let hub = TestHub::start().await;
    let key = hub.create_device("b-1").await;
    let other_key = fleethub_core::sas::generate_key();
    let mut opts = hub.connect_options("b-1", &other_key);
    assert_eq!(
        refusal(opts.clone()).await,
        4,
        "forged key: CONNACK 4 (bad credentials)"
    );
    let expired =
        fleethub_core::sas::generate_token("localhost/devices/b-1", &key, None, unix_now() - 10)
            .unwrap();
    opts.auth = DeviceAuth::SasToken(expired);
    assert_eq!(refusal(opts).await, 4, "expired token: CONNACK 4");
}

#[tokio::test]
async fn a_token_for_one_device_cannot_connect_as_another() {
    let hub = TestHub::start().await;
    let key_a = hub.create_device("b-a").await;
    hub.create_device("b-b").await;
    let token_a =
        fleethub_core::sas::generate_token("localhost/devices/b-a", &key_a, None, unix_now() + 600)
            .unwrap();
    let mut opts = hub.connect_options("b-b", &key_a);
    opts.auth = DeviceAuth::SasToken(token_a);
    assert_eq!(
        refusal(opts).await,
        4,
        "a token naming another device: CONNACK 4"
    );
}

#[tokio::test]
async fn publishing_on_another_devices_topic_closes_the_connection() {
    let hub = TestHub::start().await;
    let (_victim, mut victim_events, _) = hub.online_device("b-victim").await;
    let (attacker, mut events, _) = hub.online_device("b-attacker").await;
    let _ = attacker
        .publish_raw(
            "devices/b-victim/messages/events/",
            bytes::Bytes::from_static(b"spoof"),
        )
        .await;
    next_event(&mut events, "attacker disconnected", |e| {
        matches!(e, DeviceEvent::Disconnected { .. }).then_some(())
    })
    .await;
    let r = hub
        .call(Method::GET, "/v1/telemetry?deviceId=b-victim", None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0);
    // The victim is untouched.
    hub.call(
        Method::PATCH,
        "/twins/b-victim",
        Some(json!({"properties": {"desired": {"ok": 1}}})),
    )
    .await;
    next_event(&mut victim_events, "victim still served", |e| {
        matches!(e, DeviceEvent::DesiredPatch { .. }).then_some(())
    })
    .await;
}

#[tokio::test]
async fn malformed_mqtt_bytes_close_only_that_connection() {
    let hub = TestHub::start().await;
    let (dev, _events, _) = hub.online_device("b-ok").await;
    let mut raw = tokio::net::TcpStream::connect(hub.running.plain_mqtt_addr.unwrap())
        .await
        .unwrap();
    // CONNECT whose remaining length claims 5 continuation bytes: invalid in MQTT 3.1.1.
    raw.write_all(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the hub closes a connection that sends garbage");
    assert!(dev.report(&json!({"still": "fine"})).await.is_ok());
}

#[tokio::test]
async fn service_calls_without_valid_tokens_get_401_with_a_code() {
    let hub = TestHub::start().await;
    let none = hub
        .call_as(Method::GET, "/devices/x", None, &[], None)
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.error_code(), 401002);
    let forged = fleethub_core::sas::generate_token(
        "localhost",
        &fleethub_core::sas::generate_key(),
        Some("iothubowner"),
        unix_now() + 60,
    )
    .unwrap();
    let r = hub
        .call_as(Method::GET, "/devices/x", None, &[], Some(&forged))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), 401003);
    let read_only = hub.token("registryRead");
    let w = hub
        .call_as(
            Method::PUT,
            "/devices/x",
            Some(json!({"deviceId": "x"})),
            &[],
            Some(&read_only),
        )
        .await;
    assert_eq!(w.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn invalid_json_and_bad_ids_are_400_with_a_message() {
    let hub = TestHub::start().await;
    let token = hub.token("iothubowner");
    let resp = hub
        .http
        .put(format!("{}/devices/j-1", hub.base))
        .header("Authorization", &token)
        .header("Content-Type", "application/json")
        .body("{\"deviceId\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errorCode"], 400006);
    let bad_id = hub
        .call(
            Method::PUT,
            "/devices/a%20b",
            Some(json!({"deviceId": "a b"})),
        )
        .await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_id.body["message"].as_str().unwrap().contains("allowed"),
        "{}",
        bad_id.body
    );
}
