//! The operator CLI, `fleethub <noun> <verb>`, run as a process against a real hub: every
//! command's output is pinned in one transcript snapshot (ids, keys, times and ports redacted),
//! the profile `fleethub login` writes, and shell completions.

use crate::harness::{cli_command, next_event, TestHub};
use fleethub_sim::DeviceEvent;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

/// Runs `fleethub <args…> --hub … --ca …` and appends what a person would see to `transcript`.
async fn step(hub: &TestHub, transcript: &mut String, args: &[&str]) -> (bool, String) {
    let mut cmd = cli_command();
    cmd.args(args)
        .arg("--hub")
        .arg(&hub.running.owner_connection_string)
        .arg("--ca")
        .arg(hub.running.ca_file.clone().unwrap());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains('\'') {
                format!("\"{a}\"")
            } else if a.contains([' ', '{', '*']) {
                format!("'{a}'")
            } else {
                a.to_string()
            }
        })
        .collect();
    transcript.push_str(&format!("$ fleethub {}\n{stdout}", shown.join(" ")));
    if !stderr.is_empty() {
        transcript.push_str(&stderr);
    }
    if !out.status.success() {
        transcript.push_str(&format!("[exit {}]\n", out.status.code().unwrap_or(-1)));
    }
    transcript.push('\n');
    (out.status.success(), stdout)
}

/// Output with what changes from run to run replaced: timestamps (kept at their width so
/// tables stay aligned), keys, the hub's port.
fn redact(text: &str, port: u16) -> String {
    let text = text.replace(&format!("localhost:{port}"), "localhost:PORT");
    let mut out = redact_after(&text, "SharedAccessKey=", |c| c == ';' || c.is_whitespace());
    for key in [
        "\"primaryKey\": \"",
        "\"secondaryKey\": \"",
        "\"generationId\": \"",
    ] {
        out = redact_after(&out, key, |c| c == '"');
    }
    redact_times(&out)
}

/// Replaces what follows each `marker` up to `end` with `[redacted]`.
fn redact_after(text: &str, marker: &str, end: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        out.push_str(&rest[..at + marker.len()]);
        rest = &rest[at + marker.len()..];
        let stop = rest.find(&end).unwrap_or(rest.len());
        out.push_str("[redacted]");
        rest = &rest[stop..];
    }
    out.push_str(rest);
    out
}

/// `2026-12-02T19:06:50.7940153Z` (IoT Hub's format) becomes `YYYY-MM-DDThh:mm:ss.fffffffZ`,
/// and the rollout views' `….703Z` and `….703263302Z` the same way, each kept at its width so
/// tables stay aligned; IoT Hub's "never", `0001-01-01T00:00:00Z` (no fraction), stays.
fn redact_times(text: &str) -> String {
    const SHAPE: &str = "dddd-dd-ddTdd:dd:dd.";
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let candidate = bytes.get(i..i + SHAPE.len());
        let prefix = candidate.is_some_and(|c| {
            c.iter().zip(SHAPE.bytes()).all(|(b, s)| match s {
                b'd' => b.is_ascii_digit(),
                s => *b == s,
            })
        });
        let digits = if prefix {
            bytes[i + SHAPE.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        } else {
            0
        };
        if digits > 0 && bytes.get(i + SHAPE.len() + digits) == Some(&b'Z') {
            out.push_str("YYYY-MM-DDThh:mm:ss.");
            out.push_str(&"f".repeat(digits));
            out.push('Z');
            i += SHAPE.len() + digits + 1;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[tokio::test]
async fn every_command_prints_what_the_transcript_snapshot_holds() {
    let hub = TestHub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = String::new();
    let t = &mut t;

    // The registry.
    step(&hub, t, &["devices", "create", "boston-1"]).await;
    step(
        &hub,
        t,
        &[
            "devices", "create", "boston-2", "--status", "disabled", "--json",
        ],
    )
    .await;
    step(
        &hub,
        t,
        &[
            "devices",
            "create",
            "cam-1",
            "--auth",
            "x509",
            "--primary-thumbprint",
            "9F3C00AA11223344556677889900AABBCCDDEEFF",
        ],
    )
    .await;
    step(&hub, t, &["devices", "create", "boston-1"]).await;
    step(
        &hub,
        t,
        &[
            "devices",
            "update",
            "boston-2",
            "--status",
            "enabled",
            "--status-reason",
            "back in service",
        ],
    )
    .await;
    step(
        &hub,
        t,
        &[
            "devices",
            "update",
            "boston-2",
            "--status",
            "disabled",
            "--etag",
            "AAAAAAAAAAE=",
        ],
    )
    .await;
    step(&hub, t, &["devices", "show", "boston-2"]).await;
    step(&hub, t, &["devices", "show", "nope"]).await;

    // Twins.
    step(
        &hub,
        t,
        &[
            "twins",
            "patch",
            "boston-1",
            "--set",
            "tags.city=boston",
            "--set",
            "desired.config.interval=60",
        ],
    )
    .await;
    step(
        &hub,
        t,
        &[
            "twins",
            "patch",
            "boston-2",
            "--tags",
            "{\"city\": \"boston\", \"floor\": 3}",
        ],
    )
    .await;
    step(
        &hub,
        t,
        &["twins", "patch", "boston-2", "--set", "reported.x=1"],
    )
    .await;
    let replacement = dir.path().join("twin.json");
    std::fs::write(
        &replacement,
        json!({"tags": {"city": "denver"}, "properties": {"desired": {"mode": "eco"}}}).to_string(),
    )
    .unwrap();
    step(
        &hub,
        t,
        &[
            "twins",
            "replace",
            "cam-1",
            "--file",
            replacement.to_str().unwrap(),
        ],
    )
    .await;
    step(&hub, t, &["twins", "show", "cam-1"]).await;
    step(&hub, t, &["twins", "show", "boston-1", "--json"]).await;

    // Lists and queries.
    step(&hub, t, &["devices", "list"]).await;
    step(
        &hub,
        t,
        &[
            "devices",
            "list",
            "--where",
            "tags.city = 'boston'",
            "--limit",
            "1",
            "--json",
        ],
    )
    .await;
    step(
        &hub,
        t,
        &[
            "query",
            "SELECT tags.city AS city, COUNT() AS n FROM devices GROUP BY tags.city",
        ],
    )
    .await;
    step(
        &hub,
        t,
        &[
            "query",
            "SELECT deviceId FROM devices WHERE tags.city = 'boston'",
            "--json",
        ],
    )
    .await;
    step(&hub, t, &["query", "SELECT * FROM devices WHERE"]).await;

    // Messages and methods.
    step(
        &hub,
        t,
        &[
            "messages",
            "send",
            "boston-1",
            "blink 3",
            "--message-id",
            "m-1",
            "--property",
            "kind=command",
        ],
    )
    .await;
    let (dev, mut events, _) = hub.online_device("online-1").await;
    let answer = tokio::spawn(async move {
        let rid = next_event(&mut events, "method request", |e| match e {
            DeviceEvent::MethodRequest { name, rid, .. } if name == "reboot" => Some(rid),
            _ => None,
        })
        .await;
        dev.method_response(&rid, 200, &json!({"rebooting": true}))
            .await
            .unwrap();
        dev
    });
    step(
        &hub,
        t,
        &[
            "methods",
            "invoke",
            "online-1",
            "reboot",
            "--payload",
            "{\"delay\": 5}",
        ],
    )
    .await;
    let dev = answer.await.unwrap();
    step(&hub, t, &["methods", "invoke", "boston-1", "reboot"]).await;

    // Jobs.
    step(
        &hub,
        t,
        &[
            "jobs",
            "create",
            "interval-30",
            "--where",
            "tags.city = 'boston'",
            "--set",
            "desired.config.interval=30",
            "--wait",
        ],
    )
    .await;
    step(
        &hub,
        t,
        &[
            "jobs",
            "create",
            "later",
            "--where",
            "*",
            "--method",
            "reboot",
            "--start-time",
            "2099-01-01T00:00:00Z",
        ],
    )
    .await;
    step(&hub, t, &["jobs", "cancel", "later"]).await;
    step(&hub, t, &["jobs", "list"]).await;
    step(&hub, t, &["jobs", "show", "interval-30", "--json"]).await;
    step(&hub, t, &["jobs", "watch", "interval-30"]).await;
    step(&hub, t, &["jobs", "create", "nothing", "--where", "*"]).await;

    // Configurations, and deletes.
    step(
        &hub,
        t,
        &[
            "configurations",
            "create",
            "eco",
            "--target",
            "tags.city = 'denver'",
            "--set",
            "properties.desired.mode=eco",
            "--priority",
            "5",
        ],
    )
    .await;
    step(&hub, t, &["config", "list"]).await;
    step(&hub, t, &["devices", "delete", "boston-2"]).await;
    step(&hub, t, &["devices", "delete", "boston-2"]).await;
    drop(dev);

    let transcript =
        redact(t, hub.running.https_addr.port()).replace(dir.path().to_str().unwrap(), "$DIR");
    insta::assert_snapshot!("cli_transcript", transcript);
}

/// The rest of the CLI, pinned the same way: the registry as a file (import, export), a
/// configuration shown, updated and deleted, the firmware store, and a rollout from creation to abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_firmware_and_rollout_commands_print_what_their_snapshot_holds() {
    let hub = TestHub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let mut t = String::new();
    let t = &mut t;

    // The registry as a file: three good lines and a bad one, applied twice.
    let lines = [
        json!({"id": "boston-1", "tags": {"city": "boston"}}).to_string(),
        json!({"id": "boston-2", "tags": {"city": "boston"}, "status": "disabled"}).to_string(),
        "{not json".to_string(),
        json!({"id": "denver-1", "tags": {"city": "denver"}}).to_string(),
    ];
    std::fs::write(path("devices.ndjson"), lines.join("\n")).unwrap();
    step(&hub, t, &["devices", "import", &path("devices.ndjson")]).await;
    step(
        &hub,
        t,
        &["devices", "import", &path("devices.ndjson"), "--json"],
    )
    .await;
    step(
        &hub,
        t,
        &["devices", "export", "--output", &path("export.ndjson")],
    )
    .await;
    let exported = std::fs::read_to_string(path("export.ndjson")).unwrap();
    let ids: Vec<String> = exported
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .collect();
    t.push_str(&format!("(export.ndjson holds {})\n\n", ids.join(", ")));

    // A configuration (created in the other transcript's way), shown once applied, deleted.
    let eco = json!({
        "id": "eco",
        "content": {"deviceContent": {"properties.desired.mode": "eco"}},
        "targetCondition": "tags.city = 'denver'",
        "priority": 5,
    });
    let r = hub
        .call(axum::http::Method::PUT, "/configurations/eco", Some(eco))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = hub
            .call(axum::http::Method::GET, "/configurations/eco", None)
            .await;
        if r.body["systemMetrics"]["results"]["appliedCount"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never applied: {:?}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    step(&hub, t, &["configurations", "show", "eco"]).await;
    step(&hub, t, &["configurations", "show", "eco", "--json"]).await;
    step(
        &hub,
        t,
        &[
            "configurations",
            "update",
            "eco",
            "--priority",
            "7",
            "--label",
            "owner=field",
            "--metric",
            "denver=SELECT deviceId FROM devices WHERE tags.city = 'denver'",
        ],
    )
    .await;
    step(&hub, t, &["configurations", "update", "eco"]).await;
    step(
        &hub,
        t,
        &["configurations", "update", "eco", "--remove-metric", "slow"],
    )
    .await;
    step(
        &hub,
        t,
        &["configurations", "update", "nope", "--priority", "1"],
    )
    .await;
    step(&hub, t, &["configurations", "delete", "eco"]).await;
    step(&hub, t, &["configurations", "show", "eco"]).await;

    // The firmware store.
    std::fs::write(path("fw-2.1.0.bin"), vec![7u8; 4096]).unwrap();
    let image = path("fw-2.1.0.bin");
    let upload = [
        "firmware",
        "upload",
        image.as_str(),
        "--version",
        "2.1.0",
        "--model",
        "esp32",
    ];
    step(&hub, t, &upload).await;
    step(&hub, t, &upload).await;
    step(&hub, t, &["firmware", "list"]).await;
    step(&hub, t, &["firmware", "show", "2.1.0"]).await;
    step(&hub, t, &["firmware", "key", "--json"]).await;
    step(
        &hub,
        t,
        &["firmware", "url", "2.1.0", "--device", "denver-1", "--json"],
    )
    .await;
    step(&hub, t, &["firmware", "show", "9.9.9"]).await;

    // A rollout, by the plural noun too, from creation to abort; the artifact stays while the
    // twin it was pushed to names it.
    let spec = json!({
        "artifact": {"version": "2.1.0"},
        "target": "tags.city = 'boston'",
        "waves": [{"name": "all", "select": {"percent": 100},
                   "batch": {"size": 1, "interval_secs": 86_400},
                   "success": {"percent": 98}, "failure": {"percent": 2, "count": 5}}],
        "soak_secs": 0, "max_silence_secs": 600, "device_timeout_secs": 1200,
        "retry": {"retries": 0}
    });
    std::fs::write(path("night.json"), spec.to_string()).unwrap();
    step(
        &hub,
        t,
        &["rollout", "create", "night", "--file", &path("night.json")],
    )
    .await;
    // The engine sends the first push on its own; wait for it so the pages below are the same
    // every run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = hub
            .call(axum::http::Method::GET, "/v1/rollouts/night/devices", None)
            .await;
        let pushed = r
            .body
            .as_array()
            .is_some_and(|devices| devices.iter().any(|d| d["state"] != "pending"));
        if pushed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no push: {:?}\n{t}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    step(&hub, t, &["rollouts", "list"]).await;
    step(&hub, t, &["rollout", "show", "night"]).await;
    step(&hub, t, &["rollout", "pause", "night"]).await;
    step(&hub, t, &["rollout", "pause", "night"]).await;
    step(&hub, t, &["rollout", "resume", "night", "--json"]).await;
    step(&hub, t, &["rollout", "devices", "night"]).await;
    step(&hub, t, &["firmware", "delete", "2.1.0"]).await;
    step(&hub, t, &["rollout", "abort", "night"]).await;
    step(&hub, t, &["rollout", "events", "night"]).await;
    step(&hub, t, &["firmware", "delete", "2.1.0"]).await;

    let mut transcript =
        redact(t, hub.running.https_addr.port()).replace(dir.path().to_str().unwrap(), "$DIR");
    // The hub's signing key is new each run, and so are its signatures and URL expiries.
    for (marker, end) in [
        ("signature       ", '\n'),
        ("\"signature\": \"", '"'),
        ("\"keyId\": \"", '"'),
        ("\"publicKeyPem\": \"", '"'),
        ("&se=", '&'),
        ("&sig=", '"'),
        ("\"expiresAt\": ", ','),
    ] {
        transcript = redact_after(&transcript, marker, |c| c == end);
    }
    insta::assert_snapshot!("cli_files_firmware_rollouts", transcript);
}

// Multi-threaded: the test runs the CLI with blocking calls while the hub serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_writes_a_private_profile_that_the_environment_and_flags_override() {
    let hub = TestHub::start().await;
    hub.create_device("p-1").await;
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("conf").join("profile.json");
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = cli_command();
        cmd.env("FLEETHUB_PROFILE", &profile).args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let conn = hub.running.owner_connection_string.clone();
    let ca = hub.running.ca_file.clone().unwrap();
    let ca = ca.to_str().unwrap();

    // No hub anywhere: the error names every way to give one.
    let (ok, _, err) = run(&["devices", "list"], &[]);
    assert!(!ok && err.contains("fleethub login"), "{err}");

    // A wrong key is refused at login, and nothing is saved.
    let wrong = conn.replace("SharedAccessKey=", "SharedAccessKey=AAAA");
    let (ok, _, err) = run(&["login", "--hub", &wrong, "--ca", ca], &[]);
    assert!(
        !ok && err.contains("not saved") && err.contains("hint:"),
        "{err}"
    );
    assert!(!profile.exists());

    let (ok, out, err) = run(&["login", "--hub", &conn, "--ca", ca], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("logged in to localhost:"), "{out}");
    let mode = std::fs::metadata(&profile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the profile holds a key");

    // The profile alone is enough now.
    let (ok, out, err) = run(&["devices", "list", "--json"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("\"p-1\""), "{out}");

    // The environment wins over the profile (and finds the profile's CA for the same hub)…
    let (ok, _, err) = run(
        &["devices", "list"],
        &[("FLEETHUB_CONNECTION_STRING", &wrong)],
    );
    assert!(!ok && err.contains("401"), "{err}");
    // …and so does --hub.
    let (ok, _, err) = run(&["devices", "list", "--hub", &wrong], &[]);
    assert!(!ok && err.contains("401"), "{err}");

    let (ok, out, _) = run(&["logout"], &[]);
    assert!(ok && out.contains("removed"), "{out}");
    assert!(!profile.exists());
}

#[test]
fn completions_cover_every_noun_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cli_command().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for noun in [
            "devices",
            "twins",
            "query",
            "methods",
            "messages",
            "jobs",
            "configurations",
            "firmware",
            "rollout",
            "login",
        ] {
            assert!(script.contains(noun), "{shell} completion lacks {noun}");
        }
    }
}
