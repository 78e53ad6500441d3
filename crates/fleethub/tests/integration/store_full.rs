//! A full store (disk full, or the `--store-max-mb` limit, which fails the same way inside
//! SQLite) answers a retryable 503 that says so, keeps serving reads, and takes writes again
//! once space is freed.

use crate::harness::TestHub;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Disk full answered 500 ServerError, which the SDKs do not retry and which said nothing an
/// operator could act on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_full_answers_503_store_is_full_and_recovers_after_space_is_freed() {
    let hub = TestHub::start_with(|cfg| cfg.store_max_mb = Some(1)).await;
    let blob = "x".repeat(6_000);
    let mut created = Vec::new();
    let refusal = loop {
        assert!(created.len() < 2_000, "the store never filled");
        let id = format!("fill{}", created.len());
        let body = json!({"deviceId": id, "tags": {"blob": blob}});
        let r = hub
            .call(Method::PUT, &format!("/devices/{id}"), Some(body))
            .await;
        match r.status {
            StatusCode::OK => created.push(id),
            _ => break r,
        }
    };

    assert_eq!(
        refusal.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refusal.body
    );
    assert_eq!(refusal.error_code(), 503001, "{}", refusal.body);
    assert_eq!(
        refusal.headers["iothub-errorcode"], "ServiceUnavailable",
        "the Node SDK raises its retryable ServiceUnavailableError"
    );
    let message = refusal.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("store is full") && message.contains("retry"),
        "{message}"
    );

    // What was acknowledged is still there, and reads go on.
    let first = hub
        .call(Method::GET, &format!("/devices/{}", created[0]), None)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let stats = hub.call(Method::GET, "/statistics/devices", None).await;
    assert_eq!(
        stats.body["totalDeviceCount"],
        created.len(),
        "{}",
        stats.body
    );

    // The operator frees space (here: deletes devices); the same request then succeeds.
    for id in &created[..created.len() / 2] {
        let r = hub
            .call(Method::DELETE, &format!("/devices/{id}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    }
    let retry = hub
        .call(
            Method::PUT,
            "/devices/after-space",
            Some(json!({"deviceId": "after-space", "tags": {"blob": blob}})),
        )
        .await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
}
