//! Where the virtual devices run: in this process, or split by index range over
//! `fleethub simulate-worker` child processes (one process may hold at most ~19,000
//! connections here). Either way the caller sees one summed [`StatsSnapshot`].

use crate::roster::Roster;
use anyhow::{Context, Result};
use fleethub_sim::esp32::{spawn_device, SimClock, SimulationStats, StatsSnapshot};
use fleethub_sim::{ConnectTemplate, FirmwareKey};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long devices get to disconnect cleanly once told to stop.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How often a worker reports its counters.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Where devices connect, in a form that crosses process boundaries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectPlan {
    /// TCP host the devices dial.
    pub host: String,
    pub port: u16,
    /// The hub's HostName (user names, token audiences).
    pub hub_host_name: String,
    /// Every CA the devices trust (PEM): the hub's, and the firmware server's when there is one.
    pub trust_pem: String,
    /// The hub's firmware signing key (PEM) the devices pin, if any.
    #[serde(default)]
    pub firmware_key_pem: Option<String>,
    /// How long the devices' SAS tokens are valid [default: an hour].
    #[serde(default)]
    pub sas_lifetime_secs: Option<u64>,
}

impl ConnectPlan {
    /// The firmware key the devices pin, parsed once for the whole process.
    pub fn firmware_key(&self) -> Result<Option<Arc<FirmwareKey>>> {
        self.firmware_key_pem
            .as_deref()
            .map(|pem| {
                FirmwareKey::from_pem(pem)
                    .map(Arc::new)
                    .map_err(|e| anyhow::anyhow!("the hub's firmware key: {e}"))
            })
            .transpose()
    }

    /// The device library's template.
    pub fn template(&self) -> Result<ConnectTemplate> {
        Ok(ConnectTemplate {
            host: self.host.clone(),
            port: self.port,
            hub_host_name: self.hub_host_name.clone(),
            tls: Some(
                fleethub_sim::tls_config_trusting(self.trust_pem.as_bytes())
                    .context("the CA the devices should trust")?,
            ),
            sas_lifetime_secs: self.sas_lifetime_secs,
        })
    }
}

/// What a worker process is told on its first line of stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub roster: Roster,
    pub connect: ConnectPlan,
    pub time_scale: f64,
    pub range: Range<usize>,
}

/// Adds one snapshot's counters into another.
pub fn add(total: &mut StatsSnapshot, s: &StatsSnapshot) {
    total.devices += s.devices;
    total.connected += s.connected;
    total.reporting += s.reporting;
    total.updating += s.updating;
    total.failed += s.failed;
    total.rolled_back += s.rolled_back;
    total.telemetry_sent += s.telemetry_sent;
    total.reconnects += s.reconnects;
    total.power_losses += s.power_losses;
    for (v, n) in &s.versions {
        *total.versions.entry(v.clone()).or_default() += n;
    }
    for (g, versions) in &s.group_versions {
        let slot = total.group_versions.entry(g.clone()).or_default();
        for (v, n) in versions {
            *slot.entry(v.clone()).or_default() += n;
        }
    }
}

/// Devices running in this process.
struct LocalDevices {
    stats: Arc<SimulationStats>,
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl LocalDevices {
    fn start(
        roster: &Roster,
        range: Range<usize>,
        connect: &ConnectPlan,
        clock: &SimClock,
    ) -> Result<LocalDevices> {
        let template = Arc::new(connect.template()?);
        let key = connect.firmware_key()?;
        let stats = Arc::new(SimulationStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let handles = roster
            .specs(range, key)
            .into_iter()
            .map(|spec| {
                spawn_device(
                    spec,
                    template.clone(),
                    clock.clone(),
                    stats.clone(),
                    stop_rx.clone(),
                )
            })
            .collect();
        Ok(LocalDevices {
            stats,
            stop,
            handles,
        })
    }

    /// Tells every device to disconnect and waits for them.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.handles);
        if tokio::time::timeout(STOP_GRACE, all).await.is_err() {
            tracing::warn!("some devices did not disconnect within {STOP_GRACE:?}");
        }
    }
}

/// One child process and the latest counters it sent.
struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    reader: JoinHandle<()>,
}

/// The running fleet.
pub struct RunningDevices {
    local: Option<LocalDevices>,
    workers: Vec<WorkerProcess>,
    slots: SnapshotSlots,
}

impl RunningDevices {
    /// Starts every device: here when `processes` ≤ 1, else in that many worker processes.
    pub async fn start(
        roster: &Roster,
        connect: &ConnectPlan,
        clock: &SimClock,
        processes: usize,
    ) -> Result<RunningDevices> {
        if processes <= 1 {
            let local = LocalDevices::start(roster, 0..roster.len(), connect, clock)?;
            return Ok(RunningDevices {
                local: Some(local),
                workers: Vec::new(),
                slots: SnapshotSlots::new(0),
            });
        }
        let ranges = roster.split(processes);
        let slots = SnapshotSlots::new(ranges.len());
        let mut workers = Vec::new();
        for (i, range) in ranges.into_iter().enumerate() {
            let plan = WorkerPlan {
                roster: roster.clone(),
                connect: connect.clone(),
                time_scale: clock.scale(),
                range,
            };
            workers.push(spawn_worker(&plan, slots.clone(), i).await?);
        }
        Ok(RunningDevices {
            local: None,
            workers,
            slots,
        })
    }

    /// The fleet's counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        match &self.local {
            Some(l) => l.stats.snapshot(),
            None => self.slots.sum(),
        }
    }

    /// Tells every device to disconnect and waits for them. Returns the counters as they were
    /// when the stop was asked for (the fleet as it ran, still connected), taken fresh in every
    /// process rather than from the last periodic line.
    pub async fn stop(mut self) -> StatsSnapshot {
        if let Some(local) = self.local.take() {
            let running = local.stats.snapshot();
            local.stop().await;
            return running;
        }
        for w in self.workers.iter_mut() {
            let _ = w.stdin.write_all(b"stop\n").await;
            let _ = w.stdin.flush().await;
        }
        for mut w in std::mem::take(&mut self.workers) {
            let waited = tokio::time::timeout(STOP_GRACE + Duration::from_secs(5), async {
                let _ = (&mut w.reader).await;
                w.child.wait().await
            })
            .await;
            if waited.is_err() {
                tracing::warn!("a simulate worker did not stop in time; killing it");
                let _ = w.child.kill().await;
            }
        }
        self.slots.sum()
    }
}

async fn spawn_worker(
    plan: &WorkerPlan,
    slots: SnapshotSlots,
    slot: usize,
) -> Result<WorkerProcess> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("simulate-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let mut child = cmd.spawn().context("starting a simulate-worker process")?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let mut line = serde_json::to_string(plan)?;
    line.push('\n');
    stdin.write_all(line.as_bytes()).await?;
    stdin.flush().await?;
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<StatsSnapshot>(&line) {
                Ok(s) => slots.set(slot, s),
                Err(e) => tracing::warn!("simulate worker {slot} said {line:?}: {e}"),
            }
        }
    });
    Ok(WorkerProcess {
        child,
        stdin,
        reader,
    })
}

/// `fleethub simulate-worker`: reads a [`WorkerPlan`] line, runs those devices, prints their
/// counters as JSON lines until told `stop` (or its stdin closes). Its last line is the counters
/// at that moment, before the devices disconnect.
pub async fn run_worker() -> Result<()> {
    // Ctrl-C in a terminal reaches the whole process group; the coordinator decides when to stop.
    tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let first = stdin.next_line().await?.context("no plan on stdin")?;
    let plan: WorkerPlan = serde_json::from_str(&first).context("reading the worker plan")?;
    let clock = SimClock::new(plan.time_scale);
    let devices = LocalDevices::start(&plan.roster, plan.range.clone(), &plan.connect, &clock)?;
    let mut ticker = tokio::time::interval(REPORT_EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => println!("{}", serde_json::to_string(&devices.stats.snapshot())?),
            line = stdin.next_line() => match line {
                Ok(Some(l)) if l.trim() != "stop" => continue,
                _ => break,
            },
        }
    }
    println!("{}", serde_json::to_string(&devices.stats.snapshot())?);
    devices.stop().await;
    Ok(())
}

/// The latest snapshot of each worker, summed on demand.
#[derive(Clone)]
struct SnapshotSlots(Arc<Mutex<Vec<StatsSnapshot>>>);

impl SnapshotSlots {
    fn new(n: usize) -> SnapshotSlots {
        SnapshotSlots(Arc::new(Mutex::new(vec![StatsSnapshot::default(); n])))
    }

    fn set(&self, i: usize, s: StatsSnapshot) {
        self.0.lock().expect("stats lock")[i] = s;
    }

    fn sum(&self) -> StatsSnapshot {
        let mut total = StatsSnapshot::default();
        for s in self.0.lock().expect("stats lock").iter() {
            add(&mut total, s);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_add_up_per_version_and_group() {
        let one = |g: &str, v: &str, n: u64| StatsSnapshot {
            devices: n,
            connected: n,
            versions: [(v.to_string(), n)].into(),
            group_versions: [(g.to_string(), [(v.to_string(), n)].into())].into(),
            ..Default::default()
        };
        let slots = SnapshotSlots::new(3);
        slots.set(0, one("hq", "1.0.0", 2));
        slots.set(1, one("hq", "2.1.0", 3));
        slots.set(2, one("beta", "2.1.0", 4));
        let total = slots.sum();
        assert_eq!(total.devices, 9);
        assert_eq!(total.connected, 9);
        assert_eq!(total.versions["2.1.0"], 7);
        assert_eq!(total.group_versions["hq"]["1.0.0"], 2);
        assert_eq!(total.group_versions["hq"]["2.1.0"], 3);
        assert_eq!(total.group_versions["beta"].len(), 1);
    }

    #[test]
    fn a_worker_plan_crosses_the_pipe_intact() {
        let scenario = crate::scenario::Scenario::parse(
            "[[group]]\nname = \"g\"\ncount = 3\n[group.behavior.faults]\npower_loss = 0.5\n",
        )
        .unwrap();
        let plan = WorkerPlan {
            roster: Roster::new(&scenario, false),
            connect: ConnectPlan {
                host: "127.0.0.1".into(),
                port: 8883,
                hub_host_name: "localhost".into(),
                trust_pem: "PEM".into(),
                firmware_key_pem: Some("KEY".into()),
                sas_lifetime_secs: Some(7 * 86_400),
            },
            time_scale: 360.0,
            range: 1..3,
        };
        let back: WorkerPlan =
            serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back.range, 1..3);
        assert_eq!(back.connect.firmware_key_pem.as_deref(), Some("KEY"));
        assert_eq!(back.roster.all_ids(), plan.roster.all_ids());
        assert_eq!(back.roster.key("sim-g-1"), plan.roster.key("sim-g-1"));
        assert_eq!(back.roster.groups[0].behavior.faults.power_loss, 0.5);
    }
}
