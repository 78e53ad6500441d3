//! The change feed: `GET /v1/events` pages committed changes by cursor, with registryRead.

use crate::support::TestApi;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

fn kinds_and_devices(events: &Value) -> Vec<(String, String)> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let device = e["deviceId"].as_str().unwrap_or_default().to_string();
            (e["kind"].as_str().unwrap().to_string(), device)
        })
        .collect()
}

#[tokio::test]
async fn the_event_feed_lists_changes_in_order_and_pages_by_cursor() {
    let api = TestApi::start().await;
    api.create_device("e1").await;
    api.create_device("e2").await;
    api.hub
        .device_report("e1", br#"{"fw":"1.0"}"#)
        .await
        .unwrap();
    let patch = json!({ "properties": { "desired": { "led": 1 } } });
    let r = api.owner(Method::PATCH, "/twins/e2", Some(patch)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    api.owner(Method::DELETE, "/devices/e1", None).await;

    let reader = api.token("registryRead");
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = api
            .call(
                Method::GET,
                &format!("/v1/events?limit=2&after={after}"),
                Some(&reader),
                None,
                &[],
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let body = page.json();
        let events = body["events"].as_array().unwrap().clone();
        assert!(events.len() <= 2, "{body}");
        after = body["next"].as_str().unwrap().to_string();
        if events.is_empty() {
            break;
        }
        all.extend(events);
    }
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let pair = |k: &str, d: &str| (k.to_string(), d.to_string());
    assert_eq!(
        kinds_and_devices(&Value::Array(all.clone())),
        vec![
            pair("device.created", "e1"),
            pair("device.created", "e2"),
            pair("twin.reported", "e1"),
            pair("twin.updated", "e2"),
            pair("device.deleted", "e1"),
        ]
    );
    assert_eq!(all[2]["body"]["version"], 2, "{}", all[2]);
    assert_eq!(after, seqs.last().unwrap().to_string());
}

#[tokio::test]
async fn the_event_feed_needs_registry_read_and_a_valid_cursor_and_limit() {
    let api = TestApi::start().await;
    api.call(Method::GET, "/v1/events", None, None, &[])
        .await
        .assert_error(401, 401002, "IotHubUnauthorizedAccess");
    let service = api.token("service");
    api.call(Method::GET, "/v1/events", Some(&service), None, &[])
        .await
        .assert_error(401, 401003, "IotHubUnauthorized");
    let write = api.token("registryReadWrite");
    let ok = api
        .call(Method::GET, "/v1/events", Some(&write), None, &[])
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.json(), json!({ "events": [], "next": "0" }));

    let bad_cursor = api.owner(Method::GET, "/v1/events?after=abc", None).await;
    bad_cursor.assert_error(400, 400004, "ArgumentInvalid");
    assert!(bad_cursor.text.contains("`next`"), "{}", bad_cursor.text);
    let too_many = api.owner(Method::GET, "/v1/events?limit=1001", None).await;
    too_many.assert_error(400, 400004, "ArgumentInvalid");
    assert!(too_many.text.contains("1 to 1000"), "{}", too_many.text);
}
