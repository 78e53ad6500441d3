//! The bodies the SDKs parse, pinned: a field renamed, dropped or retyped shows up here as a
//! snapshot diff before an SDK finds it. The hub runs on a manual clock so every timestamp is
//! fixed; values made at random (keys, generation ids) are replaced by their kind.

use crate::support::TestApi;
use axum::http::Method;
use serde_json::{json, Value};
use std::sync::Arc;

/// The hub clock of every snapshot.
const HUB_TIME: &str = "2031-01-02T03:04:05Z";

async fn api() -> TestApi {
    let at = chrono::DateTime::parse_from_rfc3339(HUB_TIME)
        .unwrap()
        .to_utc();
    TestApi::start_with_clock(Arc::new(fleethub_core::ManualClock::new(at))).await
}

/// Calls as `iothubowner` with a token valid by the hub's clock.
async fn call(api: &TestApi, method: Method, uri: &str, body: Option<Value>) -> Value {
    let expiry = chrono::DateTime::parse_from_rfc3339(HUB_TIME)
        .unwrap()
        .timestamp() as u64
        + 3600;
    let token = api.token_expiring("iothubowner", expiry);
    let reply = api.call(method, uri, Some(&token), body, &[]).await;
    json!({ "status": reply.status.as_u16(), "body": redact(reply.json()) })
}

/// Replaces what is random by design with a placeholder naming it.
fn redact(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match k.as_str() {
                        "primaryKey" | "secondaryKey" | "generationId" => {
                            *v = Value::String(format!("<{k}>"))
                        }
                        _ => walk(v),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

#[tokio::test]
async fn registry_and_twin_bodies() {
    let api = api().await;
    let device = json!({
        "deviceId": "snap-1",
        "status": "enabled",
        "authentication": { "symmetricKey": {}, "type": "sas" },
        "capabilities": { "iotEdge": false },
    });
    insta::assert_json_snapshot!(
        "device_created",
        call(&api, Method::PUT, "/devices/snap-1", Some(device)).await
    );
    let patch =
        json!({ "tags": { "city": "oslo" }, "properties": { "desired": { "interval": 60 } } });
    insta::assert_json_snapshot!(
        "twin_patched",
        call(&api, Method::PATCH, "/twins/snap-1", Some(patch)).await
    );
    insta::assert_json_snapshot!(
        "query_page",
        call(
            &api,
            Method::POST,
            "/devices/query",
            Some(json!({ "query": "SELECT deviceId, tags.city FROM devices" }))
        )
        .await
    );
    insta::assert_json_snapshot!(
        "statistics",
        call(&api, Method::GET, "/statistics/devices", None).await
    );
}

#[tokio::test]
async fn job_bodies() {
    let api = api().await;
    let job = json!({
        "jobId": "snap-job",
        "type": "scheduleUpdateTwin",
        "queryCondition": "tags.city = 'oslo'",
        "updateTwin": { "etag": "*", "properties": { "desired": { "fw": "2.0" } } },
        "startTime": "2031-01-02T04:00:00Z",
        "maxExecutionTimeInSeconds": 60,
    });
    insta::assert_json_snapshot!(
        "job_created",
        call(&api, Method::PUT, "/jobs/v2/snap-job", Some(job)).await
    );
    insta::assert_json_snapshot!(
        "job_cancelled",
        call(&api, Method::POST, "/jobs/v2/snap-job/cancel", None).await
    );
}

#[tokio::test]
async fn error_bodies() {
    let api = api().await;
    insta::assert_json_snapshot!(
        "error_device_not_found",
        call(&api, Method::GET, "/devices/nobody", None).await
    );
    insta::assert_json_snapshot!(
        "error_invalid_query",
        call(
            &api,
            Method::POST,
            "/devices/query",
            Some(json!({ "query": "SELECT * FROM devices WHERE" }))
        )
        .await
    );
}
