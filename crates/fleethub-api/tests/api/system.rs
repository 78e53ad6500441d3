//! Statistics, health, metrics, cloud-to-device messages and telemetry.

use crate::support::TestApi;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use fleethub_hub::TelemetryIn;
use http_body_util::BodyExt;
use serde_json::json;
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn statistics_count_devices_by_status() {
    let api = TestApi::start().await;
    api.create_device("on1").await;
    api.create_device("on2").await;
    let mut off = crate::support::sas_device("off1");
    off["status"] = json!("disabled");
    assert_eq!(
        api.owner(Method::PUT, "/devices/off1", Some(off))
            .await
            .status,
        StatusCode::OK
    );

    let stats = api.owner(Method::GET, "/statistics/devices", None).await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(
        stats.json(),
        json!({ "totalDeviceCount": 3, "enabledDeviceCount": 2, "disabledDeviceCount": 1 })
    );
    let service = api.owner(Method::GET, "/statistics/service", None).await;
    assert_eq!(service.json()["connectedDeviceCount"], 0);
}

#[tokio::test]
async fn health_and_metrics_need_no_token() {
    let api = TestApi::start().await;
    let health = api.call(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json(), json!({ "status": "ok" }));

    let metrics = api.call(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        metrics.text.contains("fleethub_connected_devices 0"),
        "{}",
        metrics.text
    );
}

#[tokio::test]
async fn c2d_is_queued_for_a_known_device_only() {
    let api = TestApi::start().await;
    api.create_device("dev1").await;
    let body = json!({ "body": "hello", "properties": { "color": "red" }, "messageId": "m-1" });
    let reply = api
        .owner(
            Method::POST,
            "/v1/devices/dev1/messages",
            Some(body.clone()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["messageId"], "m-1");
    // Without ttlSeconds a message expires an hour after it was queued.
    let expiry = reply.json()["expiryTimeUtc"].as_str().unwrap().to_string();
    let expiry = chrono::DateTime::parse_from_rfc3339(&expiry).unwrap();
    let ahead = expiry.to_utc() - chrono::Utc::now();
    assert!(
        (3590..=3600).contains(&ahead.num_seconds()),
        "expiryTimeUtc {expiry} is {ahead} ahead"
    );

    api.owner(Method::POST, "/v1/devices/ghost/messages", Some(body))
        .await
        .assert_error(404, 404001, "DeviceNotFound");
}

#[tokio::test]
async fn telemetry_pages_follow_next() {
    let api = TestApi::start().await;
    api.create_device("a").await;
    api.create_device("b").await;
    for (device, n) in [("a", 1), ("b", 2), ("a", 3)] {
        api.hub
            .ingest_telemetry(device, telemetry(n))
            .await
            .unwrap();
    }
    let page = api
        .owner(Method::GET, "/v1/telemetry?deviceId=a&limit=1", None)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let page = page.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["body"], "n=1");

    let next = page["next"].as_i64().unwrap();
    let rest = api
        .owner(
            Method::GET,
            &format!("/v1/telemetry?deviceId=a&after={next}"),
            None,
        )
        .await
        .json();
    let bodies: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["n=3"]);
}

#[tokio::test]
async fn telemetry_stream_sends_only_the_requested_device() {
    let api = TestApi::start().await;
    let request = Request::get("/v1/telemetry/stream?deviceId=a")
        .header("authorization", api.token("iothubowner"))
        .body(Body::empty())
        .unwrap();
    let response = api.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    api.create_device("a").await;
    api.create_device("b").await;

    api.hub.ingest_telemetry("b", telemetry(1)).await.unwrap();
    api.hub.ingest_telemetry("a", telemetry(2)).await.unwrap();

    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(text.contains("data: ") && text.ends_with("\n\n")) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("an event within 10 s");
        let frame = frame.expect("stream open").unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let event: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["deviceId"], "a", "{text}");
    assert_eq!(event["body"], "n=2");
}

fn telemetry(n: u32) -> TelemetryIn {
    TelemetryIn {
        message_id: Some(format!("mid-{n}")),
        properties: vec![],
        body: Bytes::from(format!("n={n}")),
    }
}
