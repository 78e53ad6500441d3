//! The device registry over REST: create, read, update with etags, delete, bulk, statistics.

use crate::harness::TestHub;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn create_generates_keys_and_answers_200_then_duplicate_is_409() {
    let hub = TestHub::start().await;
    let r = hub.call(Method::PUT, "/devices/sensor-1", Some(json!({"deviceId": "sensor-1", "authentication": {"type": "sas", "symmetricKey": {}}}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "enabled");
    assert!(
        r.body["authentication"]["symmetricKey"]["secondaryKey"]
            .as_str()
            .unwrap()
            .len()
            >= 40
    );
    let again = hub
        .call(
            Method::PUT,
            "/devices/sensor-1",
            Some(json!({"deviceId": "sensor-1"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), 409001);
    assert_eq!(again.headers["iothub-errorcode"], "DeviceAlreadyExists");
}

#[tokio::test]
async fn update_needs_the_current_etag_quoted_or_not() {
    let hub = TestHub::start().await;
    hub.create_device("d1").await;
    let got = hub.call(Method::GET, "/devices/d1", None).await;
    let etag = got.body["etag"].as_str().unwrap().to_string();
    let body = json!({"deviceId": "d1", "status": "disabled"});
    let stale = hub
        .call_as(
            Method::PUT,
            "/devices/d1",
            Some(body.clone()),
            &[("If-Match", "\"AAAAAAAAAAk=\"")],
            Some(&hub.token("iothubowner")),
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.error_code(), 412001);
    let quoted = format!("\"{etag}\"");
    let ok = hub
        .call_as(
            Method::PUT,
            "/devices/d1",
            Some(body),
            &[("If-Match", &quoted)],
            Some(&hub.token("iothubowner")),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["status"], "disabled");
    assert_ne!(ok.body["etag"], etag.as_str());
}

#[tokio::test]
async fn delete_answers_204_and_the_device_is_gone() {
    let hub = TestHub::start().await;
    hub.create_device("gone").await;
    let r = hub
        .call_as(
            Method::DELETE,
            "/devices/gone",
            None,
            &[("If-Match", "\"*\"")],
            Some(&hub.token("iothubowner")),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let missing = hub.call(Method::GET, "/devices/gone", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), 404001);
}

#[tokio::test]
async fn bulk_import_applies_good_entries_and_lists_each_bad_one() {
    let hub = TestHub::start().await;
    let body = json!([
        {"id": "bulk-1", "importMode": "create"},
        {"id": "bulk 2", "importMode": "create"},
        {"id": "bulk-3", "importMode": "create", "tags": {"city": "boston"}},
    ]);
    let r = hub.call(Method::POST, "/devices", Some(body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["isSuccessful"], false);
    let errors = r.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["deviceId"], "bulk 2");
    let twin = hub.call(Method::GET, "/twins/bulk-3", None).await;
    assert_eq!(twin.body["tags"]["city"], "boston");
    let stats = hub.call(Method::GET, "/statistics/devices", None).await;
    assert_eq!(stats.body["totalDeviceCount"], 2);
}

#[tokio::test]
async fn listing_and_statistics_follow_the_registry() {
    let hub = TestHub::start().await;
    for i in 0..5 {
        hub.create_device(&format!("list-{i}")).await;
    }
    let r = hub.call(Method::GET, "/devices?top=3", None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 3);
    let (_c, _e, _k) = hub.online_device("online-1").await;
    let s = hub.call(Method::GET, "/statistics/service", None).await;
    assert_eq!(s.body["connectedDeviceCount"], 1);
    let d = hub.call(Method::GET, "/statistics/devices", None).await;
    assert_eq!(d.body["enabledDeviceCount"], 6);
}
