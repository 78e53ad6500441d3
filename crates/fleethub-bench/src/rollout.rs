//! `fleethub bench rollout`: what a running rollout costs the hub per device report, and how
//! soon a gate is decided after the report that decides it. The same reported-property load
//! (MQTT/TLS, worker processes, as `bench reported`) runs twice against one hub: before any
//! rollout, then with a rollout targeting every registered device (100,000 by default, of which
//! at most 10,000 are connected and report). The rollout's first waves hold one device each,
//! which the benchmark itself plays: while the load runs, it connects as the wave's device once
//! the wave has pushed it, reports 2.1.0 installed, and times how long the REST API takes to
//! show the wave passed (as many waves in turn as the load's time allows, up to twenty). Its last wave takes every other device, one push a day, so the rest
//! wait: nothing more is pushed and every report is observed (each changed twin is checked
//! against the target, a dynamic target, and each observation fed to the machine). The
//! difference in hub CPU per acknowledged report is the engine's overhead; the hub's own
//! rollout figures (`/metrics`: time in engine passes per observation, gate decision latency)
//! are printed beside.

use super::hub_process::HubProcess;
use super::scenarios::{figure, load_run, load_run_beside, KEY, PREFIX};
use super::worker::WorkerMode;
use anyhow::{bail, Context, Result};
use fleethub_client::{FirmwareUpload, HubClient};
use fleethub_sim::load::percentile;
use fleethub_sim::{ConnectOptions, DeviceAuth, DeviceClient};
use serde_json::json;
use std::time::{Duration, Instant};

/// Connected, reporting devices at most (the rest are registered and targeted only).
const CONNECTED_MAX: usize = 10_000;

/// The one-device waves the benchmark may decide, and the prefix of their devices' ids (which
/// the target matches too).
const GATES: usize = 20;
/// No gate is begun with less of the load left than this, so every decision is made under it.
const GATE_MARGIN: Duration = Duration::from_secs(3);
const GATE_PREFIX: &str = "bench-gate-";

/// The target: a gate decided within a second of the report that decides it.
const GATE_TARGET: Duration = Duration::from_secs(1);

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

/// The rollout of the second phase: a one-device wave per gate the benchmark decides, then
/// every other device at one push a day, so they wait and every report is observed.
fn spec(sha256: &str) -> serde_json::Value {
    let mut waves: Vec<serde_json::Value> = (0..GATES)
        .map(|k| {
            json!({"name": format!("gate-{k}"),
                   "select": {"query": format!("deviceId = '{GATE_PREFIX}{k}'")},
                   "success": {"percent": 100}, "failure": {"count": 0}})
        })
        .collect();
    waves.push(json!({"name": "rest", "select": {"percent": 100},
        "batch": {"size": 1, "interval_secs": 86_400},
        "success": {"percent": 98}, "failure": {"percent": 2, "count": 5}}));
    json!({
        "artifact": {"version": "2.1.0", "sha256": sha256},
        "target": format!("STARTSWITH(deviceId, '{PREFIX}')"),
        "waves": waves,
        "soak_secs": 0, "max_silence_secs": 600, "device_timeout_secs": 1200,
        "retry": {"retries": 0}
    })
}

pub(super) async fn rollout(args: &super::scenarios::BenchArgs) -> Result<()> {
    let registered = args.devices.unwrap_or(100_000);
    let connected = registered.min(CONNECTED_MAX);
    println!(
        "== rollout: {registered} devices registered and targeted, {connected} reporting over MQTT/TLS in {} processes, {} s per phase; up to {GATES} gates decided during the second",
        args.processes, args.seconds
    );
    let hub = HubProcess::start()?;
    hub.register(PREFIX, registered, KEY).await?;
    hub.register(GATE_PREFIX, GATES, KEY).await?;
    let ca = Some(hub.ca_file.as_path());
    let (before, before_cores) = load_run(
        WorkerMode::Reported,
        hub.mqtt_port,
        ca,
        args,
        connected,
        None,
        Some(hub.pid()),
    )
    .await?;
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
    let (during, during_cores, gates) = load_run_beside(
        WorkerMode::Reported,
        hub.mqtt_port,
        ca,
        args,
        (connected, None, Some(hub.pid())),
        decide_gates(&hub, Duration::from_secs(args.seconds)),
    )
    .await?;
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
    let reads = delta("fleethub_rollout_membership_reads_total");
    let unqueued = delta("fleethub_rollout_unqueued_reports_total");
    println!(
        "  engine: {observations:.0} observations queued, {:.1} µs of engine passes each (wall time, store commits included); {unqueued:.0} reports not queued (their target reads nothing they touched); {reads:.0} twins read to judge membership",
        pass_us / observations.max(1.0),
    );
    let decisions = delta("fleethub_rollout_gate_decisions_total");
    // A hub before the parts were counted shows none.
    if decisions > 0.0 && delta("fleethub_rollout_gate_decision_latency_microseconds_total") > 0.0 {
        let part = |name: &str| {
            delta(&format!(
                "fleethub_rollout_gate_decision_{name}_microseconds_total"
            )) / decisions
                / 1000.0
        };
        println!(
            "  the hub's mean, deciding observation to commit: {:.1} ms = queued {:.1} + pass {:.1} + commit {:.1} ms",
            part("latency"),
            part("queued"),
            part("pass"),
            part("commit")
        );
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let seen: Vec<String> = gates.iter().map(|d| format!("{:.0}", ms(d))).collect();
    let mut sorted = gates.clone();
    sorted.sort();
    let at = |q: f64| percentile(&sorted, q).unwrap_or_default();
    let (p50, p99, max) = (at(50.0), at(99.0), at(100.0));
    let target = GATE_TARGET.as_millis();
    println!(
        "  gates: {} decided under load; report acknowledged to the REST API showing the wave passed: {} ms (p50 {:.0}, p99 {:.0}, max {:.0} ms; target <= {target} ms); the hub's own longest, deciding observation to commit: {} µs",
        gates.len(),
        seen.join(", "),
        ms(&p50),
        ms(&p99),
        ms(&max),
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
    for (name, value) in [("p50", p50), ("p99", p99), ("max", max)] {
        figure(
            &format!("rollout_gate_decision_latency_{name}"),
            ms(&value),
            "ms",
            &format!("<= {target}"),
        );
    }
    Ok(())
}

/// Decides the one-device waves in turn, as their devices would: once a wave has pushed its
/// device, connects as it (rebooted into the image), reports 2.1.0 installed, and times from
/// the hub's acknowledgement of that report until the REST API shows the wave passed. Begins
/// no wave with less than [`GATE_MARGIN`] of the `load` left.
async fn decide_gates(hub: &HubProcess, load: Duration) -> Result<Vec<Duration>> {
    let tls = fleethub_sim::tls_config_trusting(&std::fs::read(&hub.ca_file)?)?;
    let last_start = Instant::now() + load.saturating_sub(GATE_MARGIN);
    let mut latencies = Vec::new();
    for k in 0..GATES {
        if k > 0 && Instant::now() > last_start {
            break;
        }
        wave_reaches(&hub.client, k, "running").await?;
        let options = ConnectOptions {
            host: "127.0.0.1".into(),
            port: hub.mqtt_port,
            hub_host_name: "localhost".into(),
            device_id: format!("{GATE_PREFIX}{k}"),
            auth: DeviceAuth::SasKey(KEY.into()),
            tls: Some(tls.clone()),
            clean_session: false,
            keep_alive_secs: 60,
            local_addr: None,
            sas_lifetime_secs: fleethub_sim::TOKEN_LIFETIME_SECS,
        };
        let (device, _events) = DeviceClient::connect(options).await?;
        let installed = json!({"firmware": {"current_version": "2.1.0", "status": "success",
            "target_version": "2.1.0", "progress": 100}});
        device.report(&installed).await?;
        let acked = Instant::now();
        wave_reaches(&hub.client, k, "passed").await?;
        latencies.push(acked.elapsed());
        device.disconnect().await;
    }
    Ok(latencies)
}

/// Polls the rollout until wave `k` has `status`.
async fn wave_reaches(client: &HubClient, k: usize, status: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let view = client
            .rollout("bench")
            .await?
            .context("rollout bench is gone")?;
        let now = &view["waves"][k]["status"];
        if now == status {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("wave gate-{k} is {now}, not {status}, after two minutes: {view}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
