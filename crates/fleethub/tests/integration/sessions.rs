//! Connections and sessions: persistent subscriptions, replacement, disabling.

use crate::harness::{eventually, next_event, refusal, TestHub};
use fleethub_sim::DeviceEvent;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn subscriptions_survive_a_reconnect_without_subscribing_again() {
    let hub = TestHub::start().await;
    let key = hub.create_device("s-1").await;
    let (dev, _events) = hub.device("s-1", &key).await;
    dev.subscribe(&["$iothub/twin/PATCH/properties/desired/#"])
        .await
        .unwrap();
    dev.disconnect().await;
    // Reconnect like the Python SDK does: same client id, clean_session=0, no SUBSCRIBE.
    let (_dev, mut events) = hub.device("s-1", &key).await;
    hub.call(
        Method::PATCH,
        "/twins/s-1",
        Some(json!({"properties": {"desired": {"x": 1}}})),
    )
    .await;
    let body = next_event(&mut events, "desired after reconnect", |e| match e {
        DeviceEvent::DesiredPatch { body, .. } => Some(body),
        _ => None,
    })
    .await;
    assert_eq!(body["x"], 1);
}

#[tokio::test]
async fn a_new_connection_with_the_same_id_closes_the_old_one() {
    let hub = TestHub::start().await;
    let key = hub.create_device("s-2").await;
    let (_old, mut old_events) = hub.device("s-2", &key).await;
    let (new, _new_events) = hub.device("s-2", &key).await;
    next_event(&mut old_events, "old connection closed", |e| {
        matches!(e, DeviceEvent::Disconnected { .. }).then_some(())
    })
    .await;
    assert!(new.report(&json!({"alive": true})).await.is_ok());
}

#[tokio::test]
async fn disabling_a_device_closes_its_connection_and_refuses_the_next() {
    let hub = TestHub::start().await;
    let (_dev, mut events, key) = hub.online_device("s-3").await;
    let body = json!({"deviceId": "s-3", "status": "disabled"});
    let token = hub.token("iothubowner");
    let r = hub
        .call_as(
            Method::PUT,
            "/devices/s-3",
            Some(body),
            &[("If-Match", "*")],
            Some(&token),
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::OK, "{}", r.body);
    next_event(&mut events, "disconnect on disable", |e| {
        matches!(e, DeviceEvent::Disconnected { .. }).then_some(())
    })
    .await;
    assert_eq!(
        refusal(hub.connect_options("s-3", &key)).await,
        5,
        "disabled: CONNACK 5 (not authorized)"
    );
    let stats_hub = &hub;
    eventually("offline in statistics", || async {
        let s = stats_hub
            .call(Method::GET, "/statistics/service", None)
            .await;
        (s.body["connectedDeviceCount"] == 0).then_some(())
    })
    .await;
}
