//! How a rollout moves: device observations, timers, pushing waiting devices, and the gates.

use super::{after, human, min_time, ms, pushing, Observation, Rollout, Status, WaveStatus};
use crate::device::{DeviceFacts, DeviceState};
use crate::event::{Event, EventKind, Push, Step};
use crate::spec::TripAction;
use crate::window::Position;
use chrono::{DateTime, Utc};
use fleethub_core::firmware::{ReportedFirmware, UpdateStatus};
use fleethub_core::semver;
use std::cmp::Ordering;

impl Rollout {
    /// Takes in one thing the hub saw. Cheap: no queue is walked here.
    pub fn observe(&mut self, now: DateTime<Utc>, observation: Observation) -> Step {
        let mut step = Step::default();
        if self.status.is_terminal() {
            return step;
        }
        match observation {
            Observation::Joined(facts) => self.joined(now, facts),
            Observation::Left { device } => self.left(now, &device, &mut step),
            Observation::Reported { device, firmware } => {
                if let Some(&idx) = self.index.get(&device) {
                    self.changed.insert(idx);
                    self.reported(now, idx, &firmware, &mut step);
                }
            }
            Observation::Connected { device } => {
                if let Some(&idx) = self.index.get(&device) {
                    self.changed.insert(idx);
                    self.connected(now, idx, &mut step);
                }
            }
            Observation::Telemetry { device } => {
                if let Some(&idx) = self.index.get(&device) {
                    self.telemetry(now, idx);
                }
            }
            Observation::PushFailed {
                device,
                attempt,
                reason,
            } => {
                if let Some(&idx) = self.index.get(&device) {
                    if self.devices[idx as usize].attempt == attempt {
                        match self.devices[idx as usize].state {
                            DeviceState::InFlight { .. } => self.fail(now, idx, reason, &mut step),
                            DeviceState::RollingBack { .. } => {
                                self.flag(now, idx, format!("rollback: {reason}"), &mut step)
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        // A wave that started, or a device that joined: push what may go now, so the next
        // wave does not wait for a timer.
        if self.pump_due.is_some() {
            self.pump(now, &mut step);
        }
        // The last device with work left may just have finished.
        self.check_completed(now, &mut step);
        step
    }

    /// Timers due by `now`, then pushes for what may go now.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Step {
        let mut step = Step::default();
        if self.status.is_terminal() {
            return step;
        }
        while let Some(&(t, idx)) = self.timers.first() {
            if t > ms(now) {
                break;
            }
            self.timer_fired(now, idx, &mut step);
        }
        let push_due = self.push_wake.is_some_and(|t| t <= now);
        if self.pump_due.is_some() || push_due {
            self.pump(now, &mut step);
        }
        self.check_completed(now, &mut step);
        step
    }

    /// Ticks at every wake after `from` up to `to`, then at `to`: time passing with nothing
    /// observed, as a simulation or a rehearsal runs it. The steps are concatenated in order.
    pub fn tick_through(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Step {
        let mut all = Step::default();
        let mut now = from;
        while let Some(wake) = self.next_wake() {
            if wake > to {
                break;
            }
            now = now.max(wake);
            let step = self.tick(now);
            all.pushes.extend(step.pushes);
            all.events.extend(step.events);
        }
        let step = self.tick(to);
        all.pushes.extend(step.pushes);
        all.events.extend(step.events);
        all
    }

    /// The hub was not watching between its last commit and `now` (it stopped or crashed and
    /// started again): reports, connections and telemetry sent meanwhile were never seen. The
    /// timers that wait to hear from a device — progress after a push or a rollback, telemetry
    /// during a soak — get a full period from `now`, so no device fails for the hub's own
    /// absence. A soak that saw no telemetry yet ends no sooner than a silence period from
    /// `now`. Walks the devices once; the hub calls it after restoring a rollout.
    pub fn resume_watching(&mut self, now: DateTime<Utc>) {
        let timeout = after(now, self.plan.device_timeout);
        let silence = after(now, self.plan.max_silence);
        for idx in 0..self.devices.len() as u32 {
            let d = &self.devices[idx as usize];
            let state = match d.state {
                DeviceState::InFlight { deadline } => DeviceState::InFlight {
                    deadline: deadline.max(timeout),
                },
                DeviceState::RollingBack { deadline } => DeviceState::RollingBack {
                    deadline: deadline.max(timeout),
                },
                DeviceState::Soaking { until, silent_at } => DeviceState::Soaking {
                    until: if d.telemetry_seen {
                        until
                    } else {
                        until.max(silence)
                    },
                    silent_at: silent_at.max(silence),
                },
                _ => continue,
            };
            if state != d.state {
                self.set_state(idx, state);
            }
        }
    }

    fn timer_fired(&mut self, now: DateTime<Utc>, idx: u32, step: &mut Step) {
        let plan_timeout = self.plan.device_timeout;
        match self.devices[idx as usize].state {
            DeviceState::Backoff { .. } => {
                self.set_state(idx, DeviceState::Waiting);
                self.pump_due = Some(now);
            }
            DeviceState::InFlight { .. } => {
                let d = &self.devices[idx as usize];
                let reason = match d.status {
                    Some(UpdateStatus::Rebooting) => {
                        format!("silent after reboot: no report for {}", human(plan_timeout))
                    }
                    Some(s) if d.pushed_at.is_some() && d.status_seen => {
                        format!("no progress for {} (last status {s})", human(plan_timeout))
                    }
                    _ => format!("no progress for {} after the push", human(plan_timeout)),
                };
                self.fail(now, idx, reason, step);
            }
            DeviceState::Soaking { until, .. } => {
                let d = &self.devices[idx as usize];
                if now >= until && d.telemetry_seen {
                    self.set_state(idx, DeviceState::Updated);
                    self.evaluate(now, idx, step);
                } else if now >= until {
                    let reason = "sent no telemetry during the soak".to_string();
                    self.fail(now, idx, reason, step);
                } else {
                    let reason = format!(
                        "silent during the soak: no telemetry for {}",
                        human(self.plan.max_silence)
                    );
                    self.fail(now, idx, reason, step);
                }
            }
            DeviceState::RollingBack { .. } => {
                let to = self.devices[idx as usize]
                    .from_version
                    .clone()
                    .unwrap_or_default();
                let reason = format!("rollback to {to}: no progress for {}", human(plan_timeout));
                self.flag(now, idx, reason, step);
            }
            _ => {
                // A stale timer: the state has none any more.
                self.timers.retain(|&(_, i)| i != idx);
            }
        }
    }

    // ----- observations -----

    fn joined(&mut self, now: DateTime<Utc>, facts: DeviceFacts) {
        let idx = match self.index.get(&facts.id) {
            Some(&idx) => {
                let d = &self.devices[idx as usize];
                if d.state != DeviceState::Left && d.state != DeviceState::Unassigned {
                    return;
                }
                self.detach(idx);
                let d = &mut self.devices[idx as usize];
                d.wave = None;
                d.state = DeviceState::Unassigned;
                d.version = facts.version.clone().or(d.version.take());
                d.status = facts.status.or(d.status);
                self.attach(idx);
                idx
            }
            None => {
                let record = self.new_record(&facts);
                self.insert(record)
            }
        };
        self.assign_joiner(idx, &facts);
        if self.devices[idx as usize].state == DeviceState::Waiting {
            self.pump_due = Some(now);
        }
    }

    fn left(&mut self, now: DateTime<Utc>, device: &str, step: &mut Step) {
        let Some(&idx) = self.index.get(device) else {
            return;
        };
        if matches!(
            self.devices[idx as usize].state,
            DeviceState::Unassigned | DeviceState::Waiting
        ) {
            self.set_state(idx, DeviceState::Left);
            // A smaller wave may have reached its gate.
            self.evaluate(now, idx, step);
        }
    }

    fn reported(&mut self, now: DateTime<Utc>, idx: u32, fw: &ReportedFirmware, step: &mut Step) {
        let d = &mut self.devices[idx as usize];
        // The report it made before this push, seen again (a hub replaying twins after a
        // restart): it says nothing about the push.
        let stale = matches!(d.state, DeviceState::InFlight { .. })
            && !d.status_seen
            && d.version.as_deref() == Some(fw.current_version.as_str())
            && d.status == Some(fw.status)
            && d.error == fw.error;
        if stale {
            return;
        }
        d.version = Some(fw.current_version.clone());
        d.status = Some(fw.status);
        d.status_seen = true;
        d.error = fw.error.clone();
        let target = self.plan.spec.artifact.version.clone();
        match d.state {
            DeviceState::InFlight { .. } => {
                let about_target = fw.target_version.as_deref().is_none_or(|t| t == target);
                if about_target
                    && matches!(fw.status, UpdateStatus::Failed | UpdateStatus::RolledBack)
                {
                    let reason = fw
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("the device reported {}", fw.status));
                    self.fail(now, idx, reason, step);
                } else if fw.is_updated_to(&target) && fw.error.is_none() && d.reconnected {
                    self.start_soak(now, idx, step);
                } else {
                    let deadline = after(now, self.plan.device_timeout);
                    self.set_state(idx, DeviceState::InFlight { deadline });
                }
            }
            DeviceState::Soaking { .. } if !(fw.is_updated_to(&target) && fw.error.is_none()) => {
                let reason = format!(
                    "reported {} on {} while soaking{}",
                    fw.status,
                    fw.current_version,
                    fw.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
                self.fail(now, idx, reason, step);
            }
            // The device retried on its own (docs/device-protocol.md) and made it, during its
            // backoff or while its retry waits for a batch or a window: no new push.
            DeviceState::Backoff { .. } | DeviceState::Waiting
                if d.attempt > 0 && fw.is_updated_to(&target) && fw.error.is_none() =>
            {
                self.start_soak(now, idx, step);
            }
            DeviceState::RollingBack { .. } => {
                let back = d.from_version.as_deref() == Some(fw.current_version.as_str());
                if back && !fw.status.is_updating() && fw.status != UpdateStatus::Failed {
                    self.set_state(idx, DeviceState::RolledBack);
                } else {
                    let deadline = after(now, self.plan.device_timeout);
                    self.set_state(idx, DeviceState::RollingBack { deadline });
                }
            }
            _ => {}
        }
    }

    fn connected(&mut self, now: DateTime<Utc>, idx: u32, step: &mut Step) {
        let d = &mut self.devices[idx as usize];
        if !matches!(d.state, DeviceState::InFlight { .. }) {
            return;
        }
        d.reconnected = true;
        let target = &self.plan.spec.artifact.version;
        let current = d.version.as_deref() == Some(target.as_str())
            && d.status == Some(UpdateStatus::Success)
            && d.error.is_none()
            && d.status_seen;
        if current {
            self.start_soak(now, idx, step);
        }
    }

    fn telemetry(&mut self, now: DateTime<Utc>, idx: u32) {
        if let DeviceState::Soaking { until, .. } = self.devices[idx as usize].state {
            self.devices[idx as usize].telemetry_seen = true;
            let silent_at = after(now, self.plan.max_silence);
            self.set_state(idx, DeviceState::Soaking { until, silent_at });
        }
    }

    fn start_soak(&mut self, now: DateTime<Utc>, idx: u32, step: &mut Step) {
        self.devices[idx as usize].telemetry_seen = false;
        if self.plan.soak.is_zero() {
            self.set_state(idx, DeviceState::Updated);
            self.evaluate(now, idx, step);
            return;
        }
        self.set_state(
            idx,
            DeviceState::Soaking {
                until: after(now, self.plan.soak),
                silent_at: after(now, self.plan.max_silence),
            },
        );
    }

    /// An attempt failed: back off and retry, or flag when the retries are used up.
    pub(super) fn fail(&mut self, now: DateTime<Utc>, idx: u32, reason: String, step: &mut Step) {
        let tries = self.devices[idx as usize].tries;
        let retry = self.plan.spec.retry;
        if tries > retry.retries {
            self.flag(now, idx, reason, step);
            return;
        }
        let until = after(now, retry.backoff(tries + 1));
        let d = &mut self.devices[idx as usize];
        d.failure = Some(reason.clone());
        let (device, wave) = (d.id.clone(), self.wave_name(idx));
        let message = format!(
            "attempt {tries} of {} failed: {reason}; retrying at {}",
            retry.retries + 1,
            until.format("%Y-%m-%dT%H:%M:%SZ")
        );
        self.event(
            step,
            now,
            EventKind::DeviceFailed,
            wave,
            Some(device),
            message,
        );
        self.set_state(idx, DeviceState::Backoff { until });
        self.evaluate(now, idx, step);
    }

    pub(super) fn flag(&mut self, now: DateTime<Utc>, idx: u32, reason: String, step: &mut Step) {
        let d = &mut self.devices[idx as usize];
        d.failure = Some(reason.clone());
        let (device, wave) = (d.id.clone(), self.wave_name(idx));
        self.event(
            step,
            now,
            EventKind::DeviceFlagged,
            wave,
            Some(device),
            reason,
        );
        self.set_state(idx, DeviceState::Flagged);
        self.evaluate(now, idx, step);
    }

    // ----- pushing -----

    /// Pushes every waiting device its wave, window and batch allow now, and notes when the
    /// rest may go.
    pub(super) fn pump(&mut self, now: DateTime<Utc>, step: &mut Step) {
        self.pump_due = None;
        self.push_wake = None;
        if self.status != Status::Running {
            return;
        }
        for w in 0..self.waves.len() {
            if !pushing(self.waves[w].status) || self.queues[w].iter().all(|q| q.is_empty()) {
                continue;
            }
            let mut budget = self.batch_budget(w, now);
            let mut open = Vec::new();
            for z in 0..self.zones.len() {
                if self.queues[w][z].is_empty() {
                    continue;
                }
                match self
                    .plan
                    .window
                    .as_ref()
                    .map(|win| win.position(&self.zones[z], now))
                {
                    None | Some(Position::Open { .. }) => open.push(z),
                    Some(Position::Closed { opens }) => {
                        self.push_wake = min_time(self.push_wake, opens);
                    }
                }
            }
            while budget > 0 {
                let next = open
                    .iter()
                    .filter_map(|&z| self.queues[w][z].first().copied())
                    .min();
                let Some((_, _, idx)) = next else {
                    break;
                };
                if self.push_device(now, idx, step) {
                    budget -= 1;
                    self.waves[w].batch_used += 1;
                }
            }
            if budget == 0 && open.iter().any(|&z| !self.queues[w][z].is_empty()) {
                self.push_wake = min_time(self.push_wake, self.next_batch(w));
            }
        }
    }

    /// When wave `w`'s next batch interval begins.
    fn next_batch(&self, w: usize) -> Option<DateTime<Utc>> {
        let (_, interval) = self.plan.waves[w].batch?;
        let wave = &self.waves[w];
        let index = u32::try_from(wave.batch_index + 1).ok()?;
        Some(after(wave.started_at?, interval.checked_mul(index)?))
    }

    /// Pushes left in the wave's current batch interval (unbounded without batches).
    fn batch_budget(&mut self, w: usize, now: DateTime<Utc>) -> u32 {
        let Some((size, interval)) = self.plan.waves[w].batch else {
            return u32::MAX;
        };
        let wave = &mut self.waves[w];
        let started = wave.started_at.unwrap_or(now);
        let elapsed = (now - started).to_std().unwrap_or_default();
        let index = (elapsed.as_millis() / interval.as_millis().max(1)) as u64;
        if index != wave.batch_index {
            wave.batch_index = index;
            wave.batch_used = 0;
        }
        size.saturating_sub(wave.batch_used)
    }

    /// Pushes the device the rollout's version; false when it needs none (already on it, or
    /// a downgrade that was not asked for).
    fn push_device(&mut self, now: DateTime<Utc>, idx: u32, step: &mut Step) -> bool {
        let target = self.plan.spec.artifact.version.clone();
        let d = &self.devices[idx as usize];
        let running = d.version.clone();
        let runs_target = running.as_deref() == Some(target.as_str());
        if runs_target
            && d.attempt > 0
            && d.status == Some(UpdateStatus::Success)
            && d.error.is_none()
        {
            // A retry of a device that runs the image (it failed its soak, or finished on its
            // own after its attempt failed): a push of the image it runs would change nothing
            // on it and time out, so it is watched through a new soak instead. The soak is one
            // of its tries, so a device that stays silent is flagged in the end.
            self.start_soak(now, idx, step);
            self.devices[idx as usize].tries += 1;
            return false;
        }
        if runs_target && d.status.is_none_or(|s| s == UpdateStatus::Success) && d.tries == 0 {
            self.set_state(idx, DeviceState::Updated);
            self.evaluate(now, idx, step);
            return false;
        }
        if let Some(running) = &running {
            let newer = semver::parse(running).is_some()
                && semver::compare(running, &target) == Ordering::Greater;
            if newer && !self.plan.spec.allow_downgrade {
                let message = format!(
                    "runs {running}, newer than {target}: a downgrade, refused (create the rollout with allow_downgrade to ask for one)"
                );
                let (device, wave) = (d.id.clone(), self.wave_name(idx));
                self.event(
                    step,
                    now,
                    EventKind::DeviceRefused,
                    wave,
                    Some(device),
                    message,
                );
                self.set_state(idx, DeviceState::Refused);
                self.evaluate(now, idx, step);
                return false;
            }
        }
        // `tries` orders the queue: leave it before it changes.
        self.detach(idx);
        let d = &mut self.devices[idx as usize];
        if d.from_version.is_none() {
            d.from_version = running;
        }
        d.attempt += 1;
        d.tries += 1;
        d.pushed_at = Some(now);
        d.reconnected = false;
        d.status_seen = false;
        d.telemetry_seen = false;
        d.state = DeviceState::InFlight {
            deadline: after(now, self.plan.device_timeout),
        };
        step.pushes.push(Push {
            device: d.id.clone(),
            attempt: d.attempt,
            version: target,
            rollback: false,
        });
        self.attach(idx);
        true
    }

    // ----- waves and gates -----

    pub(super) fn start_wave(&mut self, w: usize, now: DateTime<Utc>, step: &mut Step) {
        if w >= self.waves.len() || self.waves[w].status != WaveStatus::Pending {
            return;
        }
        let wave = &mut self.waves[w];
        wave.status = WaveStatus::Running;
        wave.started_at = Some(now);
        wave.batch_index = 0;
        wave.batch_used = 0;
        let size = wave.counts.gate_size();
        let name = wave.name.clone();
        let batch = match self.plan.waves[w].batch {
            Some((n, every)) => format!(", {n} every {}", human(every)),
            None => String::new(),
        };
        self.event(
            step,
            now,
            EventKind::WaveStarted,
            Some(name.clone()),
            None,
            format!("wave {name} started: {size} devices{batch}"),
        );
        self.pump_due = Some(now);
        self.evaluate_wave(now, w, step);
    }

    fn evaluate(&mut self, now: DateTime<Utc>, idx: u32, step: &mut Step) {
        if let Some(w) = self.devices[idx as usize].wave {
            self.evaluate_wave(now, w, step);
        }
    }

    /// The gates of wave `w`, from its counters.
    pub(super) fn evaluate_wave(&mut self, now: DateTime<Utc>, w: usize, step: &mut Step) {
        let wave = &self.waves[w];
        let plan = &self.plan.waves[w];
        let size = wave.counts.gate_size();
        let failures = wave.counts.failures().saturating_sub(wave.failure_base);
        if pushing(wave.status) && plan.failure.exceeded(failures, size) {
            self.trip(now, w, failures, size, step);
            return;
        }
        if wave.status == WaveStatus::Running && plan.success.reached(wave.counts.updated, size) {
            let name = wave.name.clone();
            let message = format!(
                "wave {name} passed: {} of {size} updated (gate {})",
                wave.counts.updated, plan.success
            );
            self.waves[w].status = WaveStatus::Passed;
            self.event(step, now, EventKind::GatePassed, Some(name), None, message);
            if self.status == Status::Running {
                self.start_wave(w + 1, now, step);
            }
            self.check_completed(now, step);
        }
    }

    fn trip(&mut self, now: DateTime<Utc>, w: usize, failures: u32, size: u32, step: &mut Step) {
        let name = self.waves[w].name.clone();
        let threshold = self.plan.waves[w].failure;
        self.waves[w].status = WaveStatus::Tripped;
        let reasons = self.failure_reasons(w);
        let message = format!(
            "wave {name} tripped: {failures} of {size} failed (threshold {threshold}){reasons}"
        );
        self.event(
            step,
            now,
            EventKind::GateTripped,
            Some(name.clone()),
            None,
            message.clone(),
        );
        match self.plan.spec.on_trip {
            TripAction::Pause => self.pause(now, message, step),
            TripAction::PauseAndRollbackWave => {
                self.pause(now, message, step);
                self.rollback_wave(now, w, step);
            }
            TripAction::PauseAndRollbackAll => {
                self.pause(now, message, step);
                for w in 0..self.waves.len() {
                    self.rollback_wave(now, w, step);
                }
            }
            TripAction::RollbackWaveAndContinue => {
                self.rollback_wave(now, w, step);
                if self.status == Status::Running {
                    self.start_wave(w + 1, now, step);
                }
            }
        }
    }

    /// The most common failure reasons in wave `w`, for the trip's message. Walks the wave:
    /// a trip happens once.
    fn failure_reasons(&self, w: usize) -> String {
        let mut seen: Vec<(String, u32)> = Vec::new();
        for d in self.devices.iter().filter(|d| d.wave == Some(w)) {
            if !matches!(d.state, DeviceState::Backoff { .. } | DeviceState::Flagged) {
                continue;
            }
            let Some(reason) = &d.failure else { continue };
            match seen.iter_mut().find(|(r, _)| r == reason) {
                Some((_, n)) => *n += 1,
                None => seen.push((reason.clone(), 1)),
            }
        }
        seen.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        match seen.first() {
            Some((reason, n)) => format!("; most common: {reason} ({n})"),
            None => String::new(),
        }
    }

    pub(super) fn pause(&mut self, now: DateTime<Utc>, reason: String, step: &mut Step) {
        if self.status != Status::Running && self.status != Status::Completed {
            return;
        }
        self.status = Status::Paused;
        self.reason = Some(reason.clone());
        self.event(
            step,
            now,
            EventKind::Paused,
            None,
            None,
            format!("paused: {reason}"),
        );
    }

    /// Sends wave `w`'s pushed devices back to the version they ran; the rest are not pushed.
    pub(super) fn rollback_wave(&mut self, now: DateTime<Utc>, w: usize, step: &mut Step) {
        let members: Vec<u32> = (0..self.devices.len() as u32)
            .filter(|&i| self.devices[i as usize].wave == Some(w))
            .collect();
        let mut sent = 0;
        for idx in members {
            let state = self.devices[idx as usize].state;
            if state == DeviceState::Waiting {
                self.set_state(idx, DeviceState::Skipped);
            } else if state.was_pushed() {
                self.rollback_device(now, idx, step);
                sent += 1;
            }
        }
        if self.waves[w].status == WaveStatus::Pending && sent == 0 {
            return;
        }
        let name = self.waves[w].name.clone();
        self.waves[w].status = WaveStatus::RolledBack;
        self.event(
            step,
            now,
            EventKind::RollbackStarted,
            Some(name.clone()),
            None,
            format!("rolling back wave {name}: {sent} devices sent back to their previous version"),
        );
    }

    fn rollback_device(&mut self, now: DateTime<Utc>, idx: u32, step: &mut Step) {
        let d = &mut self.devices[idx as usize];
        let Some(to) = d.from_version.clone() else {
            let reason = "cannot roll back: it reported no version before the push".to_string();
            self.flag(now, idx, reason, step);
            return;
        };
        d.attempt += 1;
        d.pushed_at = Some(now);
        step.pushes.push(Push {
            device: d.id.clone(),
            attempt: d.attempt,
            version: to.clone(),
            rollback: true,
        });
        let already =
            d.version.as_deref() == Some(to.as_str()) && d.status.is_none_or(|s| !s.is_updating());
        if already {
            self.set_state(idx, DeviceState::RolledBack);
        } else {
            let deadline = after(now, self.plan.device_timeout);
            self.set_state(idx, DeviceState::RollingBack { deadline });
        }
    }

    pub(super) fn check_completed(&mut self, now: DateTime<Utc>, step: &mut Step) {
        if self.status != Status::Running || self.totals.active() > 0 {
            return;
        }
        let all_done = self
            .waves
            .iter()
            .all(|w| matches!(w.status, WaveStatus::Passed | WaveStatus::RolledBack));
        if !all_done {
            return;
        }
        self.status = Status::Completed;
        let c = self.totals.compliance();
        let message = format!(
            "completed: {} of {} updated, {} rolled back, {} flagged, {} refused",
            c.updated, c.targeted, c.rolled_back, c.flagged, c.refused
        );
        self.event(step, now, EventKind::Completed, None, None, message);
    }

    // ----- helpers -----

    pub(super) fn wave_name(&self, idx: u32) -> Option<String> {
        self.devices[idx as usize]
            .wave
            .map(|w| self.waves[w].name.clone())
    }

    pub(super) fn event(
        &self,
        step: &mut Step,
        at: DateTime<Utc>,
        kind: EventKind,
        wave: Option<String>,
        device: Option<String>,
        message: String,
    ) {
        step.events.push(Event {
            at,
            kind,
            wave,
            device,
            message,
        });
    }
}
