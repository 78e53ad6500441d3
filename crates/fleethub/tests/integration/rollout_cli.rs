//! `fleethub rollout plan` and `rehearse` against a real hub's registry: the devices a rollout
//! file targets are read with the hub's queries and the rollout is played out before anything
//! moves.

use crate::harness::{run_cli, TestHub};
use axum::http::Method;
use serde_json::{json, Value};

const SPEC: &str = include_str!("../../../../examples/rollouts/night.toml");

async fn fleet(hub: &TestHub) {
    let devices = [
        ("office-1", "canary", "newyork", "America/New_York"),
        ("office-2", "canary", "newyork", "America/New_York"),
        ("boston-1", "stable", "boston", "America/New_York"),
        ("boston-2", "stable", "boston", "America/New_York"),
        ("boston-3", "stable", "boston", "America/New_York"),
        ("seattle-1", "stable", "seattle", "America/Los_Angeles"),
        ("seattle-2", "stable", "seattle", "America/Los_Angeles"),
    ];
    for (id, ring, city, tz) in devices {
        hub.create_device(id).await;
        let tags = json!({"tags": {"product": "aq-sensor", "ring": ring, "city": city, "tz": tz}});
        let r = hub
            .call(Method::PATCH, &format!("/twins/{id}"), Some(tags))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // Not targeted.
    hub.create_device("lamp-1").await;
}

/// The example rollout in a file of its own.
fn spec_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("night.toml");
    std::fs::write(&file, SPEC).unwrap();
    let file = file.to_str().unwrap().to_string();
    (dir, file)
}

#[tokio::test]
async fn plan_says_which_wave_takes_each_device_and_when() {
    let hub = TestHub::start().await;
    fleet(&hub).await;
    let (_dir, file) = spec_file();
    let file = file.as_str();
    let start = "2026-12-02T17:00:00Z";
    let (ok, out, err) = run_cli(
        &hub,
        &["rollout", "plan", "night", "--file", file, "--start", start],
        &["--json"],
    )
    .await;
    assert!(ok, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let waves = plan["waves"].as_array().unwrap();
    let row = |name: &str| waves.iter().find(|w| w["wave"] == name).unwrap().clone();
    assert_eq!(row("canary")["devices"], 2);
    assert_eq!(row("boston")["devices"], 3);
    assert_eq!(row("rest")["devices"], 2);
    // 02:00 in New York and in Seattle, the next night; Boston after the canary's soak.
    assert_eq!(row("canary")["first_push"], "2026-12-03T07:00:00Z");
    assert_eq!(row("rest")["first_push"], "2026-12-03T10:00:00Z");
    let boston = row("boston")["first_push"].as_str().unwrap().to_string();
    assert!(
        boston.as_str() > "2026-12-03T07:30:00Z" && boston.as_str() < "2026-12-03T09:00:00Z",
        "{boston}"
    );
    let ids: Vec<&str> = plan["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 7, "lamp-1 is not targeted: {ids:?}");

    let (ok, out, err) = run_cli(
        &hub,
        &["rollout", "plan", "night", "--file", file, "--start", start],
        &["--devices"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("canary") && out.contains("2026-12-03 07:00 UTC (+14h)"),
        "{out}"
    );
    assert!(out.contains("seattle-2"), "{out}");
}

#[tokio::test]
async fn rehearse_reports_a_tripped_gate_and_a_bad_file_is_named() {
    let hub = TestHub::start().await;
    fleet(&hub).await;
    let (dir, file) = spec_file();
    let file = file.as_str();
    let args = [
        "rollout",
        "rehearse",
        "night",
        "--file",
        file,
        "--start",
        "2026-12-02T17:00:00Z",
        "--wave-failure-rate",
        "boston=1",
    ];
    let (ok, out, err) = run_cli(&hub, &args, &["--json"]).await;
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["status"], "completed");
    let tripped: Vec<&Value> = r["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "gate_tripped")
        .collect();
    assert_eq!(tripped.len(), 1, "{r:#}");
    assert_eq!(tripped[0]["wave"], "boston");
    let status = |w: usize| r["waves"][w]["status"].clone();
    assert_eq!(
        [status(0), status(1), status(2)],
        [json!("passed"), json!("rolled_back"), json!("passed")]
    );
    let (ok, out, err) = run_cli(&hub, &args, &[]).await;
    assert!(ok, "{err}");
    assert!(out.contains("wave boston tripped"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, SPEC.replace("soak_secs", "soak")).unwrap();
    let (ok, _, err) = run_cli(
        &hub,
        &["rollout", "plan", "night", "--file", bad.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("bad.toml") && err.contains("soak"), "{err}");
}
