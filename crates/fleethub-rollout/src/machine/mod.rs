//! The rollout state machine. It does no I/O and reads no clock: the hub tells it what devices
//! reported ([`Observation`]), what the operator asked ([`Command`]) and what time it is, and it
//! answers with pushes and audit events ([`Step`]). [`Rollout::next_wake`] says when it must be
//! ticked again without anything happening (a timeout, a soak ending, a window or batch opening).
//!
//! Cost: a device report is O(log n) (its timer moves in an ordered set) and gates read counters
//! kept on every transition, so deciding a gate is O(1). Pushing walks only the queues of waves
//! that push, per zone, and only when ticked.

use crate::device::{Compliance, Counts, DeviceFacts, DeviceRecord, DeviceState};
use crate::event::{EventKind, Step};
use crate::spec::{Plan, RolloutSpec, SpecError, WaveSelect};
use crate::window::Zone;
use chrono::{DateTime, Utc};
use fleethub_core::firmware::ReportedFirmware;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RolloutStatus)]
pub enum Status {
    Running,
    Paused,
    Completed,
    Aborted,
    Superseded,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Aborted | Status::Superseded)
    }
}

/// Where a wave is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaveStatus {
    /// Waits for the wave before it.
    Pending,
    /// Pushing; its success gate not reached yet.
    Running,
    /// Its gate passed: the next wave may start. Its remaining devices are still pushed and
    /// watched, and it can still trip.
    Passed,
    /// Its failure threshold was passed.
    Tripped,
    /// Its devices were sent back to their previous versions.
    RolledBack,
}

/// A wave's progress; what the store persists per wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveRecord {
    pub name: String,
    pub status: WaveStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// The batch interval the pushes below were made in (0 = the one starting at `started_at`).
    pub batch_index: u64,
    pub batch_used: u32,
    /// Failures already counted when the wave was last resumed: it trips on failures past
    /// its threshold since then.
    pub failure_base: u32,
    pub counts: Counts,
}

/// Something the hub saw about a device, in commit order.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A committed reported patch carrying `firmware`.
    Reported {
        device: String,
        firmware: ReportedFirmware,
    },
    /// The device connected.
    Connected { device: String },
    /// The device sent telemetry.
    Telemetry { device: String },
    /// The device matches the target now (new, or changed); the hub evaluated the waves'
    /// queries for it.
    Joined(DeviceFacts),
    /// The device no longer matches the target (or was deleted).
    Left { device: String },
    /// The push with this attempt could not be made (the device is gone, its operation failed).
    PushFailed {
        device: String,
        attempt: u32,
        reason: String,
    },
}

/// What an operator can ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Abort,
    /// Send a wave's devices (or every device the rollout changed) back to their previous
    /// versions.
    Rollback {
        wave: Option<String>,
    },
    /// Push failed and flagged devices again (these ids only, or all), with a fresh set of
    /// retries.
    Retry {
        devices: Option<Vec<String>>,
    },
    /// A newer rollout takes over these devices: nothing more is pushed.
    Supersede {
        by: String,
    },
}

/// An operator command that cannot be carried out now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

/// Everything a rollout keeps, as the store persists it (the spec beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(flatten)]
    pub state: RolloutState,
    pub devices: Vec<DeviceRecord>,
}

/// The rollout-level part of a [`Snapshot`]: what changes with every step, without the devices
/// (which are stored one record each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub waves: Vec<WaveRecord>,
    /// Devices per state over the whole rollout, those no wave took included (the waves'
    /// counts miss them): what a view of the stored state shows. Absent in states stored
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Counts>,
}

/// One rollout's state machine.
pub struct Rollout {
    id: String,
    plan: Plan,
    status: Status,
    reason: Option<String>,
    waves: Vec<WaveRecord>,
    devices: Vec<DeviceRecord>,
    totals: Counts,
    index: HashMap<String, u32>,
    zones: Vec<Zone>,
    zone_index: HashMap<String, u16>,
    /// Per device: its zone's index (0 when there is no window).
    device_zone: Vec<u16>,
    /// Per wave, per zone: devices waiting to be pushed, by (retry first, bucket, index).
    queues: Vec<Vec<BTreeSet<(u8, u32, u32)>>>,
    /// Devices with a timer, by (time in ms, index).
    timers: BTreeSet<(i64, u32)>,
    /// Devices whose record changed since the last [`Rollout::take_changed`].
    changed: BTreeSet<u32>,
    /// Set when something may be pushable without a timer saying so (a joiner, a resume).
    pump_due: Option<DateTime<Utc>>,
    /// When waiting devices may next be pushed: the earliest window opening or batch interval
    /// that the last pump found them waiting for.
    push_wake: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollout")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A timer's key: its time rounded up to the millisecond, so that a tick at the key (which
/// `next_wake` gives as a whole millisecond) is never before the deadline itself. Rounded down,
/// a tick in the deadline's millisecond fired a soak's timer before `until` and failed a healthy
/// device as "silent during the soak".
fn timer_ms(t: DateTime<Utc>) -> i64 {
    let floor = t.timestamp_millis();
    if t.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        floor
    } else {
        floor + 1
    }
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Rollout {
    /// A new rollout over the devices that match its target now; its first wave starts at `now`.
    pub fn create(
        id: &str,
        spec: &RolloutSpec,
        devices: Vec<DeviceFacts>,
        now: DateTime<Utc>,
    ) -> Result<(Rollout, Step), SpecError> {
        let plan = spec.plan(id)?;
        let waves = plan
            .waves
            .iter()
            .map(|w| WaveRecord {
                name: w.name.clone(),
                status: WaveStatus::Pending,
                started_at: None,
                batch_index: 0,
                batch_used: 0,
                failure_base: 0,
                counts: Counts::default(),
            })
            .collect();
        let mut r = Rollout::empty(id, plan, waves);
        let mut step = Step::default();
        let mut facts_of = Vec::with_capacity(devices.len());
        for facts in devices {
            if r.index.contains_key(&facts.id) {
                continue;
            }
            let record = r.new_record(&facts);
            r.insert(record);
            facts_of.push(facts);
        }
        r.assign_initial(&facts_of);
        r.event(
            &mut step,
            now,
            EventKind::Created,
            None,
            None,
            format!(
                "rollout of {} to {} devices in {} waves",
                r.plan.spec.artifact.version,
                r.devices.len(),
                r.waves.len()
            ),
        );
        r.start_wave(0, now, &mut step);
        r.pump(now, &mut step);
        Ok((r, step))
    }

    /// The rollout as it was persisted: the same behaviour from here as if it had never stopped.
    pub fn restore(id: &str, spec: &RolloutSpec, snapshot: Snapshot) -> Result<Rollout, SpecError> {
        let plan = spec.plan(id)?;
        let state = snapshot.state;
        if state.waves.len() != plan.waves.len() {
            return Err(SpecError(format!(
                "stored rollout {id} has {} waves, its spec {}",
                state.waves.len(),
                plan.waves.len()
            )));
        }
        let mut waves = state.waves;
        for w in &mut waves {
            w.counts = Counts::default();
        }
        let mut r = Rollout::empty(id, plan, waves);
        r.status = state.status;
        r.reason = state.reason;
        for record in snapshot.devices {
            r.insert(record);
        }
        r.changed.clear();
        // Windows and batches are worked out again at the first tick.
        r.pump_due = Some(DateTime::<Utc>::UNIX_EPOCH);
        Ok(r)
    }

    fn empty(id: &str, plan: Plan, waves: Vec<WaveRecord>) -> Rollout {
        let n = waves.len();
        let mut r = Rollout {
            id: id.to_string(),
            plan,
            status: Status::Running,
            reason: None,
            waves,
            devices: Vec::new(),
            totals: Counts::default(),
            index: HashMap::new(),
            zones: Vec::new(),
            zone_index: HashMap::new(),
            device_zone: Vec::new(),
            queues: vec![Vec::new(); n],
            timers: BTreeSet::new(),
            changed: BTreeSet::new(),
            pump_due: None,
            push_wake: None,
        };
        let fallback = r
            .plan
            .window
            .as_ref()
            .map(|w| w.zone_for(None))
            .unwrap_or_else(Zone::utc);
        r.zone_id(fallback);
        r
    }

    fn new_record(&self, facts: &DeviceFacts) -> DeviceRecord {
        let mut record = DeviceRecord::new(facts, &self.plan.seed);
        if let Some(w) = &self.plan.window {
            record.zone = Some(w.zone_for(facts.zone.as_deref()).name);
        }
        record
    }

    fn zone_id(&mut self, zone: Zone) -> u16 {
        if let Some(&i) = self.zone_index.get(&zone.name) {
            return i;
        }
        let i = self.zones.len() as u16;
        self.zone_index.insert(zone.name.clone(), i);
        self.zones.push(zone);
        for q in &mut self.queues {
            q.push(BTreeSet::new());
        }
        i
    }

    /// Adds a record and every index derived from it.
    fn insert(&mut self, record: DeviceRecord) -> u32 {
        let idx = self.devices.len() as u32;
        let zone = match (&record.zone, &self.plan.window) {
            (Some(name), Some(w)) => {
                let z = w.zone_for(Some(name));
                self.zone_id(z)
            }
            _ => 0,
        };
        self.index.insert(record.id.clone(), idx);
        self.devices.push(record);
        self.device_zone.push(zone);
        self.attach(idx);
        idx
    }

    /// Counts, queues and timers for a device's current wave and state.
    fn attach(&mut self, idx: u32) {
        self.changed.insert(idx);
        let d = &self.devices[idx as usize];
        let cat = d.state.category();
        self.totals.add(cat);
        if let Some(w) = d.wave {
            self.waves[w].counts.add(cat);
            if d.state == DeviceState::Waiting {
                let prio = u8::from(d.tries == 0);
                let z = self.device_zone[idx as usize] as usize;
                self.queues[w][z].insert((prio, d.bucket, idx));
            }
        }
        if let Some(t) = d.state.timer() {
            self.timers.insert((timer_ms(t), idx));
        }
    }

    fn detach(&mut self, idx: u32) {
        let d = &self.devices[idx as usize];
        let cat = d.state.category();
        self.totals.remove(cat);
        if let Some(w) = d.wave {
            self.waves[w].counts.remove(cat);
            if d.state == DeviceState::Waiting {
                let prio = u8::from(d.tries == 0);
                let z = self.device_zone[idx as usize] as usize;
                self.queues[w][z].remove(&(prio, d.bucket, idx));
            }
        }
        if let Some(t) = d.state.timer() {
            self.timers.remove(&(timer_ms(t), idx));
        }
    }

    fn set_state(&mut self, idx: u32, state: DeviceState) {
        self.detach(idx);
        self.devices[idx as usize].state = state;
        self.attach(idx);
    }

    /// Waves take devices in order: a query wave its matches, a percentage wave the buckets
    /// below its share, a count wave the lowest buckets; each from what earlier waves left.
    fn assign_initial(&mut self, facts: &[DeviceFacts]) {
        // Membership is decided first, then applied through `place`, the one path that keeps
        // counters and queues right.
        let wave_matches: Vec<&[usize]> = facts.iter().map(|f| f.matches.as_slice()).collect();
        let mut claimed: Vec<Option<usize>> = vec![None; self.devices.len()];
        let mut order: Vec<u32> = (0..self.devices.len() as u32).collect();
        order.sort_by_key(|&i| (self.devices[i as usize].bucket, i));
        let mut open: Vec<u32> = order;
        for (w, wave) in self.plan.waves.iter().enumerate() {
            let mut taken = 0u32;
            open.retain(|&i| {
                let take = match &wave.select {
                    WaveSelect::Query(_) => wave_matches[i as usize].contains(&w),
                    WaveSelect::Percent(bp) => self.devices[i as usize].bucket < *bp,
                    WaveSelect::Count(n) => taken < *n,
                };
                if take {
                    taken += 1;
                    claimed[i as usize] = Some(w);
                }
                !take
            });
        }
        for (i, wave) in claimed.into_iter().enumerate() {
            if let Some(w) = wave {
                self.place(i as u32, w);
            }
        }
    }

    /// Puts an unassigned device in wave `w`, waiting.
    fn place(&mut self, idx: u32, w: usize) {
        self.detach(idx);
        let d = &mut self.devices[idx as usize];
        d.wave = Some(w);
        d.state = DeviceState::Waiting;
        self.attach(idx);
    }

    /// A device that joins later goes to the first wave not yet passed that would take it.
    fn assign_joiner(&mut self, idx: u32, facts: &DeviceFacts) {
        let bucket = self.devices[idx as usize].bucket;
        let wave = self.plan.waves.iter().enumerate().find(|(w, plan)| {
            let record = &self.waves[*w];
            matches!(record.status, WaveStatus::Pending | WaveStatus::Running)
                && match &plan.select {
                    WaveSelect::Query(_) => facts.matches.contains(w),
                    WaveSelect::Percent(bp) => bucket < *bp,
                    WaveSelect::Count(n) => record.counts.gate_size() + record.counts.refused < *n,
                }
        });
        if let Some((w, _)) = wave {
            self.place(idx, w);
        }
    }

    // ----- reading -----

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn spec(&self) -> &RolloutSpec {
        &self.plan.spec
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// Why it is paused, aborted or superseded.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    pub fn waves(&self) -> &[WaveRecord] {
        &self.waves
    }

    pub fn totals(&self) -> Counts {
        self.totals
    }

    pub fn compliance(&self) -> Compliance {
        self.totals.compliance()
    }

    pub fn device(&self, id: &str) -> Option<&DeviceRecord> {
        self.index.get(id).map(|&i| &self.devices[i as usize])
    }

    pub fn devices(&self) -> &[DeviceRecord] {
        &self.devices
    }

    /// What the store keeps.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state(),
            devices: self.devices.clone(),
        }
    }

    /// The rollout-level state, without the devices.
    pub fn state(&self) -> RolloutState {
        RolloutState {
            status: self.status,
            reason: self.reason.clone(),
            waves: self.waves.clone(),
            totals: Some(self.totals),
        }
    }

    /// The records of the devices that changed since the last call (every device, the first
    /// time after `create`): what a step must write besides its state, pushes and events.
    pub fn take_changed(&mut self) -> Vec<DeviceRecord> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|i| self.devices[i as usize].clone())
            .collect()
    }

    /// When the machine must be ticked even if nothing is observed (a timeout, a soak ending,
    /// a retry, a window or batch opening); `None`: only when something happens.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        if self.status.is_terminal() {
            return None;
        }
        let timer = self
            .timers
            .first()
            .and_then(|&(t, _)| DateTime::<Utc>::from_timestamp_millis(t));
        let push = match self.status {
            Status::Running => self.push_wake,
            _ => None,
        };
        min_time(min_time(timer, self.pump_due), push)
    }
}

fn pushing(status: WaveStatus) -> bool {
    matches!(status, WaveStatus::Running | WaveStatus::Passed)
}

fn min_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

mod commands;
mod progress;
#[cfg(test)]
mod tests;
