//! `fleethub simulate` as a user runs it: the real binary, virtual devices over MQTT/TLS, a
//! scenario's steps through REST, and expectations judged from the hub's twins.

use crate::harness::{eventually, TestHub};
use reqwest::Method;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A whole simulation run may take this long before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/scenarios")
        .join(name)
}

fn simulate(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleethub"));
    cmd.arg("simulate")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for the child with a deadline (killing it past the deadline), collecting its output.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + RUN_LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "simulate ran past {RUN_LIMIT:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

async fn run(cmd: Command) -> (Option<i32>, String, String) {
    let mut cmd = cmd;
    let child = cmd.spawn().expect("fleethub simulate starts");
    let out = tokio::task::spawn_blocking(move || finish(child))
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_scenario(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn the_documented_canary_example_passes_on_its_own_hub() {
    let path = example("canary.toml");
    let (code, out, err) = run(simulate(&["--scenario", path.to_str().unwrap()])).await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("Result: PASS (4 of 4 expectations met)"),
        "{out}"
    );
    assert!(out.contains("PASS  lab-rolled-back"), "{out}");
    assert!(out.contains("lab   1.0.0: 5"), "{out}");
}

const SMALL: &str = r#"
[simulation]
seed = 3
time_scale = 300
duration = "1h"

[[group]]
name = "field"
count = 20
tags = { city = "boston" }

[[firmware]]
version = "2.0.0"
generate = { size = 32768 }

[[step]]
at = "2m"
name = "ota"
group = "field"
set_firmware = "2.0.0"
"#;

#[tokio::test]
async fn an_ota_scenario_meets_its_expectation_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    // At 300x a simulated minute is 0.2 s: the window is wide (10 s real) because a loaded
    // two-core runner once spent 1.5 s on the step's REST calls alone and missed a 20m window,
    // and the step now makes two calls per device (the hub mints each device's URL) and each
    // device fetches its image from the hub in real time. A run that passes ends as soon as
    // every device has reported, so width costs nothing.
    let text = format!(
        "{SMALL}\n[[expect]]\nname = \"updated\"\nafter = \"ota\"\nwithin = \"50m\"\ngroup = \"field\"\nreported_firmware = \"2.0.0\"\nat_least = \"100%\"\n"
    );
    let file = write_scenario(dir.path(), &text);
    let cmd = simulate(&[
        "--scenario",
        file.to_str().unwrap(),
        "--report",
        "json",
        "--processes",
        "2",
    ]);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(report["passed"], true);
    assert_eq!(report["processes"], 2);
    assert_eq!(report["steps"][0]["ok"], 20);
    assert_eq!(report["expectations"][0]["measured"]["matched"], 20);
    // Both worker processes' counters are summed.
    assert_eq!(report["stats"]["devices"], 20);
    assert_eq!(report["stats"]["group_versions"]["field"]["2.0.0"], 20);
    assert!(report["firmware_served"]["bytes"].as_u64().unwrap() >= 20 * 32768);
}

#[tokio::test]
async fn a_failing_expectation_fails_the_run_and_says_fail() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody is ever offered 9.9.9.
    let text = format!(
        "{SMALL}\n[[expect]]\nname = \"impossible\"\nwithin = \"10m\"\ngroup = \"field\"\nreported_firmware = \"9.9.9\"\nat_least = \"50%\"\n"
    );
    let file = write_scenario(dir.path(), &text);
    let (code, out, err) = run(simulate(&["--scenario", file.to_str().unwrap()])).await;
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("FAIL  impossible"), "{out}");
    assert!(out.contains("measured 0/20 (0.0%)"), "{out}");
    assert!(
        out.contains("Result: FAIL (1 of 1 expectations failed)"),
        "{out}"
    );
}

#[tokio::test]
async fn a_bad_scenario_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_scenario(
        dir.path(),
        "[[group]]\nname = \"g\"\ncount = 2\n\n[[step]]\nat = \"soon\"\ntwin_patch = {}\n",
    );
    let (code, out, err) = run(simulate(&["--scenario", file.to_str().unwrap()])).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(
        err.contains("line 6") && err.contains("'soon' is not a duration"),
        "{err}"
    );
}

#[tokio::test]
async fn flags_register_tagged_devices_on_a_running_hub_and_sigterm_stops_cleanly() {
    let hub = TestHub::start().await;
    let ca = hub.running.ca_file.clone().unwrap();
    let mut cmd = simulate(&[
        "--hub",
        &hub.running.owner_connection_string,
        "--ca",
        ca.to_str().unwrap(),
        "--mqtt-port",
        &hub.running.mqtt_addr.port().to_string(),
        "--devices",
        "12",
        "--tags",
        "city=boston",
        "--tags",
        "site=hq",
        "--seed",
        "7",
        "--register",
        "--prefix",
        "flag-",
        "--time-scale",
        "60",
    ]);
    let child = cmd.spawn().unwrap();
    let pid = child.id().to_string();
    let waiter = tokio::task::spawn_blocking(move || finish(child));

    // The hub sees every device connected, tagged and reporting its factory firmware.
    eventually("12 simulated devices connected", || async {
        let r = hub.call(Method::GET, "/statistics/service", None).await;
        (r.body["connectedDeviceCount"] == 12).then_some(())
    })
    .await;
    let twin = eventually("flag-11 reports its firmware", || async {
        let r = hub.call(Method::GET, "/twins/flag-11", None).await;
        r.body["properties"]["reported"]["firmware"]["current_version"]
            .is_string()
            .then_some(r.body)
    })
    .await;
    assert_eq!(twin["tags"]["city"], "boston");
    assert_eq!(twin["tags"]["site"], "hq");
    assert_eq!(
        twin["properties"]["reported"]["firmware"]["current_version"],
        "1.0.0"
    );

    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = waiter.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stopped by a signal"), "{stdout}");
    assert!(stdout.contains("devices 12  connected 12"), "{stdout}");
    // The devices disconnected on the way out.
    eventually("every simulated device disconnected", || async {
        let r = hub.call(Method::GET, "/statistics/service", None).await;
        (r.body["connectedDeviceCount"] == 0).then_some(())
    })
    .await;
}

/// A firmware job through the jobs API, as an operator schedules one: a query condition picks
/// the Boston devices (awake and asleep), the desired firmware waits for the sleeping ones, and
/// Denver is left alone.
const JOB_SCENARIO: &str = r#"
[simulation]
seed = 11
time_scale = 600
duration = "3h"

[[group]]
name = "awake"
count = 12
tags = { city = "boston" }

[[group]]
name = "battery"
count = 6
tags = { city = "boston" }
[group.behavior.faults]
sleep = { awake_s = 300, asleep_s = 1800 }

[[group]]
name = "denver"
count = 6
tags = { city = "denver" }

[[firmware]]
version = "2.0.0"
generate = { size = 32768 }

[[step]]
at = "5m"
name = "job"
http = { method = "PUT", path = "/jobs/v2/boston-fw", body = { jobId = "boston-fw", type = "scheduleUpdateTwin", queryCondition = "tags.city = 'boston'", updateTwin = { etag = "*", properties = { desired = { firmware = "${firmware:2.0.0}" } } }, maxExecutionTimeInSeconds = 600 } }

[[expect]]
name = "awake-updated"
after = "job"
within = "30m"
group = "awake"
reported_firmware = "2.0.0"
at_least = "100%"

[[expect]]
name = "battery-updated-after-waking"
after = "job"
within = "2h"
group = "battery"
reported_firmware = "2.0.0"
at_least = "100%"

[[expect]]
name = "denver-untouched"
after = "job"
within = "30m"
group = "denver"
reported_firmware = "1.0.0"
at_least = "100%"
"#;

#[tokio::test]
async fn a_twin_job_updates_online_and_sleeping_devices_and_only_those_selected() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_scenario(dir.path(), JOB_SCENARIO);
    let cmd = simulate(&["--scenario", file.to_str().unwrap(), "--report", "json"]);
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["stats"]["group_versions"]["battery"]["2.0.0"], 6);
    assert_eq!(report["stats"]["group_versions"]["denver"]["1.0.0"], 6);
}
