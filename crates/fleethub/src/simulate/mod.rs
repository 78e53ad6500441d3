//! `fleethub simulate`: a fleet of virtual ESP32 devices over real MQTT/TLS against a hub, with
//! fault injection, an operator timeline and expectations checked against what the hub serves,
//! to rehearse a rollout before it touches hardware.
//!
//! The runner lives in `fleethub-scenario` (scenario files, roster, firmware, device
//! processes, timeline, expectations, report); here are the flags, [`target`] (which hub; or
//! one started in-process) and the live [`view`].

pub mod target;
pub mod view;

pub use fleethub_scenario::processes::run_worker;
use fleethub_scenario::{duration, firmware, processes, report, roster, scenario, timeline};

use anyhow::{Context, Result};
use duration::SimDuration;
use fleethub_sim::esp32::{Behavior, SimClock};
use report::{Report, Served};
use roster::Roster;
use scenario::{Group, Scenario, SimulationSection};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use timeline::Operator;
use tokio::sync::watch;

/// How the report is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    #[default]
    Text,
    Json,
}

/// `fleethub simulate` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// A scenario file (TOML): groups, firmware, a timeline of steps and expectations.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub hub: target::HubArgs,
    /// Devices to simulate (without --scenario).
    #[arg(long, default_value_t = 100, conflicts_with = "scenario")]
    pub devices: usize,
    /// A tag every device gets, `key=value`; repeat for more (without --scenario).
    #[arg(long = "tags", value_parser = parse_tag, conflicts_with = "scenario")]
    pub tags: Vec<(String, String)>,
    /// The devices' factory firmware version (without --scenario).
    #[arg(long, default_value = "1.0.0", conflicts_with = "scenario")]
    pub firmware: String,
    /// Seconds between telemetry messages per device, 0 for none (without --scenario).
    #[arg(long, default_value_t = 60.0, conflicts_with = "scenario")]
    pub telemetry_interval: f64,
    /// Seed for keys and faults [default: the scenario's, else 1]. Same seed, same run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Create the devices (with their derived keys and tags) before connecting them. Needed the
    /// first time against a hub; embedded hubs always register.
    #[arg(long)]
    pub register: bool,
    /// Device id prefix [default: the scenario's, else sim-].
    #[arg(long)]
    pub prefix: Option<String>,
    /// Processes holding the devices (one process holds at most ~19,000 connections).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Simulated seconds per real second [default: the scenario's, else 1].
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Stop after this much simulated time (e.g. 2h) [default: the scenario's; else Ctrl-C].
    #[arg(long)]
    pub duration: Option<SimDuration>,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub report: ReportFormat,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!(
            "'{s}' is not a tag; write key=value, e.g. city=boston"
        )),
    }
}

/// The scenario a run follows: the file, or one group built from the flags.
fn load(args: &SimulateArgs) -> Result<(Scenario, String, bool)> {
    let (mut scenario, label, bare_ids) = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the scenario {}", path.display()))?;
            let s =
                Scenario::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (s, path.display().to_string(), false)
        }
        None => {
            let tags: Map<String, Value> = args
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let group = Group {
                name: "fleet".into(),
                count: args.devices,
                tags,
                firmware: args.firmware.clone(),
                behavior: Behavior {
                    telemetry_interval_s: args.telemetry_interval,
                    ..Behavior::default()
                },
            };
            let s = Scenario {
                simulation: SimulationSection {
                    firmware: args.firmware.clone(),
                    ..SimulationSection::default()
                },
                groups: vec![group],
                firmware: Vec::new(),
                steps: Vec::new(),
                expectations: Vec::new(),
            };
            (s, "flags".to_string(), true)
        }
    };
    let sim = &mut scenario.simulation;
    if let Some(seed) = args.seed {
        sim.seed = seed;
    }
    if let Some(scale) = args.time_scale {
        anyhow::ensure!(
            scale.is_finite() && scale > 0.0,
            "--time-scale must be a positive number"
        );
        sim.time_scale = scale;
    }
    if let Some(prefix) = &args.prefix {
        sim.prefix = prefix.clone();
    }
    if args.duration.is_some() {
        sim.duration = args.duration;
    }
    anyhow::ensure!(scenario.device_count() > 0, "--devices must be at least 1");
    Ok((scenario, label, bare_ids))
}

/// Runs a simulation to its end and prints the report; `Ok(false)` when an expectation failed.
pub async fn run(args: SimulateArgs) -> Result<bool> {
    let (scenario, label, bare_ids) = load(&args)?;
    let target = target::HubTarget::resolve(&args.hub, args.scenario.is_some()).await?;
    let sim = scenario.simulation.clone();
    let serve_locally = scenario.steps.iter().any(timeline::places_artifacts);
    let prepared =
        firmware::prepare(sim.seed, &scenario.firmware, &target.rest, serve_locally).await?;
    let mut connect = target.connect.clone();
    if let Some(server) = &prepared.server {
        connect.trust_pem.push('\n');
        connect.trust_pem.push_str(&server.ca_pem);
    }
    connect.firmware_key_pem = prepared.key_pem.clone();
    let roster = Arc::new(Roster::new(&scenario, bare_ids));
    if args.register || target.embedded {
        eprintln!(
            "registering {} devices on {}",
            roster.len(),
            target.description
        );
        roster.register(&target.rest).await?;
    }

    let clock = SimClock::new(sim.time_scale);
    let started = Instant::now();
    let processes = args.processes.max(1);
    let fleet = processes::RunningDevices::start(&roster, &connect, &clock, processes).await?;
    let operator = Operator {
        rest: target.rest.clone(),
        roster: roster.clone(),
        artifacts: prepared.artifacts.clone(),
        clock: clock.clone(),
        started,
    };
    let (outcomes, steps, ended) = drive(&scenario, &operator, &fleet, &clock, started).await;
    let simulated = SimDuration::whole_secs(clock.elapsed());
    // The fleet as it ran, before the devices are told to disconnect.
    let stats = fleet.stop().await;
    let firmware_served = prepared
        .served(&target.rest)
        .await
        .map(|(requests, bytes)| Served { requests, bytes });
    let passed = outcomes.iter().all(|o| o.passed);
    let report = Report {
        scenario: label,
        hub: target.description.clone(),
        seed: sim.seed,
        devices: roster.len(),
        groups: roster.groups.len(),
        processes,
        time_scale: sim.time_scale,
        simulated,
        real_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        ended,
        steps,
        expectations: outcomes,
        stats,
        firmware_served,
        passed,
    };
    match args.report {
        ReportFormat::Text => print!("{}", report.text()),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    drop(prepared);
    target.close();
    Ok(passed)
}

/// Runs the timeline and the expectations beside the live view until the run ends: every
/// expectation decided (and every step run), the scenario's duration, or Ctrl-C / SIGTERM.
async fn drive(
    scenario: &Scenario,
    operator: &Operator,
    fleet: &processes::RunningDevices,
    clock: &SimClock,
    started: Instant,
) -> (Vec<timeline::Outcome>, Vec<timeline::StepRecord>, String) {
    let (ran_tx, ran_rx) = watch::channel(BTreeMap::new());
    let (records_tx, records_rx) = watch::channel(Vec::new());
    let (ended_tx, ended_rx) = watch::channel(false);
    let pending = AtomicUsize::new(scenario.expectations.len());
    let steps = operator.run_steps(&scenario.steps, &ran_tx, &records_tx);
    let judged = futures_util::future::join_all(scenario.expectations.iter().map(|e| {
        let (ran, ended, pending) = (ran_rx.clone(), ended_rx.clone(), &pending);
        async move {
            let o = operator.judge(e, ran, ended).await;
            pending.fetch_sub(1, Ordering::Relaxed);
            o
        }
    }));
    let until_duration = async {
        match scenario.simulation.duration {
            Some(d) => clock.sleep(d.0).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(steps, judged, until_duration);
    let stop = crate::stop_signal::stop_signal();
    tokio::pin!(stop);
    let mut view = view::LiveView::new();
    let mut tick = tokio::time::interval(view.period());
    let (mut steps_done, mut outcomes) = (scenario.steps.is_empty(), None);
    let ended = loop {
        tokio::select! {
            _ = &mut steps, if !steps_done => steps_done = true,
            o = &mut judged, if outcomes.is_none() => outcomes = Some(o),
            _ = &mut until_duration => break format!("reached its duration ({})", SimDuration::whole_secs(clock.elapsed())),
            _ = &mut stop => break "stopped by a signal".to_string(),
            _ = tick.tick() => {
                let stats = fleet.snapshot();
                let done = records_rx.borrow().len();
                let next_step = scenario.steps.get(done).map(|s| format!("{} {}", s.at, timeline::summarize(s)));
                view.draw(&view::Frame {
                    stats: &stats,
                    simulated: clock.elapsed(),
                    time_scale: clock.scale(),
                    real: started.elapsed(),
                    next_step,
                    pending: pending.load(Ordering::Relaxed),
                });
            }
        }
        if steps_done && outcomes.is_some() && !scenario.expectations.is_empty() {
            break "every step ran and every expectation was decided".to_string();
        }
    };
    let outcomes = match outcomes {
        Some(o) => o,
        None => {
            let _ = ended_tx.send(true);
            judged.await
        }
    };
    let records = records_rx.borrow().clone();
    (outcomes, records, ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn args(line: &[&str]) -> Result<SimulateArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("simulate").chain(line.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn flags_build_one_tagged_group() {
        let a = args(&[
            "--devices",
            "3",
            "--tags",
            "city=boston",
            "--tags",
            "floor=2",
            "--seed",
            "7",
            "--prefix",
            "t-",
        ])
        .unwrap();
        let (s, label, bare) = load(&a).unwrap();
        assert_eq!(label, "flags");
        assert!(bare);
        assert_eq!(s.simulation.seed, 7);
        assert_eq!(s.groups[0].tags["city"], "boston");
        assert_eq!(s.groups[0].tags["floor"], "2");
        assert_eq!(Roster::new(&s, bare).all_ids(), ["t-0", "t-1", "t-2"]);
    }

    #[test]
    fn flags_override_the_scenario_and_fleet_flags_conflict_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "[simulation]\nseed = 3\ntime_scale = 60\n[[group]]\nname = \"g\"\ncount = 2\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let (s, _, _) = load(&args(&["--scenario", f]).unwrap()).unwrap();
        assert_eq!((s.simulation.seed, s.simulation.time_scale), (3, 60.0));
        let (s, _, _) = load(
            &args(&[
                "--scenario",
                f,
                "--seed",
                "9",
                "--time-scale",
                "10",
                "--duration",
                "1h",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!((s.simulation.seed, s.simulation.time_scale), (9, 10.0));
        assert_eq!(s.simulation.duration, Some(SimDuration::from_secs(3600)));
        assert!(args(&["--scenario", f, "--devices", "5"]).is_err());
        assert!(args(&["--tags", "nokey"]).is_err());
        std::fs::write(
            &file,
            "[[group]]\nname = \"g\"\ncount = 2\nfirmwre = \"x\"\n",
        )
        .unwrap();
        let err = load(&args(&["--scenario", f]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.toml") && err.contains("line 4") && err.contains("firmwre"),
            "{err}"
        );
    }
}
