//! `fleethub bench rollout`: what a running rollout costs the hub per device report. The same
//! reported-property load (MQTT/TLS, worker processes, as `bench reported`) runs twice against
//! one hub: before any rollout, then with a rollout targeting every registered device (100,000
//! by default, of which at most 10,000 are connected and report) whose maintenance window is
//! closed, so it pushes nothing and takes in every report: each changed twin is checked against
//! the target (a dynamic target) and each observation fed to the machine. The difference in hub
//! CPU per acknowledged report is the engine's overhead; the hub's own rollout figures
//! (`/metrics`: time in engine passes per observation, gate decision latency) are printed beside.

use super::hub_process::HubProcess;
use super::scenarios::{figure, load_run, KEY, PREFIX};
use super::worker::WorkerMode;
use anyhow::{Context, Result};
use fleethub_client::FirmwareUpload;
use serde_json::json;

/// Connected, reporting devices at most (the rest are registered and targeted only).
const CONNECTED_MAX: usize = 10_000;

/// A Prometheus counter's value in `/metrics` text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// The rollout the second phase runs: every device of the benchmark, a window that is closed
/// now (it opens on a leap day), so nothing is pushed and every report is observed.
fn spec(sha256: &str) -> serde_json::Value {
    json!({
        "artifact": {"version": "2.1.0", "sha256": sha256},
        "target": format!("STARTSWITH(deviceId, '{PREFIX}')"),
        "waves": [{"name": "all", "select": {"percent": 100},
                   "success": {"percent": 98}, "failure": {"percent": 2, "count": 5}}],
        "soak_secs": 600, "max_silence_secs": 600, "device_timeout_secs": 1200,
        "window": {"cron": "0 0 29 2 *", "duration_secs": 3600, "zone": "UTC"}
    })
}

pub(super) async fn rollout(args: &super::scenarios::BenchArgs) -> Result<()> {
    let registered = args.devices.unwrap_or(100_000);
    let connected = registered.min(CONNECTED_MAX);
    println!(
        "== rollout: {registered} devices registered and targeted, {connected} reporting over MQTT/TLS in {} processes, {} s per phase",
        args.processes, args.seconds
    );
    let hub = HubProcess::start()?;
    hub.register(PREFIX, registered, KEY).await?;
    let ca = Some(hub.ca_file.as_path());
    let phase = || {
        load_run(
            WorkerMode::Reported,
            hub.mqtt_port,
            ca,
            args,
            connected,
            None,
            Some(hub.pid()),
        )
    };
    let (before, before_cores) = phase().await?;
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("fw-2.1.0.bin");
    std::fs::write(&image, vec![0x5a; 64 * 1024])?;
    let upload = FirmwareUpload {
        version: "2.1.0".into(),
        models: vec!["esp32".into()],
        notes: None,
        signature: None,
        sha256: None,
    };
    let (_, artifact) = hub.client.upload_firmware(&image, &upload).await?;
    let sha = artifact["sha256"]
        .as_str()
        .context("the upload answered no sha256")?;
    let created = hub.client.create_rollout("bench", &spec(sha), None).await?;
    println!(
        "  rollout created over {} devices",
        created["compliance"]["targeted"]
    );
    let metrics_before = hub.client.metrics().await?;
    let (during, during_cores) = phase().await?;
    let metrics_after = hub.client.metrics().await?;
    let per_report_us = |cores: f64, rate: f64| cores / rate.max(1.0) * 1e6;
    let (a, b) = (
        per_report_us(before_cores, before.rate),
        per_report_us(during_cores, during.rate),
    );
    println!(
        "  without a rollout: {:.0} reports/s, {a:.1} µs hub CPU each; with one: {:.0} reports/s, {b:.1} µs each",
        before.rate, during.rate
    );
    let delta = |name: &str| metric(&metrics_after, name) - metric(&metrics_before, name);
    let observations = delta("fleethub_rollout_observations_total");
    let pass_us = delta("fleethub_rollout_pass_nanoseconds_total") / 1000.0;
    if observations > 0.0 {
        println!(
            "  engine: {observations:.0} observations, {:.1} µs of engine passes each (wall time, store commits included)",
            pass_us / observations
        );
    }
    println!(
        "  gate decisions so far: {}, longest from deciding report to commit: {} µs",
        metric(&metrics_after, "fleethub_rollout_gate_decisions_total"),
        metric(
            &metrics_after,
            "fleethub_rollout_gate_decision_latency_max_microseconds"
        )
    );
    figure(
        "rollout_engine_overhead_per_report",
        ((b - a) * 10.0).round() / 10.0,
        "us_hub_cpu",
        "<= 20",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_read_from_metrics_text() {
        let text = "# HELP x y\nfleethub_rollout_observations_total 42\nfleethub_rollout_pass_nanoseconds_total 7e3\n";
        assert_eq!(metric(text, "fleethub_rollout_observations_total"), 42.0);
        assert_eq!(
            metric(text, "fleethub_rollout_pass_nanoseconds_total"),
            7000.0
        );
        assert_eq!(metric(text, "absent"), 0.0);
    }
}
