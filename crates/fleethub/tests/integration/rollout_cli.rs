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

/// The fleet of `fleet`, with 2.1.0 in the firmware store; answers the spec file.
async fn hub_with_firmware(hub: &TestHub) -> (tempfile::TempDir, String) {
    fleet(hub).await;
    let (dir, file) = spec_file();
    let image = dir.path().join("fw-2.1.0.bin");
    std::fs::write(&image, vec![7u8; 4096]).unwrap();
    let (ok, _, err) = run_cli(
        hub,
        &["firmware", "upload", image.to_str().unwrap()],
        &["--version", "2.1.0", "--model", "esp32"],
    )
    .await;
    assert!(ok, "{err}");
    (dir, file)
}

#[tokio::test]
async fn the_rollout_commands_create_show_command_and_read_the_trail() {
    let hub = TestHub::start().await;
    let (_dir, file) = hub_with_firmware(&hub).await;
    // The example names its artifact by a placeholder SHA-256: the CLI finds 2.1.0's in the
    // store.
    let spec = std::fs::read_to_string(&file).unwrap().replace(
        "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e",
        "the upload of 2.1.0",
    );
    std::fs::write(&file, spec).unwrap();
    let f = file.as_str();
    let (ok, out, err) = run_cli(
        &hub,
        &["rollout", "create", "night", "--file", f],
        &["--json"],
    )
    .await;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["id"], "night");
    assert_eq!(created["status"], "running");
    assert_eq!(created["compliance"]["targeted"], 7);
    assert_eq!(
        created["spec"]["artifact"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    let (ok, out, err) = run_cli(&hub, &["rollout", "create", "night", "--file", f], &[]).await;
    assert!(!ok && out.is_empty());
    assert!(
        err.contains("409") && err.contains("already exists"),
        "{err}"
    );

    let (ok, out, err) = run_cli(&hub, &["rollout", "list"], &[]).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("id") && out.contains("night") && out.contains("canary running"),
        "{out}"
    );

    let (ok, out, err) = run_cli(&hub, &["rollout", "pause", "night"], &[]).await;
    assert!(ok, "{err}");
    assert!(out.contains("status      paused"), "{out}");
    let (ok, _, err) = run_cli(&hub, &["rollout", "pause", "night"], &[]).await;
    assert!(!ok);
    assert!(err.contains("409") && err.contains("paused"), "{err}");
    let (ok, out, err) = run_cli(&hub, &["rollout", "resume", "night"], &["--json"]).await;
    assert!(ok, "{err}");
    let resumed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resumed["status"], "running");

    let (ok, out, err) = run_cli(&hub, &["rollout", "show", "night"], &[]).await;
    assert!(ok, "{err}");
    for want in ["compliance  7 targeted", "canary", "[", "2% or 5 devices"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let (ok, out, err) = run_cli(&hub, &["rollout", "devices", "night"], &["--json"]).await;
    assert!(ok, "{err}");
    let devices: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(devices.as_array().unwrap().len(), 7);
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["wave"] == "boston"),
        "{devices}"
    );

    let (ok, out, err) = run_cli(&hub, &["rollout", "abort", "night"], &[]).await;
    assert!(ok, "{err}");
    assert!(out.contains("aborted"), "{out}");
    let (ok, out, err) = run_cli(&hub, &["rollout", "events", "night"], &["--json"]).await;
    assert!(ok, "{err}");
    let trail: Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for want in ["created", "wave_started", "paused", "resumed", "aborted"] {
        assert!(kinds.contains(&want), "{want} in {kinds:?}");
    }
    let (ok, out, err) = run_cli(&hub, &["rollout", "events", "night", "--top", "2"], &[]).await;
    assert!(ok, "{err}");
    assert!(out.contains("(more: --after"), "{out}");
    // watch ends at once on a finished rollout, with its last frame.
    let (ok, out, err) = run_cli(&hub, &["rollout", "watch", "night"], &[]).await;
    assert!(ok, "{err}");
    assert!(out.contains("rollout night to 2.1.0: aborted"), "{out}");
}

#[tokio::test]
async fn rest_refuses_bad_specs_unknown_ids_and_illegal_commands_with_their_codes() {
    let hub = TestHub::start().await;
    let (_dir, file) = hub_with_firmware(&hub).await;
    let mut spec: Value = {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        serde_json::to_value(parsed).unwrap()
    };
    let artifact = hub.call(Method::GET, "/v1/firmware/2.1.0", None).await;
    let sha = artifact.body["sha256"].clone();
    assert!(sha.is_string(), "{:?}", artifact.body);
    spec["artifact"]["sha256"] = sha;
    let create = |body: Value| async { hub.call(Method::POST, "/v1/rollouts", Some(body)).await };
    let code = |r: &fleethub_client::Reply| r.body["info"]["name"].clone();
    let mut bad = spec.clone();
    bad["soak"] = json!(5);
    let r = create(json!({"id": "r1", "spec": bad})).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (400, json!("RolloutInvalid")),
        "{:?}",
        r.body
    );
    assert!(
        r.body["message"].as_str().unwrap().contains("soak"),
        "{:?}",
        r.body
    );
    let r = create(json!({"id": "r1"})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = create(json!({"id": "r1", "spec": spec, "extra": 1})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let mut no_waves = spec.clone();
    no_waves["waves"] = json!([]);
    let r = create(json!({"id": "r1", "spec": no_waves})).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (400, json!("RolloutInvalid")),
        "{:?}",
        r.body
    );
    let r = create(json!({"id": "r1", "spec": spec})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    let r = hub.call(Method::GET, "/v1/rollouts/nope", None).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (404, json!("RolloutNotFound")),
        "{:?}",
        r.body
    );
    let r = hub
        .call(Method::POST, "/v1/rollouts/nope/pause", None)
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = hub.call(Method::POST, "/v1/rollouts/r1/resume", None).await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (409, json!("RolloutStateConflict")),
        "{:?}",
        r.body
    );
    let r = hub
        .call(
            Method::POST,
            "/v1/rollouts/r1/pause",
            Some(json!({"wave": "x"})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (400, json!("RolloutInvalid")),
        "{:?}",
        r.body
    );
    let r = hub
        .call(Method::POST, "/v1/rollouts/r1/explode", None)
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = hub
        .call(
            Method::POST,
            "/v1/rollouts/r1/rollback",
            Some(json!({"wave": "nowhere"})),
        )
        .await;
    assert!(r.status.is_client_error(), "{:?}", r.body);
    let r = hub
        .call(Method::GET, "/v1/rollouts/r1/events?after=0&top=1", None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["events"].as_array().unwrap().len(), 1);
    assert!(r.body["next"].is_i64(), "{:?}", r.body);
}
