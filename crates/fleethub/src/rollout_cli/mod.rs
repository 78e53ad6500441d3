//! `fleethub rollout …`: phased firmware rollouts (docs/rollouts.md) over `/v1/rollouts`, as
//! tables for people or `--json` for scripts, plus `plan` and `rehearse`, which play a rollout
//! written in a file against the devices it would target before anything moves.

pub mod fleet;
pub mod rehearse;
pub mod spec_file;

use crate::simulate::target::{HubArgs, HubTarget};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use fleethub_rollout::rehearsal::{self, Expectations};
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
    /// Which wave takes each targeted device and when it is pushed (windows and batches
    /// applied), if every device is healthy. Nothing is created.
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
