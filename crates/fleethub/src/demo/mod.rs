//! `fleethub demo`: the night a security fix ships, end to end, in one command. An embedded hub
//! on a compressed clock, the 2,500-sensor fleet of `examples/demo/fleet.toml` over real
//! MQTT/TLS and HTTPS, firmware 1.0.0 and 2.1.0 in the hub's store, and the rollout of
//! `examples/demo/rollout.toml`. Boston's Wi-Fi breaks on 2.1.0: its wave trips and is rolled
//! back while the rest of the fleet goes on. Live progress while it runs, then the morning
//! summary per wave and per city; exit 0 only when the story came out as told.
//!
//! Time: the hub and every device read one [`SimClock`]. At 200 devices an hour in two-hour
//! device-local windows the rollout needs three nights; the demo runs them at `--scale` and skips
//! the quiet days at once (only when no device is being updated, soaked or rolled back, so no
//! timer that matters is jumped over).
//!
//! CPU: the hub runs on a runtime of its own ([`hub_runtime`]), so the summary gives the hub's
//! CPU apart from the devices'.

pub mod hub_runtime;
mod summary;

use crate::config::HubClock;
use crate::rollout_cli::{spec_file, view, watch};
use crate::simulate::target::HubTarget;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use fleethub_client::HubClient;
use fleethub_scenario::{firmware, processes, roster::Roster, scenario::Scenario};
use fleethub_sim::esp32::SimClock;
use hub_runtime::HubRuntime;
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The fleet and the rollout, as files a reader can open.
const FLEET: &str = include_str!("../../../../examples/demo/fleet.toml");
const ROLLOUT: &str = include_str!("../../../../examples/demo/rollout.toml");
/// The rollout's id.
const ID: &str = "security-fix-2-1-0";
/// The devices' and the operator's SAS tokens outlive the demo's simulated nights.
const SAS_LIFETIME_SECS: u64 = 14 * 86_400;
/// The longest a hub sleeper waits in real time, so a skipped day is noticed at once.
const MAX_REAL_SLEEP: Duration = Duration::from_millis(200);

/// `fleethub demo` arguments: none needed.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Print the morning summary as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Simulated seconds per real second while something happens.
    #[arg(long, default_value_t = 480.0, hide = true)]
    pub scale: f64,
    /// Give up after this many real seconds.
    #[arg(long, default_value_t = 175, hide = true)]
    pub max_real_secs: u64,
}

/// The hub's clock: the devices' simulated time, with sleeps cut short so a skip is seen.
struct DemoClock(SimClock);

impl fleethub_core::Clock for DemoClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from(self.0.now())
    }

    fn real_duration(&self, d: Duration) -> Duration {
        let scaled = d.div_f64(self.0.scale());
        scaled.min(MAX_REAL_SLEEP)
    }
}

/// 23:00 in New York on a December evening: setting up takes some simulated time, and the quiet
/// stretch before the first window (02:00) is skipped.
fn night() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 4, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Runs the demo; `Ok(true)` when the story came out as told.
pub async fn run(args: DemoArgs) -> Result<bool> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.max_real_secs);
    let clock = SimClock::starting_at(SystemTime::from(night()), args.scale);
    let hub_clock = HubClock(Arc::new(DemoClock(clock.clone())));
    let say = |line: String| eprintln!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
    let hub_runtime = HubRuntime::new().context("starting the embedded hub's runtime")?;
    let mut target = HubTarget::embedded_on(hub_runtime.handle(), move |cfg| {
        cfg.clock = hub_clock;
        // Every simulated device downloads from 127.0.0.1.
        cfg.https_limits.per_address = 0;
    })
    .await?;
    target.connect.sas_lifetime_secs = Some(SAS_LIFETIME_SECS);
    let rest = target.rest.clone().with_token_ttl(SAS_LIFETIME_SECS);
    let scenario =
        Scenario::parse(FLEET).map_err(|e| anyhow::anyhow!("examples/demo/fleet.toml: {e}"))?;
    let roster = Arc::new(Roster::new(&scenario, false));
    say(format!(
        "embedded hub at {}; registering {} sensors in ten cities",
        rest.base(),
        roster.len()
    ));
    roster.register(&rest).await?;
    let prepared =
        firmware::prepare(scenario.simulation.seed, &scenario.firmware, &rest, false).await?;
    let mut connect = target.connect.clone();
    connect.firmware_key_pem = prepared.key_pem.clone();
    let fix = prepared
        .artifacts
        .iter()
        .find(|a| a.desired.version == "2.1.0")
        .context("the fleet file names no 2.1.0")?
        .desired
        .sha256
        .clone();
    say("uploaded 1.0.0 and 2.1.0 to the firmware store (signed by the hub)".into());
    let fleet = processes::RunningDevices::start(&roster, &connect, &clock, 1).await?;
    wait_reported(&rest, roster.len(), deadline).await?;
    say(format!(
        "{} sensors online on 1.0.0; it is {} in New York",
        roster.len(),
        local(clock.now())
    ));

    let mut spec = spec_file::parse(ROLLOUT, true)
        .map_err(|e| anyhow::anyhow!("examples/demo/rollout.toml: {e}"))?;
    spec.artifact.sha256 = fix;
    let spec = serde_json::to_value(&spec)?;
    rest.create_rollout(ID, &spec, None).await?;
    say(format!(
        "rollout {ID} created: canary, boston, rest; 200 an hour; 02:00-04:00 local"
    ));

    let end = follow(&rest, &clock, deadline, started).await;
    let view = rest.rollout(ID).await?.unwrap_or_default();
    let summary = summary::Summary::read(&rest, &view, clock.now()).await;
    let stats = fleet.stop().await;
    drop(stats);
    drop(prepared);
    // Before the store closes: its threads' figures end with them.
    let cost = summary::Cost {
        real: started.elapsed(),
        cpu: hub_runtime.cpu(),
    };
    target.close();
    drop(hub_runtime);
    let summary = summary?;
    end?;
    print!("{}", summary.text(&cost));
    if args.json {
        println!("{}", serde_json::to_string(&summary.json(&cost))?);
    }
    Ok(summary.story_told())
}

/// `01:45` in New York.
pub(crate) fn local(t: SystemTime) -> String {
    // New York keeps standard time (UTC-5) all through December.
    let t = DateTime::<Utc>::from(t) - chrono::Duration::hours(5);
    t.format("%a %H:%M").to_string()
}

/// Waits until every sensor reported 1.0.0 (the rollout's target reads it).
async fn wait_reported(rest: &HubClient, n: usize, deadline: Instant) -> Result<()> {
    let query = "SELECT COUNT() AS n FROM devices WHERE properties.reported.firmware.current_version = '1.0.0'";
    loop {
        let rows = rest.query_all(query, 10).await?;
        let got = rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
        if got as usize >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {got} of {n} sensors reported 1.0.0 in time");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Follows the rollout until it ends or the deadline: events as they happen, bars redrawn,
/// quiet days skipped.
async fn follow(
    rest: &HubClient,
    clock: &SimClock,
    deadline: Instant,
    started: Instant,
) -> Result<()> {
    let tty = std::io::stderr().is_terminal();
    let mut cursor: Option<i64> = None;
    let mut drawn = 0usize;
    let mut last_plain = Instant::now() - Duration::from_secs(60);
    let mut err = std::io::stderr();
    loop {
        let Some(v) = rest.rollout(ID).await? else {
            bail!("the rollout disappeared");
        };
        let page = rest.rollout_events(ID, cursor, Some(1000)).await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if let Some(last) = events.last().and_then(|e| e["seq"].as_i64()) {
            cursor = Some(last);
        }
        let mut out = String::new();
        if tty && drawn > 0 {
            out.push_str(&format!("\x1b[{drawn}A\x1b[J"));
        }
        for e in &events {
            let kind = e["kind"].as_str().unwrap_or_default();
            if matches!(kind, "device_failed" | "device_flagged" | "device_refused") {
                continue;
            }
            let at = e["at"]
                .as_str()
                .and_then(|s| s.parse::<DateTime<Utc>>().ok())
                .map(|t| local(SystemTime::from(t)))
                .unwrap_or_default();
            out.push_str(&format!(
                "[{:>5.1}s] {at} NY  {}\n",
                started.elapsed().as_secs_f64(),
                crate::cli::table::text(&e["message"])
            ));
        }
        let done = watch::finished(&v);
        if tty || last_plain.elapsed() >= Duration::from_secs(10) || done {
            let block = format!(
                "  simulated {} New York time (x{:.0})\n{}",
                local(clock.now()),
                clock.scale(),
                view::progress(&v)
            );
            drawn = block.lines().count();
            out.push_str(&block);
            last_plain = Instant::now();
        } else {
            drawn = 0;
        }
        err.write_all(out.as_bytes())?;
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the rollout had not finished after {}s",
                started.elapsed().as_secs()
            );
        }
        skip_quiet_stretch(&v, clock, &started);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// When no device is being updated, soaked or rolled back and the rollout's next wake is more
/// than half an hour away, moves the clock to five minutes before it.
fn skip_quiet_stretch(v: &Value, clock: &SimClock, started: &Instant) {
    let t = &v["totals"];
    if view::n(t, "in_progress") + view::n(t, "rolling_back") > 0 {
        return;
    }
    let Some(wake) = v["next_wake"]
        .as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
    else {
        return;
    };
    let now = DateTime::<Utc>::from(clock.now());
    let ahead = (wake - now).to_std().unwrap_or_default();
    if ahead > Duration::from_secs(1800) {
        let by = ahead - Duration::from_secs(300);
        clock.skip(by);
        eprintln!(
            "[{:>5.1}s] nothing to do until {} New York: skipping {}h{:02}m of quiet day",
            started.elapsed().as_secs_f64(),
            local(SystemTime::from(wake)),
            by.as_secs() / 3600,
            by.as_secs() % 3600 / 60
        );
    }
}
