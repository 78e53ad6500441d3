//! The rollout engine inside the hub: every rollout's machine in memory, fed in commit order.
//!
//! Observations come from commit effects (a reported patch carrying `firmware`, stored
//! telemetry) and from the connection registry (a device connected); each is one channel send
//! and, in the engine, one map lookup per rollout, so a report costs O(1) besides the machine's
//! own O(log n). A pass drains what was observed, ticks every machine at the hub's clock (soak,
//! timeouts, backoff, windows and batches: the machines' own timers), and writes each rollout's
//! step — state, changed device records, journalled pushes, events — together with the device
//! operation that delivers its pushes, in one store write. So a push is journalled and handed to
//! the operation layer in the same commit, or not at all.
//!
//! One background task runs passes when woken (an observation, a command) or when the earliest
//! machine timer comes due by the hub's clock; tests drive passes with [`Hub::run_rollouts`] on
//! a manual clock.

use super::durable::StepWrite;
use super::facts::{ReportedReads, Targeting};
use super::push;
use crate::hub::HubInner;
use crate::Hub;
use chrono::{DateTime, Utc};
use fleethub_core::{HubError, HubResult};
use fleethub_rollout::{DeviceState, Observation, Rollout, Step};
use fleethub_store::WriteTx;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Observations a pass takes at most; the rest wait for the next pass, which the background
/// task runs at once. Each pass commits what it decided, so a gate decision waits for at most
/// this many observations after the one that decided it (each a map lookup, or a twin read when
/// the change may move the device in or out of a target), not for the whole backlog.
pub(crate) const PASS_OBSERVATIONS: usize = 1_000;
/// The longest the background task sleeps without a reason to wake.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// A loaded rollout: its machine, its row's times, and its target and wave queries parsed
/// (for devices that join or leave).
pub(crate) struct Loaded {
    pub machine: Rollout,
    pub created_ms: i64,
    pub updated_ms: i64,
    targeting: Option<Targeting>,
}

impl Loaded {
    pub(crate) fn new(machine: Rollout, created_ms: i64, updated_ms: i64) -> Loaded {
        let targeting = Targeting::parse(machine.spec())
            .map_err(|e| tracing::warn!(rollout = machine.id(), "target not usable: {e}"))
            .ok();
        Loaded {
            machine,
            created_ms,
            updated_ms,
            targeting,
        }
    }

    /// What of a reported patch its target reads (nothing when the target is not usable).
    pub(crate) fn reads(&self) -> ReportedReads {
        self.targeting
            .as_ref()
            .map(|t| t.reported.clone())
            .unwrap_or_default()
    }

    /// Whether a change to `device`'s twin may move it in or out of this rollout: the change
    /// touches what the target reads, and the device is not tracked, or tracked but not pushed
    /// yet. A device already pushed is followed to the end.
    fn membership_may_change(&self, device: &str, change: &TwinChange) -> bool {
        if self.machine.status().is_terminal() {
            return false;
        }
        let Some(targeting) = &self.targeting else {
            return false;
        };
        if let TwinChange::Reported(keys) = change {
            if !targeting.reported.touched_by(keys) {
                return false;
            }
        }
        match self.machine.device(device) {
            None => true,
            Some(d) => matches!(
                d.state,
                DeviceState::Unassigned | DeviceState::Waiting | DeviceState::Left
            ),
        }
    }

    /// What the twin's change means to this rollout (`doc` is `None` for a deleted device).
    fn membership(&self, device: &str, doc: Option<&Value>) -> Option<Observation> {
        let targeting = self.targeting.as_ref()?;
        let tracked = self.machine.device(device).map(|d| d.state);
        let matches = doc.is_some_and(|d| targeting.target.matches(d));
        match (matches, tracked) {
            (true, None | Some(DeviceState::Left)) => {
                let facts = targeting.waves.facts(device, doc?);
                Some(Observation::Joined(facts))
            }
            (false, Some(DeviceState::Unassigned | DeviceState::Waiting)) => {
                Some(Observation::Left {
                    device: device.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// Something seen, in commit order.
pub(crate) enum Seen {
    /// For the machines holding the device.
    Machine(Observation),
    /// A device's twin or registry entry changed (or it was created or deleted): it may join
    /// or leave a rollout's target.
    Twin(String, TwinChange),
}

/// What changed in a device, as far as a target can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TwinChange {
    /// Anything: its registry entry, tags or desired properties, or its existence.
    Any,
    /// A reported patch with these top-level properties, and nothing else.
    Reported(Vec<String>),
}

/// The engine's in-memory state, held by the hub.
#[derive(Default)]
pub(crate) struct RolloutsState {
    /// Loaded rollouts by id; the lock serializes passes and commands.
    pub(crate) machines: tokio::sync::Mutex<BTreeMap<String, Loaded>>,
    /// Whether an unfinished rollout exists: while none does, nothing is observed.
    pub(crate) active: AtomicBool,
    /// What of a reported patch the unfinished rollouts' targets read, together: a patch that
    /// touches none of it moves no device in or out of any target, so it is not queued at all.
    /// Never narrower than the loaded machines' (it is widened before a machine is added).
    reads: RwLock<ReportedReads>,
    /// Observations in commit order, with when they were made (for the decision latency).
    queue: Mutex<Vec<(Seen, Instant)>>,
    /// Signalled by an observation or a command.
    pub(crate) wake: Notify,
    /// Figures for the benchmark: see [`RolloutFigures`].
    observations: AtomicU64,
    unqueued_reports: AtomicU64,
    membership_reads: AtomicU64,
    pass_nanos: AtomicU64,
    decisions: AtomicU64,
    decision_latency_max_us: AtomicU64,
    decision_latency_sum_us: AtomicU64,
    decision_queued_sum_us: AtomicU64,
    decision_pass_sum_us: AtomicU64,
    decision_commit_sum_us: AtomicU64,
}

/// What the engine measured since the hub started: enough for a benchmark to work out the
/// engine's cost per device report and how soon a gate decision follows the report that
/// decided it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RolloutFigures {
    /// Observations taken in (reports, connections, telemetry, changed twins).
    pub observations: u64,
    /// Reported patches not queued: they touched nothing an unfinished rollout's target reads.
    pub unqueued_reports: u64,
    /// Twins read to judge whether a device joins or leaves a target.
    pub membership_reads: u64,
    /// Time spent in engine passes (machines, encoding, waiting for the store's commit), ns.
    pub pass_nanos: u64,
    /// Gate decisions (passed or tripped) committed.
    pub gate_decisions: u64,
    /// The longest and the summed time from the deciding observation to the commit of the
    /// decision, µs.
    pub decision_latency_max_us: u64,
    pub decision_latency_sum_us: u64,
    /// The summed latency in three parts, µs: queued (the observation's push to the pass that
    /// took it holding the engine's lock), the pass (taken to the step handed to the store's
    /// writer), and the commit (handed to the writer to committed).
    pub decision_queued_sum_us: u64,
    pub decision_pass_sum_us: u64,
    pub decision_commit_sum_us: u64,
}

impl RolloutsState {
    /// Queues an observation for the next pass (nothing while no rollout runs).
    pub(crate) fn observe(&self, observation: Observation) {
        self.push(Seen::Machine(observation));
    }

    /// Queues a device whose twin changed, for the next pass (nothing while no rollout runs,
    /// nor for a reported patch that touches nothing an unfinished rollout's target reads: the
    /// pass would drop it unread, after every observation queued before it).
    pub(crate) fn twin_changed(&self, device: String, change: TwinChange) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        if let TwinChange::Reported(keys) = &change {
            if !self.reads.read().touched_by(keys) {
                self.unqueued_reports.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.push(Seen::Twin(device, change));
    }

    /// Widens what is observed to what a target reads and turns observing on, before a
    /// machine holding it is added (a change committed meanwhile is then queued for it).
    pub(crate) fn watch(&self, reads: &ReportedReads) {
        self.reads.write().widen(reads);
        self.active.store(true, Ordering::Release);
    }

    /// Sets what is observed to what the loaded machines need: nothing when none is
    /// unfinished, else the reported properties their targets read.
    pub(crate) fn watch_only(&self, machines: &BTreeMap<String, Loaded>) {
        let mut reads = ReportedReads::default();
        let mut active = false;
        for l in machines.values() {
            if l.machine.status().is_terminal() {
                continue;
            }
            active = true;
            if let Some(t) = &l.targeting {
                reads.widen(&t.reported);
            }
        }
        // Narrowed under the machines' lock, so no machine can be added between the two.
        *self.reads.write() = reads;
        self.active.store(active, Ordering::Release);
    }

    fn push(&self, seen: Seen) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        self.queue.lock().push((seen, Instant::now()));
        self.observations.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Observations waiting for a pass.
    pub(crate) fn queue_len(&self) -> usize {
        self.queue.lock().len()
    }

    fn take_queue(&self) -> Vec<(Seen, Instant)> {
        let mut q = self.queue.lock();
        if q.len() <= PASS_OBSERVATIONS {
            return std::mem::take(&mut *q);
        }
        let rest = q.split_off(PASS_OBSERVATIONS);
        std::mem::replace(&mut *q, rest)
    }

    /// What the engine measured so far.
    pub(crate) fn figures(&self) -> RolloutFigures {
        RolloutFigures {
            observations: self.observations.load(Ordering::Relaxed),
            unqueued_reports: self.unqueued_reports.load(Ordering::Relaxed),
            membership_reads: self.membership_reads.load(Ordering::Relaxed),
            pass_nanos: self.pass_nanos.load(Ordering::Relaxed),
            gate_decisions: self.decisions.load(Ordering::Relaxed),
            decision_latency_max_us: self.decision_latency_max_us.load(Ordering::Relaxed),
            decision_latency_sum_us: self.decision_latency_sum_us.load(Ordering::Relaxed),
            decision_queued_sum_us: self.decision_queued_sum_us.load(Ordering::Relaxed),
            decision_pass_sum_us: self.decision_pass_sum_us.load(Ordering::Relaxed),
            decision_commit_sum_us: self.decision_commit_sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A step ready to commit: its rows, and what to do once committed.
pub(crate) struct PendingStep {
    pub rows: StepWrite,
    pub pushes: Vec<fleethub_rollout::Push>,
    pub rollout_id: String,
    /// When the earliest observation behind a gate decision in this step was made, and when
    /// the pass took it in, if the step made one.
    pub decided_by: Option<(Instant, Instant)>,
}

impl PendingStep {
    /// The step's rows; `None` when it changed nothing.
    pub(crate) fn of(
        loaded: &mut Loaded,
        step: Step,
        now: DateTime<Utc>,
        decided_by: Option<(Instant, Instant)>,
    ) -> HubResult<Option<PendingStep>> {
        let rows = StepWrite::of(&mut loaded.machine, &step, now)?;
        if rows.is_empty() {
            return Ok(None);
        }
        loaded.updated_ms = now.timestamp_millis();
        let decided = step.events.iter().any(|e| {
            matches!(
                e.kind,
                fleethub_rollout::EventKind::GatePassed | fleethub_rollout::EventKind::GateTripped
            )
        });
        Ok(Some(PendingStep {
            rows,
            pushes: step.pushes,
            rollout_id: loaded.machine.id().to_string(),
            decided_by: decided.then_some(decided_by).flatten(),
        }))
    }

    /// Writes the step and the operation that delivers its pushes, inside `tx`.
    pub(crate) fn apply(&self, hub: &Hub, tx: &mut WriteTx<'_>) -> HubResult<()> {
        self.rows.apply(tx)?;
        push::hand_on_in(hub, tx, &self.rollout_id, &self.pushes)
    }
}

fn merge(into: &mut Step, step: Step) {
    into.pushes.extend(step.pushes);
    into.events.extend(step.events);
}

impl Hub {
    pub(crate) fn rollouts_state(&self) -> &Arc<RolloutsState> {
        &self.inner.rollouts
    }

    /// What the rollout engine measured (for `fleethub bench` and `/metrics`).
    pub fn rollout_figures(&self) -> RolloutFigures {
        self.rollouts_state().figures()
    }

    /// One pass of the rollout engine at the hub's clock: takes in what was observed, ticks
    /// every loaded rollout, and commits their steps. Returns when it must run again even if
    /// nothing happens (the earliest timer). The background task runs it; tests call it after
    /// moving a manual clock.
    pub async fn run_rollouts(&self) -> HubResult<Option<DateTime<Utc>>> {
        let started = Instant::now();
        let state = self.rollouts_state().clone();
        let mut machines = state.machines.lock().await;
        let observed = state.take_queue();
        let taken = Instant::now();
        let now = self.now();
        let mut steps: BTreeMap<String, (Step, Option<(Instant, Instant)>)> = BTreeMap::new();
        let observed = self.with_membership(&machines, observed).await?;
        for (observation, at) in observed {
            for (id, loaded) in machines.iter_mut() {
                if loaded.machine.status().is_terminal() {
                    continue;
                }
                let relevant = match &observation {
                    Observation::Joined(_) => true,
                    Observation::Reported { device, .. }
                    | Observation::Connected { device }
                    | Observation::Telemetry { device }
                    | Observation::Left { device }
                    | Observation::PushFailed { device, .. } => {
                        loaded.machine.device(device).is_some()
                    }
                };
                if !relevant {
                    continue;
                }
                let step = loaded.machine.observe(now, observation.clone());
                if step.is_empty() {
                    continue;
                }
                let entry = steps.entry(id.clone()).or_default();
                entry.1.get_or_insert((at, taken));
                merge(&mut entry.0, step);
            }
        }
        let mut pending = Vec::new();
        let mut next_wake: Option<DateTime<Utc>> = None;
        for (id, loaded) in machines.iter_mut() {
            if loaded.machine.status().is_terminal() {
                continue;
            }
            let (mut step, at) = steps.remove(id).unwrap_or_default();
            merge(&mut step, loaded.machine.tick(now));
            if let Some(p) = PendingStep::of(loaded, step, now, at)? {
                pending.push(p);
            }
            if let Some(t) = loaded.machine.next_wake() {
                next_wake = Some(next_wake.map_or(t, |w| w.min(t)));
            }
        }
        state.watch_only(&machines);
        self.commit_steps(pending).await?;
        drop(machines);
        state
            .pass_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(next_wake)
    }

    /// The observations of a pass, with each changed twin replaced by what it means to each
    /// rollout (joined, left, or nothing): the twins are read once, and only of devices whose
    /// membership may change (untracked, or tracked but not pushed yet).
    async fn with_membership(
        &self,
        machines: &BTreeMap<String, Loaded>,
        seen: Vec<(Seen, Instant)>,
    ) -> HubResult<Vec<(Observation, Instant)>> {
        let wanted: BTreeSet<String> = seen
            .iter()
            .filter_map(|(s, _)| match s {
                Seen::Twin(id, change) => machines
                    .values()
                    .any(|l| l.membership_may_change(id, change))
                    .then_some(id),
                Seen::Machine(_) => None,
            })
            .cloned()
            .collect();
        let docs = if wanted.is_empty() {
            BTreeMap::new()
        } else {
            self.rollouts_state()
                .membership_reads
                .fetch_add(wanted.len() as u64, Ordering::Relaxed);
            self.twin_docs(wanted.into_iter().collect()).await?
        };
        let mut out = Vec::with_capacity(seen.len());
        let mut done = BTreeSet::new();
        for (s, at) in seen {
            match s {
                Seen::Machine(o) => out.push((o, at)),
                Seen::Twin(id, _) => {
                    // A twin is judged once per pass, as it is now, by every rollout its
                    // membership may change in: it was read if some change of it may matter.
                    let Some(doc) = docs.get(&id) else { continue };
                    if !done.insert(id.clone()) {
                        continue;
                    }
                    for l in machines.values() {
                        if !l.membership_may_change(&id, &TwinChange::Any) {
                            continue;
                        }
                        if let Some(o) = l.membership(&id, doc.as_ref()) {
                            out.push((o, at));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Commits steps (each with its pushes' operation) in one write ahead of the store's queue;
    /// records decision latency.
    pub(crate) async fn commit_steps(&self, pending: Vec<PendingStep>) -> HubResult<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let hub = self.clone();
        let decided: Vec<(Instant, Instant)> =
            pending.iter().filter_map(|p| p.decided_by).collect();
        let submitted = Instant::now();
        // Ahead of the writes queued (a fleet's reports): a decision is durable within one of
        // the writer's batches, not after the whole queue.
        self.store()
            .write_first(move |tx| {
                for p in &pending {
                    p.apply(&hub, tx)?;
                }
                Ok::<_, HubError>(())
            })
            .await?;
        let state = self.rollouts_state();
        let committed = Instant::now();
        let us = |from: Instant, to: Instant| to.saturating_duration_since(from).as_micros() as u64;
        for (at, taken) in decided {
            let parts = [
                (&state.decision_queued_sum_us, us(at, taken)),
                (&state.decision_pass_sum_us, us(taken, submitted)),
                (&state.decision_commit_sum_us, us(submitted, committed)),
            ];
            for (sum, part) in parts {
                sum.fetch_add(part, Ordering::Relaxed);
            }
            let us = us(at, committed);
            state.decisions.fetch_add(1, Ordering::Relaxed);
            state
                .decision_latency_sum_us
                .fetch_add(us, Ordering::Relaxed);
            state
                .decision_latency_max_us
                .fetch_max(us, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Runs rollout passes in the background until the hub is dropped: when woken, or when the
/// earliest timer comes due by the hub's clock (converted to real time by the clock, so a
/// compressed clock wakes the engine sooner).
pub(crate) fn spawn(inner: Weak<HubInner>, state: Arc<RolloutsState>) {
    tokio::spawn(async move {
        loop {
            let Some(inner) = inner.upgrade() else { return };
            let hub = Hub { inner };
            let (wait, passed) = match hub.run_rollouts().await {
                Ok(Some(t)) => {
                    let ahead = (t - hub.now()).to_std().unwrap_or_default();
                    (hub.inner.clock.real_duration(ahead).min(IDLE_WAIT), true)
                }
                Ok(None) => (IDLE_WAIT, true),
                Err(e) => {
                    tracing::warn!("rollout engine pass failed: {e}");
                    (Duration::from_secs(1), false)
                }
            };
            drop(hub);
            if passed && state.queue_len() > 0 {
                // A backlog: the next chunk at once (a command or a view waiting for the lock
                // gets it first: tokio's mutex is fair).
                tokio::task::yield_now().await;
                continue;
            }
            // A timer already due is run at once; the floor only keeps a clock that stands
            // still from spinning the loop.
            let wait = wait.max(Duration::from_millis(1));
            tokio::select! {
                _ = state.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}
