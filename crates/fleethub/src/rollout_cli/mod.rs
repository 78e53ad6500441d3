//! `fleethub rollout …`: phased firmware rollouts (docs/rollouts.md) over `/v1/rollouts`, as
//! tables for people or `--json` for scripts, plus `plan` and `rehearse`, which play a rollout
//! written in a file against the devices it would target before anything moves.

pub mod fleet;
pub mod rehearse;
pub mod spec_file;
pub mod view;
pub mod watch;

use crate::simulate::target::{HubArgs, HubTarget};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use fleethub_client::{HubClient, RolloutCommand as Command};
use fleethub_rollout::rehearsal::{self, Expectations};
use serde_json::Value;
use std::path::PathBuf;

/// `fleethub rollout` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What to do with rollouts.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RolloutCommand {
    /// Create a rollout from a file (TOML or JSON, docs/rollouts.md); its first wave starts now.
    #[command(
        after_help = "Examples:\n  fleethub rollout create night-2-1-0 --file examples/rollouts/night.toml\n  \
                      fleethub rollout create night-2-1-1 --file night-2-1-1.toml --supersedes night-2-1-0"
    )]
    Create {
        /// Its id: letters, digits and '-'.
        id: String,
        /// The rollout spec.
        #[arg(long)]
        file: PathBuf,
        /// A rollout this one takes over (it pushes nothing more).
        #[arg(long)]
        supersedes: Option<String>,
    },
    /// List rollouts with their compliance.
    #[command(
        after_help = "Examples:\n  fleethub rollout list\n  fleethub rollout list --top 5 --json"
    )]
    List {
        /// At most this many, newest first.
        #[arg(long)]
        top: Option<usize>,
    },
    /// One rollout: status, each wave with its gate, compliance.
    #[command(after_help = "Example:\n  fleethub rollout show night-2-1-0")]
    Show { id: String },
    /// Stop pushing; nothing is undone.
    #[command(after_help = "Example:\n  fleethub rollout pause night-2-1-0")]
    Pause { id: String },
    /// Go on; a tripped wave is armed again. With --where, only the failed and flagged devices
    /// matching a query condition are pushed again (fresh retries).
    #[command(after_help = "Examples:\n  fleethub rollout resume night-2-1-0\n  \
                      fleethub rollout resume night-2-1-0 --where \"tags.city = 'boston'\"")]
    Resume {
        id: String,
        /// A query condition, e.g. "tags.city = 'boston'".
        #[arg(long = "where", value_name = "CONDITION")]
        condition: Option<String>,
    },
    /// Push nothing more; devices not pushed yet are skipped. Final.
    #[command(after_help = "Example:\n  fleethub rollout abort night-2-1-0")]
    Abort { id: String },
    /// Send a wave's devices (or, without --wave, every device the rollout changed) back to
    /// the versions they ran; pauses the rollout.
    #[command(
        after_help = "Examples:\n  fleethub rollout rollback night-2-1-0 --wave boston\n  fleethub rollout rollback night-2-1-0"
    )]
    Rollback {
        id: String,
        #[arg(long)]
        wave: Option<String>,
    },
    /// Push failed and flagged devices again with fresh retries: those named, or all.
    #[command(after_help = "Examples:\n  fleethub rollout retry night-2-1-0\n  \
                      fleethub rollout retry night-2-1-0 --device sensor-0042 --device sensor-0043")]
    Retry {
        id: String,
        /// A device id; repeat for more.
        #[arg(long = "device")]
        devices: Vec<String>,
    },
    /// The audit trail: every wave started, gate passed or tripped, device failed, rollback.
    #[command(
        after_help = "Examples:\n  fleethub rollout events night-2-1-0\n  fleethub rollout events night-2-1-0 --after 120 --top 50 --json"
    )]
    Events {
        id: String,
        /// Only events after this sequence number.
        #[arg(long)]
        after: Option<i64>,
        /// At most this many.
        #[arg(long)]
        top: Option<u32>,
    },
    /// Every device the rollout tracks, with its wave, state and attempts.
    #[command(after_help = "Example:\n  fleethub rollout devices night-2-1-0 --json")]
    Devices { id: String },
    /// Live progress bars per wave and new events as they happen, until the rollout ends.
    #[command(after_help = "Example:\n  fleethub rollout watch night-2-1-0 --interval 2")]
    Watch {
        id: String,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Which wave takes each targeted device and when it is pushed (windows and batches
    /// applied), if every device is healthy. Nothing is created.
    #[command(
        after_help = "Examples:\n  fleethub rollout plan night --file examples/rollouts/night.toml\n  \
                      fleethub rollout plan night --file examples/rollouts/night.toml --start 2026-12-02T22:00:00Z --devices"
    )]
    Plan {
        /// The id the rollout will have (percentage buckets derive from it unless the spec
        /// names a seed).
        id: String,
        #[command(flatten)]
        play: PlayArgs,
        /// List every device with its wave and push time.
        #[arg(long)]
        devices: bool,
    },
    /// Play the rollout against a simulated copy of the devices it targets, with the failure
    /// rates you expect, and report what the waves and gates would do and when. Nothing is
    /// created and no device is touched.
    #[command(
        after_help = "Examples:\n  fleethub rollout rehearse night --file examples/rollouts/night.toml --failure-rate 0.01\n  \
                      fleethub rollout rehearse night --file examples/rollouts/night.toml --wave-failure-rate boston=0.5 --never-back-rate 0.001"
    )]
    Rehearse {
        /// The id the rollout will have.
        id: String,
        #[command(flatten)]
        play: PlayArgs,
        #[command(flatten)]
        expect: ExpectArgs,
    },
}

/// Where a plan or rehearsal starts from.
#[derive(Debug, Clone, clap::Args)]
pub struct PlayArgs {
    /// The rollout spec, TOML or JSON (docs/rollouts.md).
    #[arg(long)]
    pub file: PathBuf,
    /// When the rollout would be created (RFC 3339, e.g. 2026-12-02T22:00:00Z) [default: now].
    #[arg(long)]
    pub start: Option<DateTime<Utc>>,
    /// The longest stretch of simulated time played, in days.
    #[arg(long, default_value_t = 30)]
    pub horizon_days: u64,
}

/// The devices' expected behaviour in a rehearsal.
#[derive(Debug, Clone, clap::Args)]
pub struct ExpectArgs {
    /// Share of update attempts that fail (0-1).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub failure_rate: f64,
    /// Share of devices that reboot into the image and never come back (0-1).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub never_back_rate: f64,
    /// A failure rate for one wave's devices, `WAVE=RATE`; repeat for more.
    #[arg(long = "wave-failure-rate", value_name = "WAVE=RATE", value_parser = wave_rate)]
    pub wave_failure_rates: Vec<(String, f64)>,
    /// Simulated seconds from a push to the device running the image.
    #[arg(long, default_value_t = 300)]
    pub install_secs: u64,
    /// Simulated seconds between a healthy device's telemetry messages.
    #[arg(long, default_value_t = 300)]
    pub telemetry_interval_secs: u64,
    /// Seeds which devices fail; the same seed rehearses the same night.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("'{s}' is not a rate from 0 to 1, e.g. 0.02")),
    }
}

fn wave_rate(s: &str) -> Result<(String, f64), String> {
    let (wave, r) = s
        .split_once('=')
        .filter(|(w, _)| !w.trim().is_empty())
        .ok_or_else(|| format!("'{s}' must be WAVE=RATE, e.g. boston=0.5"))?;
    Ok((wave.trim().to_string(), rate(r.trim())?))
}

impl ExpectArgs {
    fn expectations(&self, horizon_days: u64) -> Expectations {
        Expectations {
            install_secs: self.install_secs,
            telemetry_interval_secs: self.telemetry_interval_secs,
            failure_rate: self.failure_rate,
            never_back_rate: self.never_back_rate,
            wave_failure_rates: self.wave_failure_rates.iter().cloned().collect(),
            seed: self.seed,
            horizon_secs: horizon_days.saturating_mul(86_400),
        }
    }
}

/// Runs one rollout command.
pub async fn run(args: RolloutArgs) -> Result<()> {
    let target = HubTarget::resolve(&args.hub, false).await?;
    let result = command(&target, &args).await;
    target.close();
    result
}

async fn command(target: &HubTarget, args: &RolloutArgs) -> Result<()> {
    let rest = &target.rest;
    let out = match &args.command {
        RolloutCommand::Create {
            id,
            file,
            supersedes,
        } => {
            let spec = creatable_spec(rest, file).await?;
            rest.create_rollout(id, &spec, supersedes.as_deref())
                .await?
        }
        RolloutCommand::List { top } => {
            let mut all = rest.rollouts().await?;
            if let (Some(n), Some(items)) = (top, all.as_array_mut()) {
                items.truncate(*n);
            }
            all
        }
        RolloutCommand::Show { id } => match rest.rollout(id).await? {
            Some(v) => v,
            None => bail!("rollout '{id}' does not exist"),
        },
        RolloutCommand::Pause { id } => rest.rollout_command(id, &Command::Pause).await?,
        RolloutCommand::Resume { id, condition } => {
            let query = condition.clone();
            rest.rollout_command(id, &Command::Resume { query }).await?
        }
        RolloutCommand::Abort { id } => rest.rollout_command(id, &Command::Abort).await?,
        RolloutCommand::Rollback { id, wave } => {
            let wave = wave.clone();
            rest.rollout_command(id, &Command::Rollback { wave })
                .await?
        }
        RolloutCommand::Retry { id, devices } => {
            let devices = (!devices.is_empty()).then(|| devices.clone());
            rest.rollout_command(id, &Command::Retry { devices })
                .await?
        }
        RolloutCommand::Events { id, after, top } => rest.rollout_events(id, *after, *top).await?,
        RolloutCommand::Devices { id } => {
            let mut devices = rest.rollout_devices(id).await?;
            let view = rest.rollout(id).await?.unwrap_or_default();
            name_waves(&mut devices, &view);
            devices
        }
        RolloutCommand::Watch { id, interval } => {
            return watch::watch(rest, id, *interval, args.json).await
        }
        RolloutCommand::Plan { .. } | RolloutCommand::Rehearse { .. } => {
            return play(target, args).await
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let empty = Vec::new();
    let items = out.as_array().unwrap_or(&empty);
    match &args.command {
        RolloutCommand::List { .. } => print!("{}", view::list_table(items)),
        RolloutCommand::Events { .. } => {
            let events = out["events"].as_array().unwrap_or(&empty);
            print!("{}", view::events_table(events));
            if let Some(next) = out["next"].as_i64() {
                println!("(more: --after {next})");
            }
        }
        RolloutCommand::Devices { .. } => print!("{}", devices_table(items)),
        _ => print!("{}{}", view::details(&out), view::progress(&out)),
    }
    Ok(())
}

/// The spec in `file`, ready to send: an artifact given by version alone (no SHA-256 yet) is
/// looked up in the hub's firmware store.
async fn creatable_spec(rest: &HubClient, file: &std::path::Path) -> Result<Value> {
    let spec = spec_file::read(file)?;
    let mut value = serde_json::to_value(&spec)?;
    if !fleethub_core::firmware::is_sha256_hex(&spec.artifact.sha256) {
        let version = &spec.artifact.version;
        let artifact = rest
            .firmware(version)
            .await
            .with_context(|| format!("finding firmware {version} in the hub's store (upload it first, or give artifact.sha256)"))?;
        let sha = artifact["sha256"]
            .as_str()
            .or_else(|| artifact["artifact"]["sha256"].as_str())
            .context("the firmware store answered without a sha256")?;
        value["artifact"]["sha256"] = Value::String(sha.to_string());
    }
    Ok(value)
}

/// Each device's wave index replaced by the wave's name.
fn name_waves(devices: &mut Value, view: &Value) {
    for d in devices.as_array_mut().into_iter().flatten() {
        if let Some(w) = d["wave"].as_u64() {
            let name = view["waves"][w as usize]["name"].clone();
            if !name.is_null() {
                d["wave"] = name;
            }
        }
    }
}

fn devices_table(devices: &[Value]) -> String {
    crate::cli::table::columns(
        &[
            "id", "wave", "state", "attempt", "version", "status", "failure",
        ],
        devices,
        |d, name| crate::cli::table::text(&d[name]),
    )
}

/// `plan` and `rehearse`.
async fn play(target: &HubTarget, args: &RolloutArgs) -> Result<()> {
    match &args.command {
        RolloutCommand::Plan { id, play, devices } => {
            let expect = ExpectArgs::healthy().expectations(play.horizon_days);
            let r = play_out(target, id, play, &expect).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rehearse::plan_json(&r))?
                );
            } else {
                print!("{}", rehearse::plan_text(&r, *devices));
            }
        }
        RolloutCommand::Rehearse { id, play, expect } => {
            let expect = expect.expectations(play.horizon_days);
            let r = play_out(target, id, play, &expect).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rehearse::rehearse_json(&r))?
                );
            } else {
                print!("{}", rehearse::rehearse_text(&r));
            }
        }
        _ => {}
    }
    Ok(())
}

impl ExpectArgs {
    /// Every device healthy: what a plan assumes.
    fn healthy() -> ExpectArgs {
        ExpectArgs {
            failure_rate: 0.0,
            never_back_rate: 0.0,
            wave_failure_rates: Vec::new(),
            install_secs: 300,
            telemetry_interval_secs: 300,
            seed: 1,
        }
    }
}

/// Reads the spec, clones the targeted devices from the registry and plays the rollout.
async fn play_out(
    target: &HubTarget,
    id: &str,
    play: &PlayArgs,
    expect: &Expectations,
) -> Result<rehearsal::Rehearsal> {
    let spec = spec_file::read(&play.file)?;
    spec.plan(id)
        .map_err(|e| anyhow::anyhow!("{}: {e}", play.file.display()))?;
    let devices = fleet::targeted(&target.rest, &spec).await?;
    let start = play.start.unwrap_or_else(Utc::now);
    rehearsal::rehearse(id, &spec, devices, start, expect)
        .with_context(|| format!("playing {}", play.file.display()))
}
