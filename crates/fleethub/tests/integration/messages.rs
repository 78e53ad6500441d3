//! Telemetry (stored once per message id) and cloud-to-device messages (durable, acknowledged).

use crate::harness::{eventually, next_event, TestHub};
use bytes::Bytes;
use fleethub_sim::DeviceEvent;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn telemetry_is_stored_once_per_message_id_with_its_properties() {
    let hub = TestHub::start().await;
    let (dev, _events, _) = hub.online_device("t-1").await;
    let props = vec![
        ("$.ct".to_string(), "application/json".to_string()),
        ("alert".to_string(), "high temp".to_string()),
    ];
    for _ in 0..2 {
        dev.send_telemetry("mid-1", &props, Bytes::from_static(b"{\"temp\":21.5}"))
            .await
            .unwrap();
    }
    dev.send_telemetry("mid-2", &[], Bytes::from_static(b"plain"))
        .await
        .unwrap();
    let page = hub.client.telemetry(Some("t-1"), 0).await.unwrap();
    let items = &page.items;
    assert_eq!(items.len(), 2, "duplicate mid stored twice: {items:?}");
    assert_eq!(items[0].message_id, "mid-1");
    assert_eq!(items[0].properties["alert"], "high temp");
    assert_eq!(items[0].body, "{\"temp\":21.5}");
    assert_eq!(
        (items[1].body.as_str(), items[1].body_encoding.as_str()),
        ("plain", "utf-8")
    );
    // `next` reads on after the last message: nothing new yet.
    assert_eq!(page.next, items[1].seq);
    let later = hub.client.telemetry(Some("t-1"), page.next).await.unwrap();
    assert!(later.items.is_empty(), "{later:?}");
}

#[tokio::test]
async fn c2d_waits_for_an_offline_device_and_is_delivered_once_acknowledged() {
    let hub = TestHub::start().await;
    let key = hub.create_device("c-1").await;
    let r = hub
        .call(
            Method::POST,
            "/v1/devices/c-1/messages",
            Some(json!({"body": "hello", "properties": {"color": "red blue"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (dev, mut events) = hub.device("c-1", &key).await;
    dev.subscribe(&["devices/c-1/messages/devicebound/#"])
        .await
        .unwrap();
    let (props, body) = next_event(&mut events, "c2d message", |e| match e {
        DeviceEvent::C2d { topic_props, body } => Some((topic_props, body)),
        _ => None,
    })
    .await;
    assert_eq!(&body[..], b"hello");
    assert!(
        props.iter().any(|(k, v)| k == "color" && v == "red blue"),
        "{props:?}"
    );
    assert!(props.iter().any(|(k, _)| k == "$.mid"), "{props:?}");
    let hub_ref = &hub.running.hub;
    eventually("c2d completion", || async {
        let text = hub_ref.metrics_text();
        text.contains("fleethub_c2d_delivered_total 1")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn c2d_to_an_unknown_device_is_404() {
    let hub = TestHub::start().await;
    let r = hub
        .call(
            Method::POST,
            "/v1/devices/nobody/messages",
            Some(json!({"body": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), 404001);
}
