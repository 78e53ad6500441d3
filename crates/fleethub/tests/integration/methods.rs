//! Direct methods: answered round trips, offline devices, timeouts.

use crate::harness::{next_event, TestHub};
use fleethub_sim::DeviceEvent;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn method_round_trip_returns_the_devices_status_and_payload() {
    let hub = TestHub::start().await;
    let (dev, mut events, _) = hub.online_device("m-1").await;
    let call = tokio::spawn({
        let base = hub.base.clone();
        let http = hub.http.clone();
        let token = hub.token("service");
        async move {
            http.post(format!("{base}/twins/m-1/methods"))
                .header("Authorization", token)
                .json(&json!({"methodName": "reboot", "payload": {"delay": 5}, "responseTimeoutInSeconds": 10}))
                .send()
                .await
                .unwrap()
        }
    });
    let (name, rid, payload) = next_event(&mut events, "method request", |e| match e {
        DeviceEvent::MethodRequest { name, rid, payload } => Some((name, rid, payload)),
        _ => None,
    })
    .await;
    assert_eq!(name, "reboot");
    assert_eq!(payload["delay"], 5);
    dev.method_response(&rid, 201, &json!({"rebooting": true}))
        .await
        .unwrap();
    let resp = call.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"status": 201, "payload": {"rebooting": true}}));
}

#[tokio::test]
async fn offline_device_gets_404103_at_once() {
    let hub = TestHub::start().await;
    hub.create_device("m-off").await;
    let r = hub
        .call(
            Method::POST,
            "/twins/m-off/methods",
            Some(json!({"methodName": "reboot", "payload": null})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), 404103);
    assert_eq!(r.headers["iothub-errorcode"], "DeviceNotOnline");
}

#[tokio::test]
async fn connect_timeout_waits_for_the_device_to_come_online() {
    let hub = TestHub::start().await;
    let key = hub.create_device("m-late").await;
    let call = {
        let (http, base, token) = (hub.http.clone(), hub.base.clone(), hub.token("service"));
        tokio::spawn(async move {
            http.post(format!("{base}/twins/m-late/methods"))
                .header("Authorization", token)
                .json(&json!({"methodName": "ping", "responseTimeoutInSeconds": 10, "connectTimeoutInSeconds": 10}))
                .send()
                .await
                .unwrap()
        })
    };
    let (dev, mut events) = hub.device("m-late", &key).await;
    dev.subscribe(&["$iothub/methods/POST/#"]).await.unwrap();
    let rid = next_event(&mut events, "late method", |e| match e {
        DeviceEvent::MethodRequest { rid, .. } => Some(rid),
        _ => None,
    })
    .await;
    dev.method_response(&rid, 200, &json!("pong"))
        .await
        .unwrap();
    assert_eq!(call.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn unanswered_method_times_out_with_504() {
    let hub = TestHub::start().await;
    let (_dev, _events, _) = hub.online_device("m-mute").await;
    let r = hub
        .call(
            Method::POST,
            "/twins/m-mute/methods",
            Some(json!({"methodName": "hang", "responseTimeoutInSeconds": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.body);
    assert_eq!(r.error_code(), 504101);
}

#[tokio::test]
async fn out_of_range_timeouts_are_400_with_the_allowed_range() {
    let hub = TestHub::start().await;
    hub.create_device("m-bad").await;
    let r = hub
        .call(
            Method::POST,
            "/twins/m-bad/methods",
            Some(json!({"methodName": "x", "responseTimeoutInSeconds": 301})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("between 5 and 300"));
}

#[tokio::test]
async fn a_call_to_a_connection_that_was_replaced_fails_at_once() {
    let hub = TestHub::start().await;
    let (_old, mut events, key) = hub.online_device("m-replaced").await;
    let started = std::time::Instant::now();
    let call = tokio::spawn({
        let (base, http, token) = (hub.base.clone(), hub.http.clone(), hub.token("service"));
        async move {
            let r = http
                .post(format!("{base}/twins/m-replaced/methods"))
                .header("Authorization", token)
                .json(&json!({"methodName": "reboot", "responseTimeoutInSeconds": 120}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<serde_json::Value>().await.unwrap())
        }
    });
    next_event(&mut events, "method request on the old connection", |e| {
        matches!(e, DeviceEvent::MethodRequest { .. }).then_some(())
    })
    .await;
    // The device reconnects (a new link after a network change) before it answered.
    let (_new, _new_events) = hub.device("m-replaced", &key).await;
    let (status, body) = call.await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the call waited {:?}, near its 120 s timeout",
        started.elapsed()
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errorCode"], 404104, "{body}");
}
