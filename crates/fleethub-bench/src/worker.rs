//! `fleethub bench-worker`: one load process. It connects its share of the devices, prints a
//! `connected` line, waits for `go` on stdin, runs its load, and prints one result line. Several
//! run side by side because a process may hold at most ~19,000 connections here.

use anyhow::{Context, Result};
use fleethub_sim::{ConnectTemplate, DeviceSessions, LoadDevices, LoadKind, LoadShape};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// What one worker does.
#[derive(Debug, Clone, Serialize, Deserialize, clap::ValueEnum, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WorkerMode {
    /// Reported-property patches, each waiting for `$iothub/twin/res/204`.
    Reported,
    /// QoS 1 telemetry, each waiting for PUBACK (also works against a bare broker).
    Telemetry,
    /// Hold connections subscribed to desired patches and count what arrives.
    Desired,
    /// Hold connections that answer every direct method.
    Methods,
    /// Hold idle connections.
    Idle,
    /// Connect (full handshakes, each device with a session store of its own), then on each
    /// command: `drop` disconnects every device, `resume` connects them again with their
    /// sessions, `full` with fresh ones; each answered with a `connected` line. `stop` ends.
    Reconnect,
}

/// `fleethub bench-worker` arguments (set by the coordinator, not by people).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    pub mode: WorkerMode,
    #[arg(long)]
    pub port: u16,
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    #[arg(long, default_value = "dev-")]
    pub prefix: String,
    #[arg(long)]
    pub first: usize,
    #[arg(long)]
    pub count: usize,
    #[arg(long)]
    pub key: String,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long)]
    pub rate: Option<u64>,
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
}

/// The connect-phase line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Connected {
    pub connected: u64,
    pub failed: u64,
    pub connect_ms: u64,
    /// How many of the connected devices resumed a TLS session.
    #[serde(default)]
    pub resumed: u64,
}

impl Connected {
    fn of(load: &LoadDevices, started: Instant) -> Connected {
        Connected {
            connected: load.len() as u64,
            failed: load.failed_connects(),
            connect_ms: started.elapsed().as_millis() as u64,
            resumed: load.tls_resumed(),
        }
    }
}

/// The result line.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub elapsed_ms: u64,
    pub received: u64,
    pub latencies_us: Vec<u64>,
}

/// Runs one worker; the coordinator reads its stdout.
pub async fn run_worker(args: WorkerArgs) -> Result<()> {
    let tls = match &args.ca_file {
        Some(ca) => Some(fleethub_sim::tls_config_trusting(&std::fs::read(ca)?)?),
        None => None,
    };
    let template = ConnectTemplate {
        host: "127.0.0.1".into(),
        port: args.port,
        hub_host_name: "localhost".into(),
        tls,
        sas_lifetime_secs: None,
    };
    let devices: Vec<(String, String)> = (args.first..args.first + args.count)
        .map(|i| (format!("{}{i}", args.prefix), args.key.clone()))
        .collect();
    if args.mode == WorkerMode::Reconnect {
        return reconnect(&template, &devices).await;
    }
    let started = Instant::now();
    let kind = match args.mode {
        WorkerMode::Reported => LoadKind::Reported,
        WorkerMode::Telemetry => LoadKind::Telemetry,
        WorkerMode::Desired | WorkerMode::Methods | WorkerMode::Idle | WorkerMode::Reconnect => {
            LoadKind::Hold
        }
    };
    let load = LoadDevices::connect(&template, &devices, kind).await;
    say(&Connected::of(&load, started))?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let go = stdin.next_line().await?.context("coordinator went away")?;
    anyhow::ensure!(go.trim() == "go", "expected 'go', got {go:?}");
    let result = match args.mode {
        WorkerMode::Reported | WorkerMode::Telemetry => {
            let shape = LoadShape {
                rate_per_sec: args.rate,
                duration: Duration::from_secs(args.seconds),
                in_flight_per_device: args.in_flight,
            };
            let r = load.run(shape).await;
            WorkerResult {
                sent: r.sent,
                acked: r.acked,
                errors: r.errors,
                elapsed_ms: r.elapsed.as_millis() as u64,
                received: 0,
                latencies_us: thin(r.latencies_us, 20_000),
            }
        }
        WorkerMode::Desired | WorkerMode::Methods | WorkerMode::Idle | WorkerMode::Reconnect => {
            let received = Arc::new(AtomicU64::new(0));
            let tasks = load.serve_events(args.mode == WorkerMode::Methods, received.clone());
            // Hold until the coordinator says "stop".
            let _ = stdin.next_line().await;
            drop(tasks);
            WorkerResult {
                received: received.load(Ordering::Relaxed),
                ..Default::default()
            }
        }
    };
    say(&result)?;
    load.disconnect().await;
    Ok(())
}

/// Prints one protocol line for the coordinator.
fn say(line: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(line)?);
    Ok(())
}

/// [`WorkerMode::Reconnect`]: the same devices connected, dropped and connected again on the
/// coordinator's word, with the TLS sessions each device kept (`resume`) or fresh ones (`full`).
async fn reconnect(template: &ConnectTemplate, devices: &[(String, String)]) -> Result<()> {
    let tls = template
        .tls
        .as_deref()
        .context("the reconnect mode needs TLS (--ca-file)")?;
    let kind = LoadKind::Hold;
    let mut sessions = DeviceSessions::new(tls, devices.len());
    let started = Instant::now();
    let mut load =
        Some(LoadDevices::connect_with_sessions(template, devices, kind, &sessions).await);
    say(&Connected::of(load.as_ref().context("connected")?, started))?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(word) = stdin.next_line().await? {
        let started = Instant::now();
        let word = word.trim();
        if word == "stop" {
            break;
        }
        if let Some(connected) = load.take() {
            connected.disconnect().await;
        }
        match word {
            "drop" => {}
            "resume" | "full" => {
                if word == "full" {
                    sessions = DeviceSessions::new(tls, devices.len());
                }
                load = Some(
                    LoadDevices::connect_with_sessions(template, devices, kind, &sessions).await,
                );
            }
            other => anyhow::bail!("expected drop, resume, full or stop, got {other:?}"),
        }
        let line = match &load {
            Some(connected) => Connected::of(connected, started),
            None => Connected {
                connected: 0,
                failed: 0,
                connect_ms: started.elapsed().as_millis() as u64,
                resumed: 0,
            },
        };
        say(&line)?;
    }
    if let Some(connected) = load {
        connected.disconnect().await;
    }
    say(&WorkerResult::default())
}

/// Keeps at most `max` evenly spaced samples of a sorted list.
fn thin(sorted: Vec<u64>, max: usize) -> Vec<u64> {
    if sorted.len() <= max {
        return sorted;
    }
    let step = sorted.len() as f64 / max as f64;
    (0..max)
        .map(|i| sorted[(i as f64 * step) as usize])
        .collect()
}
