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

/// `2026-12-02T19:06:50.7940153Z` (IoT Hub's format, fixed width) becomes
/// `YYYY-MM-DDThh:mm:ss.fffffffZ`; IoT Hub's "never", `0001-01-01T00:00:00Z`, stays.
fn redact_times(text: &str) -> String {
    const SHAPE: &str = "dddd-dd-ddTdd:dd:dd.dddddddZ";
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let candidate = bytes.get(i..i + SHAPE.len());
        let matches = candidate.is_some_and(|c| {
            c.iter().zip(SHAPE.bytes()).all(|(b, s)| match s {
                b'd' => b.is_ascii_digit(),
                s => *b == s,
            })
        });
        if matches {
            out.push_str("YYYY-MM-DDThh:mm:ss.fffffffZ");
            i += SHAPE.len();
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
            "login",
        ] {
            assert!(script.contains(noun), "{shell} completion lacks {noun}");
        }
    }
}
