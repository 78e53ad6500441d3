//! `fleethub query` against a running hub, as an operator runs it.

use crate::harness::TestHub;
use axum::http::Method;
use serde_json::{json, Value};
use std::process::Command;

async fn fleethub_query(hub: &TestHub, args: &[&str]) -> (bool, String, String) {
    let ca = hub.running.ca_file.clone().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleethub"));
    cmd.arg("query")
        .args(args)
        .arg("--hub")
        .arg(&hub.running.owner_connection_string)
        .arg("--ca")
        .arg(ca);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
    let (ok, out, err) = fleethub_query(
        &hub,
        &[
            "SELECT deviceId FROM devices WHERE tags.city = 'boston'",
            "--page-size",
            "1",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let items: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(items, json!([{"deviceId": "cli-1"}, {"deviceId": "cli-3"}]));

    let (ok, out, _) = fleethub_query(
        &hub,
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
    let (ok, _, err) = fleethub_query(&hub, &["SELECT * FROM devices WHERE tags.city = "]).await;
    assert!(!ok);
    assert!(
        err.contains("InvalidQuery") || err.contains("line 1, column"),
        "{err}"
    );
    assert!(err.contains('^'), "{err}");
}
