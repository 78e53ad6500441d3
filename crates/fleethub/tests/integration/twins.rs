//! Twins end to end: reported over MQTT, desired from REST reaching the device, limits.

use crate::harness::{next_event, TestHub};
use fleethub_sim::DeviceEvent;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn reported_patch_is_acknowledged_with_version_and_visible_at_once() {
    let hub = TestHub::start().await;
    let (dev, _events, _) = hub.online_device("rep-1").await;
    let v1 = dev
        .report(&json!({"firmware": {"current_version": "1.0.0"}}))
        .await
        .unwrap();
    let v2 = dev
        .report(&json!({"firmware": {"status": "idle"}}))
        .await
        .unwrap();
    assert_eq!(v2, v1 + 1);
    let twin = hub.call(Method::GET, "/twins/rep-1", None).await;
    let reported = &twin.body["properties"]["reported"];
    assert_eq!(reported["firmware"]["current_version"], "1.0.0");
    assert_eq!(reported["firmware"]["status"], "idle");
    assert_eq!(reported["$version"], v2);
    assert!(reported["$metadata"]["firmware"]["$lastUpdated"].is_string());
    assert_eq!(twin.body["connectionState"], "Connected");
}

#[tokio::test]
async fn desired_patch_reaches_the_connected_device_with_its_version() {
    let hub = TestHub::start().await;
    let (_dev, mut events, _) = hub.online_device("des-1").await;
    let r = hub
        .call(Method::PATCH, "/twins/des-1", Some(json!({"tags": {"city": "boston"}, "properties": {"desired": {"telemetryInterval": 30}}})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["tags"]["city"], "boston");
    let (version, body) = next_event(&mut events, "desired patch", |e| match e {
        DeviceEvent::DesiredPatch { version, body } => Some((version, body)),
        _ => None,
    })
    .await;
    assert_eq!(body["telemetryInterval"], 30);
    assert_eq!(body["$version"], version);
    assert_eq!(r.body["properties"]["desired"]["$version"], version);
}

#[tokio::test]
async fn device_twin_get_answers_before_any_subscription() {
    let hub = TestHub::start().await;
    let key = hub.create_device("get-1").await;
    hub.call(
        Method::PATCH,
        "/twins/get-1",
        Some(json!({"properties": {"desired": {"mode": "eco"}}})),
    )
    .await;
    let (dev, _events) = hub.device("get-1", &key).await;
    let twin = dev.get_twin().await.unwrap();
    assert_eq!(twin["desired"]["mode"], "eco");
    assert!(twin["desired"]["$version"].as_u64().unwrap() >= 2);
    assert!(twin["reported"]["$version"].is_u64());
}

#[tokio::test]
async fn null_deletes_and_replace_removes_keys_on_the_device_too() {
    let hub = TestHub::start().await;
    let (_dev, mut events, _) = hub.online_device("rep-2").await;
    hub.call(
        Method::PATCH,
        "/twins/rep-2",
        Some(json!({"properties": {"desired": {"a": 1, "b": 2}}})),
    )
    .await;
    hub.call(
        Method::PATCH,
        "/twins/rep-2",
        Some(json!({"properties": {"desired": {"a": null}}})),
    )
    .await;
    let r = hub
        .call(
            Method::PUT,
            "/twins/rep-2",
            Some(json!({"properties": {"desired": {"c": 3}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let desired = &r.body["properties"]["desired"];
    assert!(desired.get("a").is_none() && desired.get("b").is_none());
    assert_eq!(desired["c"], 3);
    let last = next_event(&mut events, "replace notification", |e| match e {
        DeviceEvent::DesiredPatch { body, .. } if body.get("c").is_some() => Some(body),
        _ => None,
    })
    .await;
    assert!(
        last["b"].is_null(),
        "replace must tell the device that b is gone: {last}"
    );
}

#[tokio::test]
async fn oversized_tags_are_refused_and_nothing_changes() {
    let hub = TestHub::start().await;
    hub.create_device("big-1").await;
    let big = "x".repeat(4000);
    let tags = json!({"tags": {"a": big, "b": big, "c": big}});
    let r = hub.call(Method::PATCH, "/twins/big-1", Some(tags)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.error_code(), 403100);
    assert!(
        r.body["message"].as_str().unwrap().contains("8,192"),
        "{}",
        r.body
    );
    let twin = hub.call(Method::GET, "/twins/big-1", None).await;
    assert_eq!(twin.body["tags"], json!({}));
}

#[tokio::test]
async fn oversized_reported_patch_gets_an_error_status_over_mqtt() {
    let hub = TestHub::start().await;
    let (dev, _events, _) = hub.online_device("big-2").await;
    let chunk = "y".repeat(4000);
    let patch: serde_json::Map<String, serde_json::Value> =
        (0..9).map(|i| (format!("k{i}"), json!(chunk))).collect();
    let err = dev
        .report(&serde_json::Value::Object(patch))
        .await
        .unwrap_err();
    assert!(
        format!("{err}").contains("403"),
        "expected a 403 twin response, got {err}"
    );
    let ok = dev.report(&json!({"small": true})).await;
    assert!(
        ok.is_ok(),
        "the connection keeps working after a refused patch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_desired_patches_reach_the_device_in_version_order() {
    let hub = TestHub::start().await;
    let (_dev, mut events, _) = hub.online_device("des-order").await;
    let first = hub.call(Method::GET, "/twins/des-order", None).await;
    let start = first.body["properties"]["desired"]["$version"]
        .as_u64()
        .unwrap();
    const PATCHES: u64 = 60;
    let calls: Vec<_> = (0..PATCHES)
        .map(|i| {
            let (http, base, token) = (hub.http.clone(), hub.base.clone(), hub.token("service"));
            tokio::spawn(async move {
                let r = http
                    .patch(format!("{base}/twins/des-order"))
                    .header("Authorization", token)
                    .json(&json!({"properties": {"desired": {"n": i}}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    // A device that drops stale versions (as the simulator's and many firmwares do) must still
    // see every one: each $version once, in order.
    let mut seen = Vec::new();
    while seen.len() < PATCHES as usize {
        let v = next_event(&mut events, "desired patch", |e| match e {
            DeviceEvent::DesiredPatch { version, body } => {
                assert_eq!(body["$version"], version);
                Some(version)
            }
            _ => None,
        })
        .await;
        seen.push(v);
    }
    let expected: Vec<u64> = (start + 1..=start + PATCHES).collect();
    assert_eq!(seen, expected);
}
