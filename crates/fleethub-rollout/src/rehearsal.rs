//! A rollout played out on simulated time against a model of its devices, before a real device
//! is touched: `fleethub rollout plan` (every device healthy: which wave takes it and when its
//! window and batch let it be pushed) and `fleethub rollout rehearse` (the failure rates the
//! operator expects: what the waves and gates would do, and when).
//!
//! The model is the device protocol reduced to its outcomes: a pushed device reports
//! `rebooting`, reconnects and reports the new version with `success` after `install_secs`, then
//! sends telemetry every `telemetry_interval_secs`; or it reports `failed` (a failed attempt),
//! or it reboots and is never heard from again. Each outcome is drawn from a hash of the seed,
//! the device and the attempt, so the same inputs rehearse the same night. A rollback push is
//! always carried out. Everything runs on the machine's own clock arithmetic: a week of
//! simulated time takes milliseconds.

use crate::device::{bucket, DeviceFacts, DeviceState};
use crate::event::{Event, EventKind, Push, Step};
use crate::machine::{Observation, Rollout, Status, WaveRecord};
use crate::spec::{RolloutSpec, SpecError};
use chrono::{DateTime, Duration, Utc};
use fleethub_core::firmware::{ReportedFirmware, UpdateStatus};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// What the operator expects of the devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expectations {
    /// From a push to the device running the new version and reporting it.
    pub install_secs: u64,
    /// Telemetry period of a healthy device.
    pub telemetry_interval_secs: u64,
    /// Share (0–1) of attempts that fail (the device reports `failed` and stays on its
    /// version).
    pub failure_rate: f64,
    /// Share (0–1) of devices that reboot into the image and are never heard from again.
    pub never_back_rate: f64,
    /// Per wave name, a failure rate replacing `failure_rate` for that wave's devices.
    #[serde(default)]
    pub wave_failure_rates: BTreeMap<String, f64>,
    /// Seeds the draws.
    pub seed: u64,
    /// The longest stretch of simulated time played.
    pub horizon_secs: u64,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations {
            install_secs: 300,
            telemetry_interval_secs: 300,
            failure_rate: 0.0,
            never_back_rate: 0.0,
            wave_failure_rates: BTreeMap::new(),
            seed: 1,
            horizon_secs: 30 * 86_400,
        }
    }
}

/// What happened to one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceOutcome {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The first push of the rollout's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_push: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub state: DeviceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// A rehearsal's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rehearsal {
    pub started_at: DateTime<Utc>,
    /// When the last thing happened (completion, or the horizon).
    pub ended_at: DateTime<Utc>,
    pub status: Status,
    pub waves: Vec<WaveRecord>,
    /// The audit trail the rollout would write, device events included.
    pub events: Vec<Event>,
    pub devices: Vec<DeviceOutcome>,
}

impl Rehearsal {
    /// The events that are about waves and the rollout (not single devices).
    pub fn milestones(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(|e| {
            !matches!(
                e.kind,
                EventKind::DeviceFailed | EventKind::DeviceFlagged | EventKind::DeviceRefused
            )
        })
    }
}

/// What a simulated device does next.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    /// Reboots into the pushed image and comes back on it (or not: `healthy` false is a
    /// device that reports `failed`).
    Install { attempt: u32, healthy: bool },
    /// Says it is rebooting, then nothing ever again.
    Vanish { attempt: u32 },
    /// Installs the rollback's version.
    Restore { attempt: u32, version: String },
    /// One telemetry message, and the next after the interval while any remain.
    Telemetry { left: u32 },
}

/// Device acts by time, then by the order they were scheduled in.
type Agenda = BinaryHeap<Reverse<(DateTime<Utc>, u64, usize, Act)>>;

struct Player<'a> {
    rollout: Rollout,
    expect: &'a Expectations,
    now: DateTime<Utc>,
    agenda: Agenda,
    seq: u64,
    ids: Vec<String>,
    index: HashMap<String, usize>,
    /// Per device: the latest push, (attempt, version).
    latest: Vec<Option<u32>>,
    running: Vec<String>,
    first_push: Vec<Option<DateTime<Utc>>>,
    dead: Vec<bool>,
    events: Vec<Event>,
    wave_names: Vec<String>,
}

/// A number in [0, 1) from the seed, a device and what is drawn.
fn draw(seed: u64, device: &str, what: &str) -> f64 {
    let b = bucket(&format!("{seed}/{what}"), device);
    f64::from(b) / f64::from(crate::device::BUCKETS)
}

impl Player<'_> {
    fn at(&self, secs: u64) -> DateTime<Utc> {
        self.now + Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
    }

    fn schedule(&mut self, when: DateTime<Utc>, device: usize, act: Act) {
        self.seq += 1;
        self.agenda.push(Reverse((when, self.seq, device, act)));
    }

    fn take(&mut self, step: Step) {
        for push in step.pushes {
            self.pushed(push);
        }
        self.events.extend(step.events);
    }

    fn pushed(&mut self, push: Push) {
        let Some(&d) = self.index.get(&push.device) else {
            return;
        };
        self.latest[d] = Some(push.attempt);
        let install = self.at(self.expect.install_secs);
        if push.rollback {
            let act = Act::Restore {
                attempt: push.attempt,
                version: push.version,
            };
            self.schedule(install, d, act);
            return;
        }
        self.first_push[d].get_or_insert(self.now);
        let id = &self.ids[d];
        if draw(self.expect.seed, id, "never-back") < self.expect.never_back_rate {
            let half = self.at(self.expect.install_secs / 2);
            self.schedule(
                half,
                d,
                Act::Vanish {
                    attempt: push.attempt,
                },
            );
            return;
        }
        let wave = self
            .rollout
            .device(id)
            .and_then(|r| r.wave)
            .and_then(|w| self.wave_names.get(w));
        let rate = wave
            .and_then(|w| self.expect.wave_failure_rates.get(w))
            .copied()
            .unwrap_or(self.expect.failure_rate);
        let healthy = draw(self.expect.seed, id, &format!("attempt-{}", push.attempt)) >= rate;
        self.schedule(
            install,
            d,
            Act::Install {
                attempt: push.attempt,
                healthy,
            },
        );
    }

    fn observe(&mut self, observation: Observation) {
        let step = self.rollout.observe(self.now, observation);
        self.take(step);
    }

    fn report(&mut self, d: usize, version: &str, status: UpdateStatus, error: Option<String>) {
        let firmware = ReportedFirmware {
            current_version: version.to_string(),
            status,
            progress: None,
            target_version: Some(self.rollout.spec().artifact.version.clone()),
            last_update_time: None,
            error,
        };
        let device = self.ids[d].clone();
        self.observe(Observation::Reported { device, firmware });
    }

    fn act(&mut self, d: usize, act: Act) {
        if self.dead[d] {
            return;
        }
        let current = |a: u32| self.latest[d] == Some(a);
        let target = self.rollout.spec().artifact.version.clone();
        let device = self.ids[d].clone();
        match act {
            Act::Install { attempt, .. }
            | Act::Vanish { attempt }
            | Act::Restore { attempt, .. }
                if !current(attempt) => {}
            Act::Vanish { .. } => {
                let running = self.running[d].clone();
                self.report(d, &running, UpdateStatus::Rebooting, None);
                self.dead[d] = true;
            }
            Act::Install { healthy: false, .. } => {
                let running = self.running[d].clone();
                let error = format!("rehearsed failure installing {target}");
                self.report(d, &running, UpdateStatus::Failed, Some(error));
            }
            Act::Install { healthy: true, .. } => {
                let running = self.running[d].clone();
                self.report(d, &running, UpdateStatus::Rebooting, None);
                self.running[d] = target.clone();
                self.observe(Observation::Connected { device });
                self.report(d, &target, UpdateStatus::Success, None);
                let interval = self.expect.telemetry_interval_secs.max(1);
                let soak = self.rollout.spec().soak_secs;
                let left = u32::try_from(soak / interval + 2).unwrap_or(u32::MAX);
                let first = self.at(interval.min(60));
                self.schedule(first, d, Act::Telemetry { left });
            }
            Act::Restore { version, .. } => {
                self.running[d] = version.clone();
                self.observe(Observation::Connected { device });
                self.report(d, &version, UpdateStatus::Idle, None);
            }
            Act::Telemetry { left } => {
                self.observe(Observation::Telemetry { device });
                if left > 1 {
                    let next = self.at(self.expect.telemetry_interval_secs.max(1));
                    self.schedule(next, d, Act::Telemetry { left: left - 1 });
                }
            }
        }
    }

    fn finished(&self) -> bool {
        self.rollout.status() == Status::Completed || self.rollout.status().is_terminal()
    }
}

/// Plays rollout `id` over `devices` from `start` until it completes or the horizon passes.
pub fn rehearse(
    id: &str,
    spec: &RolloutSpec,
    devices: Vec<DeviceFacts>,
    start: DateTime<Utc>,
    expect: &Expectations,
) -> Result<Rehearsal, SpecError> {
    let (rollout, step) = Rollout::create(id, spec, devices, start)?;
    let ids: Vec<String> = rollout.devices().iter().map(|d| d.id.clone()).collect();
    let index = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i))
        .collect();
    let running = rollout
        .devices()
        .iter()
        .map(|d| d.version.clone().unwrap_or_default())
        .collect();
    let n = ids.len();
    let mut p = Player {
        wave_names: spec.waves.iter().map(|w| w.name.clone()).collect(),
        rollout,
        expect,
        now: start,
        agenda: BinaryHeap::new(),
        seq: 0,
        ids,
        index,
        latest: vec![None; n],
        running,
        first_push: vec![None; n],
        dead: vec![false; n],
        events: Vec::new(),
    };
    p.take(step);
    let horizon = start + Duration::seconds(i64::try_from(expect.horizon_secs).unwrap_or(0));
    while !p.finished() {
        let next_act = p.agenda.peek().map(|Reverse((t, ..))| *t);
        let wake = p.rollout.next_wake();
        let Some(t) = [next_act, wake].into_iter().flatten().min() else {
            break;
        };
        if t > horizon {
            break;
        }
        if next_act == Some(t) {
            let step = p.rollout.tick_through(p.now, t);
            p.now = p.now.max(t);
            p.take(step);
            if let Some(Reverse((_, _, d, act))) = p.agenda.pop() {
                p.act(d, act);
            }
        } else {
            p.now = p.now.max(t);
            let step = p.rollout.tick(p.now);
            p.take(step);
        }
    }
    let ended_at = if p.finished() { p.now } else { horizon };
    let devices = p
        .rollout
        .devices()
        .iter()
        .enumerate()
        .map(|(i, d)| DeviceOutcome {
            id: d.id.clone(),
            wave: d.wave.and_then(|w| p.wave_names.get(w).cloned()),
            zone: d.zone.clone(),
            first_push: p.first_push[i],
            attempts: d.attempt,
            state: d.state,
            failure: d.failure.clone(),
        })
        .collect();
    Ok(Rehearsal {
        started_at: start,
        ended_at,
        status: p.rollout.status(),
        waves: p.rollout.waves().to_vec(),
        events: p.events,
        devices,
    })
}

#[cfg(test)]
mod tests;
