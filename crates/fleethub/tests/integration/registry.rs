//! The device registry over REST: create, read, update with etags, delete, bulk, statistics.

use crate::harness::{next_event, TestHub};
use fleethub_sim::DeviceEvent;
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

async fn bulk(hub: &TestHub, body: serde_json::Value) -> crate::harness::Reply {
    hub.call(Method::POST, "/devices", Some(body)).await
}

async fn keys_of(hub: &TestHub, id: &str) -> serde_json::Value {
    let r = hub.call(Method::GET, &format!("/devices/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["authentication"]["symmetricKey"].clone()
}

#[tokio::test]
async fn status_only_update_keeps_the_devices_keys() {
    // The Node SDK's Registry.update({deviceId, status}) once gave the device new keys.
    let hub = TestHub::start().await;
    hub.create_device("keep-keys").await;
    let before = keys_of(&hub, "keep-keys").await;
    let r = hub
        .call_as(
            Method::PUT,
            "/devices/keep-keys",
            Some(json!({"deviceId": "keep-keys", "status": "disabled"})),
            &[("If-Match", "*")],
            Some(&hub.token("iothubowner")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "disabled");
    assert_eq!(keys_of(&hub, "keep-keys").await, before);
    // Naming the type with empty keys keeps them too; naming a new key changes only that one.
    let new_secondary = "c2Vjb25kYXJ5LWtleS0xMjM0NTY3OA==";
    let r = hub
        .call_as(
            Method::PUT,
            "/devices/keep-keys",
            Some(
                json!({"deviceId": "keep-keys", "authentication": {"type": "sas",
                "symmetricKey": {"primaryKey": "", "secondaryKey": new_secondary}}}),
            ),
            &[("If-Match", "*")],
            Some(&hub.token("iothubowner")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "disabled", "status was not named: kept");
    let after = keys_of(&hub, "keep-keys").await;
    assert_eq!(after["primaryKey"], before["primaryKey"]);
    assert_eq!(after["secondaryKey"], new_secondary);
}

#[tokio::test]
async fn bulk_import_modes_are_matched_without_case_as_the_node_sdk_sends_them() {
    let hub = TestHub::start().await;
    for id in ["nm-1", "nm-2", "nm-3", "nm-4"] {
        hub.create_device(id).await;
    }
    let etag = |r: &crate::harness::Reply| r.body["etag"].as_str().unwrap().to_string();
    let e2 = etag(&hub.call(Method::GET, "/devices/nm-2", None).await);
    let e4 = etag(&hub.call(Method::GET, "/devices/nm-4", None).await);
    let r = bulk(
        &hub,
        json!([
            {"id": "nm-1", "importMode": "Update", "status": "disabled"},
            {"id": "nm-2", "importMode": "UpdateIfMatchETag", "eTag": e2, "status": "disabled"},
            {"id": "nm-3", "importMode": "Delete"},
            {"id": "nm-4", "importMode": "DeleteIfMatchETag", "eTag": e4},
            {"id": "nm-5", "importMode": "CREATE"},
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["isSuccessful"], true, "{}", r.body);
    for (id, status) in [
        ("nm-1", "disabled"),
        ("nm-2", "disabled"),
        ("nm-5", "enabled"),
    ] {
        let d = hub.call(Method::GET, &format!("/devices/{id}"), None).await;
        assert_eq!(d.body["status"], status, "{id}");
    }
    for id in ["nm-3", "nm-4"] {
        let d = hub.call(Method::GET, &format!("/devices/{id}"), None).await;
        assert_eq!(d.status, StatusCode::NOT_FOUND, "{id}");
    }
    let bad = bulk(&hub, json!([{"id": "nm-1", "importMode": "upsert"}])).await;
    let message = bad.body["errors"][0]["errorStatus"].as_str().unwrap();
    assert!(message.contains("unknown importMode 'upsert'"), "{message}");
    assert!(message.contains("createOrUpdate"), "{message}");
}

#[tokio::test]
async fn bulk_if_match_modes_take_the_node_sdks_lowercase_etag() {
    // The Node SDK's updateDevices/removeDevices send the device as read, so its `etag`, where
    // IoT Hub's schema says `eTag`: the hub answered "needs the device's eTag" to every entry.
    let hub = TestHub::start().await;
    for id in ["le-1", "le-2"] {
        hub.create_device(id).await;
    }
    let etag = |r: &crate::harness::Reply| r.body["etag"].as_str().unwrap().to_string();
    let e1 = etag(&hub.call(Method::GET, "/devices/le-1", None).await);
    let e2 = etag(&hub.call(Method::GET, "/devices/le-2", None).await);
    let r = bulk(
        &hub,
        json!([
            {"id": "le-1", "importMode": "UpdateIfMatchETag", "etag": e1, "status": "disabled"},
            {"id": "le-2", "importMode": "DeleteIfMatchETag", "etag": e2},
        ]),
    )
    .await;
    assert_eq!(r.body["isSuccessful"], true, "{}", r.body);
    let d = hub.call(Method::GET, "/devices/le-1", None).await;
    assert_eq!(d.body["status"], "disabled");
    let gone = hub.call(Method::GET, "/devices/le-2", None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    // The lowercase spelling is compared, not just accepted: a stale one is refused.
    let stale = bulk(
        &hub,
        json!([{"id": "le-1", "importMode": "DeleteIfMatchETag", "etag": e1}]),
    )
    .await;
    assert_eq!(stale.body["isSuccessful"], false, "{}", stale.body);
    assert_eq!(
        stale.body["errors"][0]["deviceId"], "le-1",
        "{}",
        stale.body
    );
    assert_eq!(
        hub.call(Method::GET, "/devices/le-1", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bulk_entry_without_keys_or_status_keeps_the_existing_ones() {
    let hub = TestHub::start().await;
    hub.create_device("bk-keep").await;
    let disable = bulk(
        &hub,
        json!([{"id": "bk-keep", "importMode": "update", "status": "disabled"}]),
    )
    .await;
    assert_eq!(disable.body["isSuccessful"], true, "{}", disable.body);
    let before = keys_of(&hub, "bk-keep").await;
    let r = bulk(&hub, json!([{"id": "bk-keep", "tags": {"site": "lab"}}])).await;
    assert_eq!(r.body["isSuccessful"], true, "{}", r.body);
    let d = hub.call(Method::GET, "/devices/bk-keep", None).await;
    assert_eq!(
        d.body["status"], "disabled",
        "an entry without status re-enabled the device"
    );
    assert_eq!(
        keys_of(&hub, "bk-keep").await,
        before,
        "an entry without keys replaced them"
    );
    let twin = hub.call(Method::GET, "/twins/bk-keep", None).await;
    assert_eq!(twin.body["tags"]["site"], "lab");
}

#[tokio::test]
async fn a_failed_bulk_entry_leaves_nothing_of_itself_behind() {
    let hub = TestHub::start().await;
    hub.create_device("bk-atomic").await;
    let before = hub.call(Method::GET, "/devices/bk-atomic", None).await;
    // The identity part is valid, the twin part is not (tags nest deeper than IoT Hub allows):
    // the entry fails whole, the disable does not stay committed.
    let mut deep = json!("leaf");
    for _ in 0..12 {
        deep = json!({ "d": deep });
    }
    let r = bulk(
        &hub,
        json!([{"id": "bk-atomic", "importMode": "update", "status": "disabled", "tags": {"t": deep}}]),
    )
    .await;
    assert_eq!(r.body["isSuccessful"], false, "{}", r.body);
    assert_eq!(r.body["errors"][0]["deviceId"], "bk-atomic");
    let after = hub.call(Method::GET, "/devices/bk-atomic", None).await;
    assert_eq!(after.body["status"], "enabled");
    assert_eq!(
        after.body["etag"], before.body["etag"],
        "the failed entry changed the device"
    );
}

#[tokio::test]
async fn bulk_delete_and_disable_close_the_devices_sessions() {
    let hub = TestHub::start().await;
    let (_a, mut a_events, _) = hub.online_device("bk-del").await;
    let (_b, mut b_events, _) = hub.online_device("bk-off").await;
    let r = bulk(
        &hub,
        json!([
            {"id": "bk-del", "importMode": "delete"},
            {"id": "bk-off", "importMode": "update", "status": "disabled"},
        ]),
    )
    .await;
    assert_eq!(r.body["isSuccessful"], true, "{}", r.body);
    for events in [&mut a_events, &mut b_events] {
        next_event(events, "connection closed", |e| {
            matches!(e, DeviceEvent::Disconnected { .. }).then_some(())
        })
        .await;
    }
    // The deleted id's persisted session (its subscriptions) went with it.
    let session = hub.running.hub.load_session("bk-del").await.unwrap();
    assert!(
        session.is_none(),
        "a re-created id would inherit {session:?}"
    );
}

#[tokio::test]
async fn a_desired_change_by_bulk_import_is_pushed_to_the_connected_device() {
    let hub = TestHub::start().await;
    let (_dev, mut events, _) = hub.online_device("bk-push").await;
    let r = bulk(
        &hub,
        json!([{"id": "bk-push", "importMode": "updateTwin",
                "properties": {"desired": {"interval": 60}}}]),
    )
    .await;
    assert_eq!(r.body["isSuccessful"], true, "{}", r.body);
    let body = next_event(&mut events, "desired patch from bulk import", |e| match e {
        DeviceEvent::DesiredPatch { body, .. } => Some(body),
        _ => None,
    })
    .await;
    assert_eq!(body["interval"], 60);
}
