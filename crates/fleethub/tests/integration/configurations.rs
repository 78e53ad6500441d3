//! Configurations end to end: application survives `kill -9` part-way, and the CLI creates,
//! lists, shows and deletes.

use crate::harness::{eventually, spawn_hub_with};
use serde_json::{json, Value};

const DEVICES: usize = 1000;

fn group(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "a"
    } else {
        "b"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_killed_mid_application_ends_correct_and_patches_each_twin_once() {
    let dir = tempfile::tempdir().unwrap();
    // A paced application, so the kill lands part-way.
    let args = [
        "--https-port",
        "0",
        "--mqtt-port",
        "0",
        "--configuration-rate",
        "100",
    ];
    let hub = spawn_hub_with(dir.path(), &args, None);
    let https = hub.ready["httpsPort"].as_u64().unwrap().to_string();
    let rest = hub.client();
    for chunk in 0..DEVICES / 100 {
        let entries: Vec<Value> = (chunk * 100..(chunk + 1) * 100)
            .map(|i| {
                json!({
                    "id": format!("kc-{i:04}"),
                    "importMode": "create",
                    "tags": { "group": group(i) },
                })
            })
            .collect();
        let result = rest.bulk(&entries).await.unwrap();
        assert!(result.is_successful, "{:?}", result.errors);
    }
    let config = json!({
        "content": { "deviceContent": { "properties.desired.mark": "cfg-1" } },
        "targetCondition": "tags.group = 'a'",
        "priority": 1,
    });
    rest.put_configuration("crash-config", &config, None)
        .await
        .unwrap();
    let applied = |c: &Value| c["systemMetrics"]["results"]["appliedCount"].as_u64();
    let before = eventually("the application to be part-way", || async {
        let c = rest.configuration("crash-config").await.ok().flatten()?;
        applied(&c).filter(|n| *n >= 100)
    })
    .await;
    let mut hub = hub;
    hub.child.kill().unwrap(); // SIGKILL, mid-application
    hub.child.wait().unwrap();
    assert!(before < (DEVICES / 2) as u64, "the kill came after the end");

    let args = [
        "--https-port",
        &https,
        "--mqtt-port",
        "0",
        "--configuration-rate",
        "100",
    ];
    let hub2 = spawn_hub_with(dir.path(), &args, None);
    let rest = hub2.client();
    let c = eventually("the resumed application to finish", || async {
        let c = rest.configuration("crash-config").await.ok().flatten()?;
        (applied(&c) == Some((DEVICES / 2) as u64)).then_some(c)
    })
    .await;
    assert_eq!(c["systemMetrics"]["results"]["targetedCount"], DEVICES / 2);
    for i in 0..DEVICES {
        let id = format!("kc-{i:04}");
        let twin = rest.twin(&id).await.unwrap().unwrap();
        let desired = &twin["properties"]["desired"];
        if group(i) == "a" {
            assert_eq!(desired["mark"], "cfg-1", "{id} was skipped: {desired}");
            assert_eq!(
                desired["$version"], 2,
                "{id}: patched more than once: {desired}"
            );
            assert_eq!(twin["configurations"]["crash-config"]["status"], "Applied");
        } else {
            assert_eq!(desired["$version"], 1, "{id} is not targeted: {desired}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_shows_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--https-port", "0", "--mqtt-port", "0"];
    let hub = spawn_hub_with(dir.path(), &args, None);
    let rest = hub.client();
    let entry = json!({"id": "cli-1", "importMode": "create", "tags": {"env": "prod"}});
    rest.bulk(&[entry]).await.unwrap();
    let ready = dir.path().join("ready.json");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleethub"))
            .arg("config")
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), text, err)
    };
    let (ok, out, err) = cli(&[
        "create",
        "prod-interval",
        "--target",
        "tags.env = 'prod'",
        "--priority",
        "5",
        "--set",
        "properties.desired.interval=60",
        "--json",
    ]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["priority"], 5);
    eventually("the device to be configured", || async {
        let twin = rest.twin("cli-1").await.ok().flatten()?;
        (twin["properties"]["desired"]["interval"] == 60).then_some(())
    })
    .await;
    let (ok, out, err) = cli(&["list"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("id"), "{out}");
    assert!(lines[1].starts_with("prod-interval  5"), "{out}");
    let (ok, out, err) = cli(&["show", "prod-interval"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("set                 properties.desired.interval = 60"),
        "{out}"
    );
    let (ok, _, err) = cli(&[
        "create",
        "prod-interval",
        "--set",
        "properties.reported.x=1",
    ]);
    assert!(!ok, "a path outside properties.desired. is refused");
    assert!(err.contains("properties.desired."), "{err}");
    let (ok, out, err) = cli(&["delete", "prod-interval"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deleted prod-interval");
    let (ok, _, err) = cli(&["show", "prod-interval"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
}
