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
                        // Random by design: device keys, and a firmware store's signing key,
                        // signatures and the URLs they sign.
                        "primaryKey" | "secondaryKey" | "generationId" | "signature" | "keyId"
                        | "publicKeyPem" | "url" => *v = Value::String(format!("<{k}>")),
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

/// Polls `GET /jobs/v2/{id}` until the job ends (a deadline, not a sleep, bounds the wait).
async fn finished_job(api: &TestApi, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let job = call(api, Method::GET, &format!("/jobs/v2/{id}"), None).await;
        if job["body"]["endTime"].is_string() {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never ended: {job}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn query_rows_job_pages_and_the_change_feed() {
    let api = api().await;
    let device = json!({ "deviceId": "snap-2", "authentication": { "type": "sas" } });
    call(&api, Method::PUT, "/devices/snap-2", Some(device)).await;
    let patch = json!({ "tags": { "city": "oslo" }, "properties": { "desired": { "led": 1 } } });
    call(&api, Method::PATCH, "/twins/snap-2", Some(patch)).await;
    api.hub
        .device_report("snap-2", br#"{"fw":"1.0"}"#)
        .await
        .unwrap();
    insta::assert_json_snapshot!(
        "query_twins",
        call(
            &api,
            Method::POST,
            "/devices/query",
            Some(json!({ "query": "SELECT * FROM devices" }))
        )
        .await
    );
    let twin_job = json!({
        "jobId": "snap-twin",
        "type": "scheduleUpdateTwin",
        "queryCondition": "*",
        "updateTwin": { "etag": "*", "tags": { "wave": 1 } },
        "startTime": HUB_TIME,
        "maxExecutionTimeInSeconds": 60,
    });
    call(&api, Method::PUT, "/jobs/v2/snap-twin", Some(twin_job)).await;
    insta::assert_json_snapshot!("job_completed", finished_job(&api, "snap-twin").await);
    let method_job = json!({
        "jobId": "snap-method",
        "type": "scheduleDeviceMethod",
        "queryCondition": "deviceId = 'snap-2'",
        "cloudToDeviceMethod": {
            "methodName": "reboot",
            "payload": { "delay": 5 },
            "responseTimeoutInSeconds": 5,
            "connectTimeoutInSeconds": 0
        },
        "rateControl": { "maxPerSecond": 10 },
        "startTime": HUB_TIME,
        "maxExecutionTimeInSeconds": 60,
    });
    insta::assert_json_snapshot!(
        "method_job_created",
        call(&api, Method::PUT, "/jobs/v2/snap-method", Some(method_job)).await
    );
    finished_job(&api, "snap-method").await;
    insta::assert_json_snapshot!(
        "job_page",
        call(&api, Method::GET, "/jobs/v2/query?pageSize=1", None).await
    );
    insta::assert_json_snapshot!(
        "query_device_jobs",
        call(
            &api,
            Method::POST,
            "/devices/query",
            Some(json!({ "query": "SELECT * FROM devices.jobs" }))
        )
        .await
    );
    insta::assert_json_snapshot!(
        "events_page",
        call(&api, Method::GET, "/v1/events?limit=20", None).await
    );
}

#[tokio::test]
async fn firmware_bodies() {
    let at = chrono::DateTime::parse_from_rfc3339(HUB_TIME)
        .unwrap()
        .to_utc();
    let api = TestApi::start_with_firmware(Arc::new(fleethub_core::ManualClock::new(at))).await;
    let expiry = at.timestamp() as u64 + 3600;
    let token = api.token_expiring("iothubowner", expiry);
    let device = json!({ "deviceId": "snap-fw", "authentication": { "type": "sas" } });
    call(&api, Method::PUT, "/devices/snap-fw", Some(device)).await;
    let uploaded = api
        .raw(
            Method::POST,
            "/v1/firmware?version=2.1.0&model=esp32-s3,esp32-c3&notes=snapshot",
            Some(&token),
            "firmware image bytes".repeat(10),
            &[],
        )
        .await;
    insta::assert_json_snapshot!(
        "firmware_uploaded",
        json!({ "status": uploaded.status.as_u16(), "body": redact(uploaded.json()) })
    );
    insta::assert_json_snapshot!(
        "firmware_key",
        call(&api, Method::GET, "/v1/firmware/key", None).await
    );
    let minted = call(
        &api,
        Method::POST,
        "/v1/firmware/2.1.0/url?deviceId=snap-fw&expiresInSeconds=600",
        None,
    )
    .await;
    insta::assert_json_snapshot!("firmware_url", minted);
    let sha = uploaded.json()["sha256"].as_str().unwrap().to_string();
    let url = api
        .call(
            Method::POST,
            "/v1/firmware/2.1.0/url?deviceId=snap-fw",
            Some(&token),
            None,
            &[],
        )
        .await
        .json()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let path = &url[url.find("/v1/").unwrap()..];
    let download = api
        .call(Method::GET, path, None, None, &[("range", "bytes=0-9")])
        .await;
    assert_eq!(download.status.as_u16(), 206, "{}", download.text);
    insta::assert_json_snapshot!(
        "firmware_shown",
        call(&api, Method::GET, &format!("/v1/firmware/{sha}"), None).await
    );
    insta::assert_json_snapshot!(
        "firmware_list",
        call(&api, Method::GET, "/v1/firmware", None).await
    );
}
