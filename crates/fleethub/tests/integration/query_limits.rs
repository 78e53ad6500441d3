//! Regression tests for "one request kills the hub": queries nested or sized past the bounds
//! answer 400 InvalidQuery naming the limit, at job creation too, and the hub keeps answering.

use crate::harness::TestHub;
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn query_as(hub: &TestHub, text: &str, policy: &str) -> crate::harness::Reply {
    let token = hub.token(policy);
    hub.call_as(
        Method::POST,
        "/devices/query",
        Some(json!({ "query": text })),
        &[],
        Some(&token),
    )
    .await
}

async fn assert_still_answers(hub: &TestHub) {
    let r = query_as(
        hub,
        "SELECT * FROM devices WHERE tags.a = 1",
        "registryRead",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn eight_hundred_parentheses_from_registry_read_get_400_not_a_crash() {
    let hub = TestHub::start().await;
    hub.create_device("ql-1").await;
    let text = format!(
        "SELECT * FROM devices WHERE {}tags.a = 1{}",
        "(".repeat(800),
        ")".repeat(800)
    );
    let r = query_as(&hub, &text, "registryRead").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.error_code(), 400020);
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("query nests 801 levels deep; at most 32"),
        "{message}"
    );
    assert_still_answers(&hub).await;
}

#[tokio::test]
async fn large_queries_get_400_naming_the_limit_instead_of_sqlite_errors() {
    let hub = TestHub::start().await;
    let ors = vec!["tags.a = 1"; 5000].join(" OR ");
    let ids: Vec<String> = (0..50_000).map(|i| format!("'d{i}'")).collect();
    let items = vec!["1"; 5000].join(", ");
    let nested = format!("{}tags.a{} = 'x'", "LOWER(".repeat(1000), ")".repeat(1000));
    let texts = [
        format!("SELECT * FROM devices WHERE {ors}"),
        format!(
            "SELECT * FROM devices WHERE deviceId IN [{}]",
            ids.join(",")
        ),
        format!("SELECT {items} FROM devices"),
        format!("SELECT * FROM devices WHERE {nested}"),
        format!(
            "SELECT * FROM devices WHERE {}tags.a = 1",
            "NOT ".repeat(2000)
        ),
    ];
    for text in texts {
        let r = query_as(&hub, &text, "registryRead").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.error_code(), 400020, "{}", r.body);
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("at most"), "{message}");
        assert!(message.len() < 400, "the error does not echo the query");
    }
    // At the limits the hub answers in a debug build on a tokio worker's stack.
    let deep = format!("{}tags.a{} = 'x'", "LOWER(".repeat(31), ")".repeat(31));
    let r = query_as(
        &hub,
        &format!("SELECT * FROM devices WHERE {deep}"),
        "registryRead",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ors = vec!["tags.a = 1"; 500].join(" OR ");
    let r = query_as(
        &hub,
        &format!("SELECT * FROM devices WHERE {ors}"),
        "registryRead",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_still_answers(&hub).await;
}

#[tokio::test]
async fn a_job_with_a_thousand_parenthesis_condition_is_refused_at_creation() {
    let hub = TestHub::start().await;
    hub.create_device("ql-job").await;
    let body = json!({
        "jobId": "deep",
        "type": "scheduleUpdateTwin",
        "queryCondition": format!("{}tags.a = 1{}", "(".repeat(1000), ")".repeat(1000)),
        "updateTwin": { "etag": "*", "properties": { "desired": { "x": 1 } } },
    });
    let r = hub.call(Method::PUT, "/jobs/v2/deep", Some(body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.error_code(), 400020);
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("1,001 levels deep"), "{message}");
    let r = hub.call(Method::GET, "/jobs/v2/deep", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "no job was stored");
    assert_still_answers(&hub).await;
}
