//! The benchmarks themselves: each starts what it measures, drives worker processes, and prints
//! figures ending in one JSON line per figure.

use super::hub_process::{cpu_seconds, rss_kib, HubProcess};
use super::mosquitto::Mosquitto;
use super::worker::{Connected, WorkerMode, WorkerResult};
use anyhow::{bail, Context, Result};
use fleethub_sim::load::percentile;
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Which benchmark.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum BenchName {
    /// Reported-property updates over MQTT/TLS, throughput and p99 at a fixed rate, beside Mosquitto.
    Reported,
    /// Desired-property updates through REST reaching connected devices.
    Desired,
    /// Direct-method round trips.
    Methods,
    /// Idle TLS connections: memory per connection and connect rate.
    Connections,
    /// Bulk registration of a million devices with ~1 KB twins.
    Register,
    /// Query latency over a million twins.
    Query,
    /// A twin job over a million devices, and a method job over 10,000 connected ones.
    Jobs,
    /// Only the method job of `jobs`.
    MethodJob,
    /// 1,000 concurrent ranged HTTPS downloads of a 1 MiB image from the firmware store, beside
    /// nginx serving the same file.
    Firmware,
    /// A configuration targeting a tenth of a million devices: time until applied, and how
    /// soon its metrics follow a twin change.
    Configurations,
    /// A rollout over 100,000 devices: hub CPU per device report with and without it, and the
    /// engine's own figures.
    Rollout,
    /// Every dashboard page's data requests, and the change feed, over a million devices.
    Dashboard,
    /// The connection-level benchmarks above (not the million-device ones).
    All,
}

/// `fleethub bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub name: BenchName,
    /// Devices (for `connections`: connections to hold).
    #[arg(long)]
    pub devices: Option<usize>,
    /// Worker processes for the device load.
    #[arg(long, default_value_t = 4)]
    pub processes: usize,
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Requests each device keeps outstanding in the throughput phase.
    #[arg(long, default_value_t = 2)]
    pub in_flight: usize,
    /// Skip the Mosquitto reference run.
    #[arg(long)]
    pub no_mosquitto: bool,
    /// Skip the nginx reference run of `firmware`.
    #[arg(long)]
    pub no_nginx: bool,
    /// Skip the PostgreSQL 15 reference run of `query`.
    #[arg(long)]
    pub no_postgres: bool,
}

pub(super) const KEY: &str = "ZmxlZXRodWItYmVuY2gta2V5LTAwMDAwMDAwMDAwMDA=";
pub(super) const PREFIX: &str = "bench-";

/// Prints the closing JSON line of one figure.
pub(super) fn figure(bench: &str, value: f64, unit: &str, target: &str) {
    println!("{}", figure_line(bench, value, unit, target));
}

/// Prints the closing JSON line of a figure measured beside a reference: the figure's line
/// plus the reference's value under `reference` and `ratio` (value ÷ reference; below 1 is
/// better for a time).
pub(super) fn figure_against(
    bench: &str,
    value: f64,
    unit: &str,
    target: &str,
    reference: &str,
    reference_value: f64,
) {
    println!(
        "{}",
        figure_against_line(bench, value, unit, target, reference, reference_value)
    );
}

fn figure_against_line(
    bench: &str,
    value: f64,
    unit: &str,
    target: &str,
    reference: &str,
    reference_value: f64,
) -> String {
    let mut line = figure_value(bench, value, unit, target);
    line[reference] = json!(round2(reference_value));
    line["ratio"] = json!(round2(value / reference_value));
    line.to_string()
}

/// One figure as the JSON line scripts read: `{"bench":…,"value":…,"unit":…,"target":…}`, the
/// value rounded to two decimals.
fn figure_line(bench: &str, value: f64, unit: &str, target: &str) -> String {
    figure_value(bench, value, unit, target).to_string()
}

fn figure_value(bench: &str, value: f64, unit: &str, target: &str) -> serde_json::Value {
    json!({"bench": bench, "value": round2(value), "unit": unit, "target": target})
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Runs the chosen benchmark(s).
pub async fn run(args: BenchArgs) -> Result<()> {
    let all = args.name == BenchName::All;
    if all || args.name == BenchName::Reported {
        reported(&args).await?;
    }
    if all || args.name == BenchName::Desired {
        desired(&args).await?;
    }
    if all || args.name == BenchName::Methods {
        methods(&args).await?;
    }
    if all || args.name == BenchName::Connections {
        connections(&args).await?;
    }
    match args.name {
        BenchName::Register => super::million_devices::register(args.devices).await?,
        BenchName::Query => super::million_devices::query(args.devices, !args.no_postgres).await?,
        BenchName::Jobs => super::million_devices::jobs(&args).await?,
        BenchName::MethodJob => super::million_devices::method_job(&args).await?,
        BenchName::Firmware => super::firmware::firmware(&args).await?,
        BenchName::Configurations => super::million_devices::configurations(args.devices).await?,
        BenchName::Rollout => super::rollout::rollout(&args).await?,
        BenchName::Dashboard => super::dashboard::dashboard(args.devices).await?,
        _ => {}
    }
    Ok(())
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn line<T: serde::de::DeserializeOwned>(&mut self) -> Result<T> {
        let line = self
            .lines
            .next_line()
            .await?
            .context("worker exited early")?;
        serde_json::from_str(&line).with_context(|| format!("worker said {line:?}"))
    }

    async fn say(&mut self, word: &str) -> Result<()> {
        self.stdin.write_all(format!("{word}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }
}

/// The worker processes of one load phase: `devices` split over `processes` workers, all
/// connected before any starts.
struct WorkerProcesses {
    workers: Vec<Worker>,
    connected: u64,
    failed: u64,
    connect_secs: f64,
}

/// What a load phase's workers do, against which server, with how many devices.
struct WorkerLoad<'a> {
    mode: WorkerMode,
    port: u16,
    ca: Option<&'a Path>,
    devices: usize,
    processes: usize,
    seconds: u64,
    rate: Option<u64>,
    in_flight: usize,
}

impl WorkerProcesses {
    async fn start(spec: WorkerLoad<'_>) -> Result<WorkerProcesses> {
        let started = Instant::now();
        let per = spec.devices.div_ceil(spec.processes.max(1));
        let mut workers = Vec::new();
        for p in 0..spec.processes.max(1) {
            let first = p * per;
            let count = per.min(spec.devices.saturating_sub(first));
            if count == 0 {
                break;
            }
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.arg("bench-worker")
                .args(["--mode", &format!("{:?}", spec.mode).to_lowercase()])
                .args([
                    "--port",
                    &spec.port.to_string(),
                    "--prefix",
                    PREFIX,
                    "--key",
                    KEY,
                ])
                .args(["--first", &first.to_string(), "--count", &count.to_string()])
                .args([
                    "--seconds",
                    &spec.seconds.to_string(),
                    "--in-flight",
                    &spec.in_flight.to_string(),
                ]);
            if let Some(rate) = spec.rate {
                let share = (rate as f64 * count as f64 / spec.devices as f64).round() as u64;
                cmd.args(["--rate", &share.max(1).to_string()]);
            }
            if let Some(ca) = spec.ca {
                cmd.arg("--ca-file").arg(ca);
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
            workers.push(Worker {
                child,
                stdin,
                lines,
            });
        }
        let (mut connected, mut failed) = (0, 0);
        for w in &mut workers {
            let c: Connected = w.line().await?;
            connected += c.connected;
            failed += c.failed;
        }
        Ok(WorkerProcesses {
            workers,
            connected,
            failed,
            connect_secs: started.elapsed().as_secs_f64(),
        })
    }

    async fn go(&mut self) -> Result<()> {
        for w in &mut self.workers {
            w.say("go").await?;
        }
        Ok(())
    }

    /// Tells holding workers to stop and collects every result.
    async fn finish(mut self, stop: bool) -> Result<Vec<WorkerResult>> {
        let mut out = Vec::new();
        for w in &mut self.workers {
            if stop {
                w.say("stop").await?;
            }
            out.push(w.line().await?);
        }
        for w in &mut self.workers {
            let _ = w.child.wait().await;
        }
        Ok(out)
    }
}

/// Totals of a throughput run: acked per second over the longest worker window, p50/p99.
pub(super) struct Totals {
    pub(super) acked: u64,
    pub(super) errors: u64,
    pub(super) rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn totals(results: &[WorkerResult]) -> Totals {
    let acked = results.iter().map(|r| r.acked).sum();
    let errors = results.iter().map(|r| r.errors).sum();
    let secs = results
        .iter()
        .map(|r| r.elapsed_ms)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1000.0;
    let mut lat: Vec<u64> = results
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let pct = |q: f64| percentile(&lat, q).unwrap_or(0) as f64 / 1000.0;
    Totals {
        acked,
        errors,
        rate: acked as f64 / secs,
        p50_ms: pct(50.0),
        p99_ms: pct(99.0),
    }
}

/// One load phase; the second value is how many cores `watch` (a server's pid) used while loaded.
pub(super) async fn load_run(
    mode: WorkerMode,
    port: u16,
    ca: Option<&Path>,
    args: &BenchArgs,
    devices: usize,
    rate: Option<u64>,
    watch: Option<u32>,
) -> Result<(Totals, f64)> {
    let (totals, cores, ()) = load_run_beside(
        mode,
        port,
        ca,
        args,
        (devices, rate, watch),
        std::future::ready(Ok(())),
    )
    .await?;
    Ok((totals, cores))
}

/// [`load_run`] with `beside` run while the load is on (from the moment every worker has
/// connected and starts sending until the phase ends); its answer comes third.
pub(super) async fn load_run_beside<T>(
    mode: WorkerMode,
    port: u16,
    ca: Option<&Path>,
    args: &BenchArgs,
    (devices, rate, watch): (usize, Option<u64>, Option<u32>),
    beside: impl std::future::Future<Output = Result<T>>,
) -> Result<(Totals, f64, T)> {
    let spec = WorkerLoad {
        mode,
        port,
        ca,
        devices,
        processes: args.processes,
        seconds: args.seconds,
        rate,
        in_flight: if rate.is_some() { 1 } else { args.in_flight },
    };
    let mut workers = WorkerProcesses::start(spec).await?;
    if workers.failed > 0 {
        eprintln!(
            "  warning: {} of {devices} devices failed to connect",
            workers.failed
        );
    }
    let (cpu_before, wall) = (watch.map(cpu_seconds).unwrap_or(0.0), Instant::now());
    workers.go().await?;
    let (results, beside) = tokio::join!(workers.finish(false), beside);
    let cores = watch
        .map(|pid| (cpu_seconds(pid) - cpu_before) / wall.elapsed().as_secs_f64())
        .unwrap_or(0.0);
    Ok((totals(&results?), cores, beside?))
}

async fn reported(args: &BenchArgs) -> Result<()> {
    let devices = args.devices.unwrap_or(10_000);
    println!(
        "== reported: {devices} devices over MQTT/TLS in {} processes, {} s per phase",
        args.processes, args.seconds
    );
    let hub = HubProcess::start()?;
    hub.register(PREFIX, devices, KEY).await?;
    let ca = Some(hub.ca_file.as_path());
    let (max, hub_cores) = load_run(
        WorkerMode::Reported,
        hub.mqtt_port,
        ca,
        args,
        devices,
        None,
        Some(hub.pid()),
    )
    .await?;
    println!("  hub reported updates: {:.0}/s acknowledged after commit ({} acked, {} errors), p50 {:.1} ms, p99 {:.1} ms", max.rate, max.acked, max.errors, max.p50_ms, max.p99_ms);
    println!(
        "  hub CPU while loaded: {hub_cores:.2} of {} cores; the load generators use the rest",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let (paced, _) = load_run(
        WorkerMode::Reported,
        hub.mqtt_port,
        ca,
        args,
        devices,
        Some(5_000),
        None,
    )
    .await?;
    println!(
        "  at 5,000/s offered: {:.0}/s acked, p50 {:.1} ms, p99 {:.1} ms",
        paced.rate, paced.p50_ms, paced.p99_ms
    );
    let (telemetry, _) = load_run(
        WorkerMode::Telemetry,
        hub.mqtt_port,
        ca,
        args,
        devices,
        None,
        None,
    )
    .await?;
    println!(
        "  hub telemetry (stored, deduplicated): {:.0}/s, p99 {:.1} ms",
        telemetry.rate, telemetry.p99_ms
    );
    drop(hub);
    figure(
        "reported_updates_per_sec",
        max.rate,
        "updates/s",
        ">= 20000",
    );
    figure(
        "reported_p99_ms_at_5000_per_sec",
        paced.p99_ms,
        "ms",
        "<= 50",
    );
    figure(
        "telemetry_per_sec",
        telemetry.rate,
        "messages/s",
        "none (reference)",
    );
    if args.no_mosquitto {
        return Ok(());
    }
    match Mosquitto::start(&std::env::temp_dir()) {
        Ok(broker) => {
            let (m, broker_cores) = load_run(
                WorkerMode::Telemetry,
                broker.port,
                Some(&broker.ca_file),
                args,
                devices,
                None,
                Some(broker.pid()),
            )
            .await?;
            println!("  mosquitto QoS 1 publish (same clients, TLS, stores nothing): {:.0}/s, p99 {:.1} ms, broker CPU {broker_cores:.2} cores", m.rate, m.p99_ms);
            let ratio = if m.rate > 0.0 { max.rate / m.rate } else { 0.0 };
            println!("  ratio hub reported updates / mosquitto publishes: {ratio:.2}");
            figure(
                "mosquitto_qos1_publish_per_sec",
                m.rate,
                "messages/s",
                "reference",
            );
            figure("reported_vs_mosquitto_ratio", ratio, "ratio", ">= 0.75");
        }
        Err(e) => println!("  mosquitto reference skipped: {e:#}"),
    }
    Ok(())
}

/// Starts `devices` holding connections of `mode`, then runs `drive` against the hub.
pub(super) async fn holding<F, Fut>(
    args: &BenchArgs,
    hub: &HubProcess,
    mode: WorkerMode,
    devices: usize,
    drive: F,
) -> Result<(u64, Fut::Output)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future,
{
    let (received, _, out) = holding_measured(args, hub, mode, devices, drive).await?;
    Ok((received, out))
}

/// [`holding`], also giving the hub's CPU seconds while `drive` ran.
async fn holding_measured<F, Fut>(
    args: &BenchArgs,
    hub: &HubProcess,
    mode: WorkerMode,
    devices: usize,
    drive: F,
) -> Result<(u64, f64, Fut::Output)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future,
{
    let spec = WorkerLoad {
        mode,
        port: hub.mqtt_port,
        ca: Some(&hub.ca_file),
        devices,
        processes: args.processes.min(devices),
        seconds: args.seconds,
        rate: None,
        in_flight: 1,
    };
    let mut workers = WorkerProcesses::start(spec).await?;
    if workers.failed > 0 {
        bail!("{} devices failed to connect", workers.failed);
    }
    workers.go().await?;
    hub.mark("start");
    let (cpu_before, wall) = (cpu_seconds(hub.pid()), Instant::now());
    let out = drive().await;
    let cpu = cpu_seconds(hub.pid()) - cpu_before;
    hub.mark("end");
    let cores = cpu / wall.elapsed().as_secs_f64();
    println!("  hub CPU while loaded: {cores:.2} cores (the REST client and the device workers share the rest)");
    let results = workers.finish(true).await?;
    Ok((results.iter().map(|r| r.received).sum(), cpu, out))
}

/// Sends `total` REST requests built by `req`, `concurrency` at a time; returns (ok, seconds, latencies ms sorted).
async fn rest_load<F>(total: usize, concurrency: usize, req: F) -> (u64, f64, Vec<f64>)
where
    F: Fn(usize) -> reqwest::RequestBuilder,
{
    use futures_util::StreamExt;
    let started = Instant::now();
    let mut ok = 0;
    let mut lat = Vec::with_capacity(total);
    let mut stream = futures_util::stream::iter(0..total)
        .map(|i| {
            let r = req(i);
            async move {
                let t = Instant::now();
                let res = r.send().await;
                (
                    res.map(|r| r.status().is_success()).unwrap_or(false),
                    t.elapsed(),
                )
            }
        })
        .buffer_unordered(concurrency);
    while let Some((success, took)) = stream.next().await {
        if success {
            ok += 1;
            lat.push(took.as_secs_f64() * 1000.0);
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    (ok, started.elapsed().as_secs_f64(), lat)
}

/// The `q`-th percentile (0..=100) of ascending `lat`, or 0 without samples.
fn pct(lat: &[f64], q: f64) -> f64 {
    percentile(lat, q).unwrap_or(0.0)
}

async fn desired(args: &BenchArgs) -> Result<()> {
    let devices = args.devices.unwrap_or(1_000);
    let updates = 50_000usize;
    println!("== desired: {updates} twin PATCHes through REST to {devices} connected devices");
    let hub = HubProcess::start()?;
    hub.register(PREFIX, devices, KEY).await?;
    let token = hub.token()?;
    let base = hub.base();
    let started = Instant::now();
    let (received, (ok, secs, lat)) = holding(args, &hub, WorkerMode::Desired, devices, || {
        rest_load(updates, 64, |i| {
            hub.http
                .patch(format!("{base}/twins/{PREFIX}{}", i % devices))
                .header("Authorization", &token)
                .json(&json!({"properties": {"desired": {"setting": i}}}))
        })
    })
    .await?;
    let _ = started;
    let rate = ok as f64 / secs;
    println!("  {ok} updates committed in {secs:.1} s: {rate:.0}/s, p50 {:.1} ms, p99 {:.1} ms; devices received {received}", pct(&lat, 50.0), pct(&lat, 99.0));
    figure(
        "desired_updates_reaching_devices_per_sec",
        received as f64 / secs,
        "updates/s",
        ">= 5000",
    );
    Ok(())
}

async fn methods(args: &BenchArgs) -> Result<()> {
    let devices = args.devices.unwrap_or(1_000);
    let calls = 30_000usize;
    println!("== methods: {calls} direct-method round trips to {devices} connected devices");
    let hub = HubProcess::start()?;
    hub.register(PREFIX, devices, KEY).await?;
    let token = hub.token()?;
    let base = hub.base();
    let (answered, cpu, (ok, secs, lat)) =
        holding_measured(args, &hub, WorkerMode::Methods, devices, || {
        rest_load(calls, 128, |i| {
            hub.http
                .post(format!("{base}/twins/{PREFIX}{}/methods", i % devices))
                .header("Authorization", &token)
                .json(&json!({"methodName": "echo", "payload": {"n": i}, "responseTimeoutInSeconds": 30}))
        })
    })
    .await?;
    let rate = ok as f64 / secs;
    println!("  {ok} of {calls} round trips in {secs:.1} s ({answered} answered by devices): {rate:.0}/s, p50 {:.1} ms, p99 {:.1} ms", pct(&lat, 50.0), pct(&lat, 99.0));
    // What each call costs the hub, whatever else the machine is doing: the figure to compare
    // two builds by (FLEETHUB_BENCH_HUB), since throughput on a shared machine moves with load.
    let per_call_us = cpu * 1e6 / ok.max(1) as f64;
    println!("  hub CPU per round trip: {per_call_us:.1} µs");
    figure("method_hub_cpu_per_call_us", per_call_us, "µs", "reference");
    figure("method_round_trips_per_sec", rate, "calls/s", ">= 5000");
    Ok(())
}

/// Rounds of full and resumed connects in `bench connections`; each figure is their median.
const CONNECT_ROUNDS: usize = 3;

async fn connections(args: &BenchArgs) -> Result<()> {
    let devices = args.devices.unwrap_or(18_000);
    println!(
        "== connections: {devices} idle MQTT/TLS connections in {} processes, {CONNECT_ROUNDS} rounds \
         of full and resumed handshakes (each device keeps its own TLS session store)",
        args.processes
    );
    let hub = HubProcess::start()?;
    hub.register(PREFIX, devices, KEY).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = hub.rss_kib();
    let spec = WorkerLoad {
        mode: WorkerMode::Reconnect,
        port: hub.mqtt_port,
        ca: Some(&hub.ca_file),
        devices,
        processes: args.processes,
        seconds: 0,
        rate: None,
        in_flight: 1,
    };
    let cpu_before = cpu_seconds(hub.pid());
    let mut workers = WorkerProcesses::start(spec).await?;
    let first = Round {
        connected: workers.connected,
        failed: workers.failed,
        resumed: 0,
        secs: workers.connect_secs,
        hub_cores: (cpu_seconds(hub.pid()) - cpu_before) / workers.connect_secs,
        client_cores: workers.cpu_seconds() / workers.connect_secs,
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(hub.pid());
    let (mut full, mut resumed) = (vec![first], Vec::new());
    hub.mark("start");
    for round in 0..CONNECT_ROUNDS {
        if round > 0 {
            workers.round("drop", &hub).await?;
            full.push(workers.round("full", &hub).await?);
        }
        workers.round("drop", &hub).await?;
        resumed.push(workers.round("resume", &hub).await?);
    }
    hub.mark("end");
    let _ = workers.finish(true).await?;
    for (what, rounds) in [("full handshakes", &full), ("resumed", &resumed)] {
        for r in rounds.iter() {
            println!(
                "  {what}: {} connected ({} failed, {} resumed) in {:.1} s: {:.0} connects/s, \
                 hub CPU {:.2} cores ({:.0} µs a connect), clients {:.2} cores ({:.0} µs a connect)",
                r.connected, r.failed, r.resumed, r.secs, r.rate(), r.hub_cores,
                r.hub_us_per_connect(), r.client_cores, r.client_us_per_connect()
            );
        }
    }
    let unresumed: u64 = resumed.iter().map(|r| r.connected - r.resumed).sum();
    if unresumed > 0 {
        println!("  warning: {unresumed} reconnects did a full handshake instead of resuming");
    }
    let per_conn_kib = (after.saturating_sub(before)) as f64 / full[0].connected.max(1) as f64;
    println!(
        "  (TCP + TLS + CONNECT + SAS check + session + SUBSCRIBE; the TLS clients share the CPU)"
    );
    println!("  hub RSS {before} KiB -> {after} KiB: {per_conn_kib:.1} KiB per connection");
    figure(
        "idle_connection_rss_kib",
        per_conn_kib,
        "KiB/connection",
        "<= 40",
    );
    figure(
        "tls_connects_per_sec",
        median(full.iter().map(Round::rate)),
        "connects/s",
        ">= 2000",
    );
    figure(
        "tls_resumed_connects_per_sec",
        median(resumed.iter().map(Round::rate)),
        "connects/s",
        ">= 5000",
    );
    // What a connect costs each side, whatever else the machine is doing: the figures to compare
    // two builds by (FLEETHUB_BENCH_HUB). The two cores cap the rate at about
    // 2 s / (hub + client CPU per connect).
    for (name, rounds) in [("tls_connect", &full), ("tls_resumed_connect", &resumed)] {
        let hub_us = median(rounds.iter().map(Round::hub_us_per_connect));
        let client_us = median(rounds.iter().map(Round::client_us_per_connect));
        figure(&format!("{name}_hub_cpu_us"), hub_us, "µs", "reference");
        figure(
            &format!("{name}_client_cpu_us"),
            client_us,
            "µs",
            "reference",
        );
    }
    Ok(())
}

/// One round of connects across every worker.
struct Round {
    connected: u64,
    failed: u64,
    resumed: u64,
    secs: f64,
    hub_cores: f64,
    /// CPU of the worker processes (the TLS clients) over the round, in cores.
    client_cores: f64,
}

impl Round {
    fn rate(&self) -> f64 {
        self.connected as f64 / self.secs
    }

    fn hub_us_per_connect(&self) -> f64 {
        self.hub_cores * 1e6 / self.rate().max(f64::MIN_POSITIVE)
    }

    fn client_us_per_connect(&self) -> f64 {
        self.client_cores * 1e6 / self.rate().max(f64::MIN_POSITIVE)
    }
}

/// The median of some figures (nearest rank).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0).unwrap_or(0.0)
}

impl WorkerProcesses {
    /// Says `word` to every worker of a [`WorkerMode::Reconnect`] run and waits for all their
    /// `connected` lines: one round, timed from the word to the last line.
    async fn round(&mut self, word: &str, hub: &HubProcess) -> Result<Round> {
        let (started, cpu_before) = (Instant::now(), cpu_seconds(hub.pid()));
        let clients_before = self.cpu_seconds();
        for w in &mut self.workers {
            w.say(word).await?;
        }
        let mut round = Round {
            connected: 0,
            failed: 0,
            resumed: 0,
            secs: 0.0,
            hub_cores: 0.0,
            client_cores: 0.0,
        };
        for w in &mut self.workers {
            let c: Connected = w.line().await?;
            round.connected += c.connected;
            round.failed += c.failed;
            round.resumed += c.resumed;
        }
        round.secs = started.elapsed().as_secs_f64();
        round.hub_cores = (cpu_seconds(hub.pid()) - cpu_before) / round.secs;
        round.client_cores = (self.cpu_seconds() - clients_before) / round.secs;
        Ok(round)
    }

    /// CPU seconds the worker processes have used so far.
    fn cpu_seconds(&self) -> f64 {
        self.workers
            .iter()
            .filter_map(|w| w.child.id())
            .map(cpu_seconds)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_is_one_json_line_in_the_documented_shape() {
        let line = figure_line("tls_connects_per_sec", 2345.678, "connects/s", ">= 2000");
        assert_eq!(
            line,
            r#"{"bench":"tls_connects_per_sec","value":2345.68,"unit":"connects/s","target":">= 2000"}"#
        );
    }

    #[test]
    fn a_figure_beside_a_reference_carries_its_value_and_the_ratio() {
        let line = figure_against_line("q", 300.0, "ms", "<= 500", "postgres", 600.0);
        assert_eq!(
            line,
            r#"{"bench":"q","value":300.0,"unit":"ms","target":"<= 500","postgres":600.0,"ratio":0.5}"#
        );
    }
}
