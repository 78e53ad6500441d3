//! What an operator can do to a rollout.

use super::{Command, CommandError, Rollout, Status, WaveStatus};
use crate::device::DeviceState;
use crate::event::{EventKind, Step};
use crate::spec::RolloutSpec;
use chrono::{DateTime, Utc};
use fleethub_core::semver;
use std::cmp::Ordering;

impl Rollout {
    /// Carries out an operator's command, or says why it cannot be.
    pub fn command(&mut self, now: DateTime<Utc>, command: Command) -> Result<Step, CommandError> {
        let mut step = Step::default();
        if self.status.is_terminal() {
            return Err(CommandError(format!(
                "rollout {} is {}: create a new rollout instead",
                self.id,
                status_word(self.status)
            )));
        }
        match command {
            Command::Pause => {
                if self.status != Status::Running {
                    return Err(self.not_now("paused", "running"));
                }
                self.pause(now, "paused by the operator".into(), &mut step);
            }
            Command::Resume => self.resume(now, &mut step)?,
            Command::Abort => self.end(
                now,
                Status::Aborted,
                "aborted by the operator".into(),
                &mut step,
            ),
            Command::Supersede { by } => {
                let reason = format!("superseded by rollout {by}");
                self.end(now, Status::Superseded, reason, &mut step);
            }
            Command::Rollback { wave } => self.rollback(now, wave, &mut step)?,
            Command::Retry { devices } => self.retry(now, devices, &mut step)?,
        }
        if self.pump_due.is_some() {
            self.pump(now, &mut step);
        }
        self.check_completed(now, &mut step);
        Ok(step)
    }

    /// Whether `newer` may supersede this rollout: not a downgrade unless it asks for one.
    pub fn check_supersede(&self, newer: &RolloutSpec) -> Result<(), CommandError> {
        let (from, to) = (&self.plan.spec.artifact.version, &newer.artifact.version);
        if semver::compare(to, from) == Ordering::Less && !newer.allow_downgrade {
            return Err(CommandError(format!(
                "{to} is older than {from}, which rollout {} installs: a downgrade, refused (set allow_downgrade to ask for one)",
                self.id
            )));
        }
        Ok(())
    }

    fn not_now(&self, verb: &str, needs: &str) -> CommandError {
        CommandError(format!(
            "rollout {} is {}; it can be {verb} only while {needs}",
            self.id,
            status_word(self.status)
        ))
    }

    fn resume(&mut self, now: DateTime<Utc>, step: &mut Step) -> Result<(), CommandError> {
        if self.status != Status::Paused {
            return Err(self.not_now("resumed", "paused"));
        }
        self.status = Status::Running;
        self.reason = None;
        // A tripped wave is armed again: it trips on failures past its threshold from here on.
        for wave in &mut self.waves {
            if wave.status == WaveStatus::Tripped {
                wave.status = WaveStatus::Running;
                wave.failure_base = wave.counts.failures();
            }
        }
        self.event(
            step,
            now,
            EventKind::Resumed,
            None,
            None,
            "resumed by the operator".into(),
        );
        self.advance(now, step);
        Ok(())
    }

    /// Starts the first pending wave whose predecessor is done with, and re-checks gates.
    fn advance(&mut self, now: DateTime<Utc>, step: &mut Step) {
        for w in 0..self.waves.len() {
            self.evaluate_wave(now, w, step);
            if self.status != Status::Running {
                return;
            }
        }
        if let Some(w) = self
            .waves
            .iter()
            .position(|w| w.status == WaveStatus::Pending)
        {
            let before_done = w == 0
                || matches!(
                    self.waves[w - 1].status,
                    WaveStatus::Passed | WaveStatus::RolledBack
                );
            if before_done {
                self.start_wave(w, now, step);
            }
        }
        self.pump_due = Some(now);
    }

    /// Aborted or superseded: nothing more is pushed; devices not pushed yet are skipped.
    fn end(&mut self, now: DateTime<Utc>, status: Status, reason: String, step: &mut Step) {
        for idx in 0..self.devices.len() as u32 {
            if matches!(
                self.devices[idx as usize].state,
                DeviceState::Waiting | DeviceState::Unassigned | DeviceState::Backoff { .. }
            ) {
                self.set_state(idx, DeviceState::Skipped);
            }
        }
        self.status = status;
        self.reason = Some(reason.clone());
        let kind = match status {
            Status::Superseded => EventKind::Superseded,
            _ => EventKind::Aborted,
        };
        self.event(step, now, kind, None, None, reason);
    }

    fn rollback(
        &mut self,
        now: DateTime<Utc>,
        wave: Option<String>,
        step: &mut Step,
    ) -> Result<(), CommandError> {
        let waves: Vec<usize> = match wave {
            None => (0..self.waves.len()).collect(),
            Some(name) => match self.waves.iter().position(|w| w.name == name) {
                Some(w) => vec![w],
                None => {
                    let names: Vec<&str> = self.waves.iter().map(|w| w.name.as_str()).collect();
                    return Err(CommandError(format!(
                        "rollout {} has no wave '{name}'; its waves are {}",
                        self.id,
                        names.join(", ")
                    )));
                }
            },
        };
        let what = if waves.len() == 1 {
            format!("wave {}", self.waves[waves[0]].name)
        } else {
            "every wave".to_string()
        };
        self.pause(now, format!("{what} rolled back by the operator"), step);
        for w in waves {
            self.rollback_wave(now, w, step);
        }
        Ok(())
    }

    fn retry(
        &mut self,
        now: DateTime<Utc>,
        devices: Option<Vec<String>>,
        step: &mut Step,
    ) -> Result<(), CommandError> {
        let candidates: Vec<u32> = match &devices {
            None => (0..self.devices.len() as u32).collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.index.get(id).copied())
                .collect(),
        };
        let mut retried = 0;
        for idx in candidates {
            let d = &self.devices[idx as usize];
            let failed = matches!(d.state, DeviceState::Flagged | DeviceState::Backoff { .. });
            let Some(w) = d.wave else { continue };
            if !failed || self.waves[w].status == WaveStatus::RolledBack {
                continue;
            }
            if self.waves[w].status == WaveStatus::Tripped {
                self.waves[w].status = WaveStatus::Running;
            }
            self.detach(idx);
            let d = &mut self.devices[idx as usize];
            d.tries = 0;
            d.state = DeviceState::Waiting;
            self.attach(idx);
            retried += 1;
        }
        if retried == 0 {
            return Err(CommandError(format!(
                "rollout {} has no failed or flagged device to retry{}",
                self.id,
                if devices.is_some() {
                    " among those named"
                } else {
                    ""
                }
            )));
        }
        // Failures counted before the retry no longer count against the gates.
        for wave in &mut self.waves {
            wave.failure_base = wave.failure_base.min(wave.counts.failures());
        }
        self.event(
            step,
            now,
            EventKind::Retried,
            None,
            None,
            format!("{retried} failed devices queued again with fresh retries"),
        );
        self.pump_due = Some(now);
        Ok(())
    }
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Completed => "completed",
        Status::Aborted => "aborted",
        Status::Superseded => "superseded",
    }
}
