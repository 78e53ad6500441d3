//! `fleethub query` against a running hub, as an operator runs it.

use crate::harness::{run_cli, TestHub};
use axum::http::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn the_query_command_follows_pages_and_prints_json() {
    let hub = TestHub::start().await;
    for (id, city) in [
        ("cli-1", "boston"),
        ("cli-2", "denver"),
        ("cli-3", "boston"),
    ] {
        hub.create_device(id).await;
        let r = hub
            .call(
                Method::PATCH,
                &format!("/twins/{id}"),
                Some(json!({"tags": {"city": city}})),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let (ok, out, err) = run_cli(
        &hub,
        &[
            "query",
            "SELECT deviceId FROM devices WHERE tags.city = 'boston'",
            "--page-size",
            "1",
            "--json",
        ],
        &[],
    )
    .await;
    assert!(ok, "{err}");
    let items: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(items, json!([{"deviceId": "cli-1"}, {"deviceId": "cli-3"}]));

    // The hub's flags may come first as well.
    let (ok, out, _) = run_cli(
        &hub,
        &["query"],
        &[
            "SELECT tags.city AS city, COUNT() AS n FROM devices GROUP BY tags.city",
            "--lines",
        ],
    )
    .await;
    assert!(ok);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            json!({"city": "boston", "n": 2}),
            json!({"city": "denver", "n": 1})
        ]
    );
}

#[tokio::test]
async fn a_bad_query_fails_with_the_position_marked() {
    let hub = TestHub::start().await;
    let query = "SELECT * FROM devices WHERE tags.city = ";
    let (ok, _, err) = run_cli(&hub, &["query", query], &[]).await;
    assert!(!ok);
    assert!(
        err.contains("InvalidQuery") || err.contains("line 1, column"),
        "{err}"
    );
    assert!(err.contains('^'), "{err}");
}
