//! Rollouts in the hub (docs/rollouts.md). The state machine is `fleethub-rollout`'s, pure;
//! here it meets the store and the devices:
//! - `durable.rs` turns each step (state, changed device records, journalled pushes, audit
//!   events) into rows written in one transaction, and rebuilds a rollout from its rows;
//! - `engine.rs` keeps every rollout's machine in memory, feeds it what commits and
//!   connections show, ticks it by the hub's clock and commits its steps;
//! - `push.rs` delivers pushes through the device-operation layer;
//! - `facts.rs` reads what a machine needs to know of a device from its twin;
//! - `view.rs` is what this API answers with.
//!
//! The API below is what the REST routes and the CLI call.

pub mod durable;
pub(crate) mod engine;
mod facts;
pub(crate) mod push;
mod view;

pub use engine::RolloutFigures;
pub use view::{
    CreateRollout, DeviceRolloutView, GateView, RolloutCommand, RolloutEvent, RolloutEventsPage,
    RolloutView, WaveView,
};

use crate::Hub;
use durable::StepWrite;
use engine::{Loaded, PendingStep, TwinChange};
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_query::Condition;
use fleethub_rollout::{Command, DeviceRecord, Observation, Rollout, RolloutSpec};
use fleethub_store::{FirmwareReads, JobReads, RolloutReads, RolloutRow, WriteTx};
use std::sync::atomic::Ordering;

/// The longest rollout id: its pushes' operation ids (`ro-{id}-{12 hex}`) must fit a job id.
pub const ROLLOUT_ID_MAX: usize = 48;
/// The most audit events one page holds.
pub const EVENTS_PAGE_MAX: usize = 1000;
/// The most rollouts one device's history answers with.
pub const DEVICE_ROLLOUTS_MAX: usize = 100;

fn not_found(id: &str) -> HubError {
    HubError::new(
        ErrorCode::RolloutNotFound,
        format!("rollout '{id}' does not exist"),
    )
}

fn invalid(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::RolloutInvalid, message)
}

fn check_id(id: &str) -> HubResult<()> {
    let ok = !id.is_empty()
        && id.len() <= ROLLOUT_ID_MAX
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        return Ok(());
    }
    Err(invalid(format!(
        "rollout id '{}' must be 1 to {ROLLOUT_ID_MAX} ASCII letters, digits or '-'",
        id.escape_default()
    )))
}

fn parse_condition(what: &str, text: &str) -> HubResult<Condition> {
    Condition::parse(text).map_err(|e| {
        HubError::new(
            ErrorCode::InvalidQuery,
            format!("{what} is not a valid query condition: {e}"),
        )
    })
}

impl Hub {
    /// Creates a rollout: checks the spec (every field, the target and wave queries, the
    /// artifact in the firmware store under the spec's version), finds the devices its target
    /// selects now, and stores it with its first step (the first wave's pushes handed to the
    /// device-operation layer in the same commit). With `supersedes`, the older rollout is
    /// superseded in that commit; an older version than it installs is refused unless the spec
    /// allows downgrades.
    pub async fn create_rollout(&self, request: CreateRollout) -> HubResult<RolloutView> {
        let CreateRollout {
            id,
            spec,
            supersedes,
        } = request;
        check_id(&id)?;
        spec.plan(&id).map_err(|e| invalid(e.0))?;
        self.check_artifact(&spec).await?;
        let target = parse_condition("target", &spec.target)?;
        let waves = facts::WaveQueries::parse(&spec)?;
        let state = self.rollouts_state().clone();
        let mut machines = state.machines.lock().await;
        let mut superseded = None;
        if let Some(old_id) = &supersedes {
            let old = self.loaded(&mut machines, old_id).await?;
            old.machine
                .check_supersede(&spec)
                .map_err(|e| invalid(e.0))?;
            superseded = Some(old_id.clone());
        }
        // From before its devices are read, every change that may move one in or out of its
        // target is queued (the next pass narrows this again if the rollout is not created).
        state.watch(&facts::ReportedReads::of(&target));
        let facts = self.target_facts(target, waves, &spec).await?;
        let now = self.now();
        let (mut machine, step) =
            Rollout::create(&id, &spec, facts, now).map_err(|e| invalid(e.0))?;
        let rows = StepWrite::of(&mut machine, &step, now)?;
        let spec_text =
            serde_json::to_string(&spec).map_err(|e| HubError::server(e.to_string()))?;
        let now_ms = now.timestamp_millis();
        let row = RolloutRow {
            rollout_id: id.clone(),
            spec: spec_text,
            status: rows.status().to_string(),
            state: rows.state().to_string(),
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        let first = PendingStep {
            rows,
            pushes: step.pushes,
            rollout_id: id.clone(),
            decided_by: None,
        };
        let old_step = match &superseded {
            Some(old_id) => {
                let old = machines.get_mut(old_id).ok_or_else(|| not_found(old_id))?;
                let step = old
                    .machine
                    .command(now, Command::Supersede { by: id.clone() })
                    .map_err(|e| HubError::new(ErrorCode::RolloutStateConflict, e.0))?;
                PendingStep::of(old, step, now, None)?
            }
            None => None,
        };
        let hub = self.clone();
        let taken = self
            .store()
            .write(move |tx| {
                if !tx.insert_rollout(&row)? {
                    return Ok(true);
                }
                first.apply(&hub, tx)?;
                if let Some(old) = &old_step {
                    old.apply(&hub, tx)?;
                }
                Ok::<_, HubError>(false)
            })
            .await?;
        if taken {
            if let Some(old_id) = &superseded {
                // The superseding step was not written: read the old rollout again.
                machines.remove(old_id);
            }
            return Err(HubError::new(
                ErrorCode::RolloutAlreadyExists,
                format!("a rollout with id '{id}' already exists; choose another id"),
            ));
        }
        let view = RolloutView::of(&machine, now_ms, now_ms);
        machines.insert(id, Loaded::new(machine, now_ms, now_ms));
        state.wake.notify_one();
        Ok(view)
    }

    /// The artifact must be in the firmware store, under the spec's version.
    async fn check_artifact(&self, spec: &RolloutSpec) -> HubResult<()> {
        let sha = spec.artifact.sha256.to_ascii_lowercase();
        let key = sha.clone();
        let row = self.store().read(move |r| r.get_firmware(&key)).await?;
        let Some(row) = row else {
            return Err(HubError::new(
                ErrorCode::FirmwareNotFound,
                format!(
                    "artifact.sha256 {sha} is not in the firmware store; upload the image first \
                     (fleethub firmware upload)"
                ),
            ));
        };
        if row.version != spec.artifact.version {
            return Err(invalid(format!(
                "artifact.version is {} but the firmware store holds {sha} as version {}",
                spec.artifact.version, row.version
            )));
        }
        Ok(())
    }

    /// Every rollout, newest first (at most `top`).
    pub async fn list_rollouts(&self, top: usize) -> HubResult<Vec<RolloutView>> {
        let rows = self
            .store()
            .read(move |r| r.list_rollouts(top.max(1)))
            .await?;
        let machines = self.rollouts_state().machines.lock().await;
        rows.iter()
            .map(|row| match machines.get(&row.rollout_id) {
                Some(l) => Ok(RolloutView::of(&l.machine, l.created_ms, l.updated_ms)),
                None => view_of_row(row),
            })
            .collect()
    }

    /// One rollout: status, waves with their gates, counters and compliance.
    pub async fn get_rollout(&self, id: &str) -> HubResult<RolloutView> {
        let mut machines = self.rollouts_state().machines.lock().await;
        let l = self.loaded(&mut machines, id).await?;
        Ok(RolloutView::of(&l.machine, l.created_ms, l.updated_ms))
    }

    /// Every device a rollout tracks, with its state, wave, attempts and last report.
    pub async fn rollout_devices(&self, id: &str) -> HubResult<Vec<DeviceRecord>> {
        let mut machines = self.rollouts_state().machines.lock().await;
        let l = self.loaded(&mut machines, id).await?;
        Ok(l.machine.devices().to_vec())
    }

    /// The rollouts a device belongs to, newest first (at most `limit`, capped at
    /// [`DEVICE_ROLLOUTS_MAX`]), with the device's attempt in each, as committed. 404
    /// `DeviceNotFound` for a device that is not registered.
    pub async fn device_rollouts(
        &self,
        device_id: &str,
        limit: usize,
    ) -> HubResult<Vec<DeviceRolloutView>> {
        let device_id = fleethub_core::DeviceId::parse(device_id)?;
        let limit = limit.clamp(1, DEVICE_ROLLOUTS_MAX);
        let key = device_id.as_str().to_string();
        let (exists, rows) = self
            .store()
            .read(move |r| {
                let exists = r.device_exists(&key)?;
                Ok::<_, fleethub_store::StoreError>((exists, r.device_rollouts(&key, limit)?))
            })
            .await?;
        if !exists {
            return Err(HubError::new(
                ErrorCode::DeviceNotFound,
                format!("device '{device_id}' is not registered"),
            ));
        }
        rows.iter().map(DeviceRolloutView::of_row).collect()
    }

    /// A page of a rollout's audit trail: up to `limit` (at most [`EVENTS_PAGE_MAX`]) events
    /// after the cursor `after` (0 for the first page).
    pub async fn rollout_events(
        &self,
        id: &str,
        after: i64,
        limit: usize,
    ) -> HubResult<RolloutEventsPage> {
        let limit = limit.clamp(1, EVENTS_PAGE_MAX);
        let key = id.to_string();
        let (exists, rows) = self
            .store()
            .read(move |r| {
                let exists = r.get_rollout(&key)?.is_some();
                Ok::<_, fleethub_store::StoreError>((exists, r.rollout_events(&key, after, limit)?))
            })
            .await?;
        if !exists {
            return Err(not_found(id));
        }
        let full = rows.len() == limit;
        let events: Vec<RolloutEvent> = rows
            .into_iter()
            .filter_map(RolloutEvent::from_row)
            .collect();
        let next = if full {
            events.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(RolloutEventsPage { events, next })
    }

    /// Carries out an operator's command in one commit (its pushes handed on with it); a
    /// command the rollout's state does not allow is 409 `RolloutStateConflict`.
    pub async fn rollout_command(
        &self,
        id: &str,
        command: RolloutCommand,
    ) -> HubResult<RolloutView> {
        let resume_for = match &command {
            RolloutCommand::ResumeFor { query } => {
                Some(parse_condition("the resume query", query)?)
            }
            _ => None,
        };
        let state = self.rollouts_state().clone();
        let mut machines = state.machines.lock().await;
        let ids = match resume_for {
            Some(condition) => {
                let l = self.loaded(&mut machines, id).await?;
                let tracked: Vec<String> =
                    l.machine.devices().iter().map(|d| d.id.clone()).collect();
                Some(self.matching_twins(condition, tracked).await?)
            }
            None => None,
        };
        let l = self.loaded(&mut machines, id).await?;
        let now = self.now();
        let refused =
            |e: fleethub_rollout::CommandError| HubError::new(ErrorCode::RolloutStateConflict, e.0);
        let step = match command {
            RolloutCommand::Pause => l.machine.command(now, Command::Pause).map_err(refused)?,
            RolloutCommand::Resume => l.machine.command(now, Command::Resume).map_err(refused)?,
            RolloutCommand::Abort => l.machine.command(now, Command::Abort).map_err(refused)?,
            RolloutCommand::Rollback { wave } => l
                .machine
                .command(now, Command::Rollback { wave })
                .map_err(refused)?,
            RolloutCommand::Retry { devices } => l
                .machine
                .command(now, Command::Retry { devices })
                .map_err(refused)?,
            RolloutCommand::Supersede { by } => l
                .machine
                .command(now, Command::Supersede { by })
                .map_err(refused)?,
            RolloutCommand::ResumeFor { .. } => {
                let devices = ids.unwrap_or_default();
                let mut step = l
                    .machine
                    .command(
                        now,
                        Command::Retry {
                            devices: Some(devices),
                        },
                    )
                    .map_err(refused)?;
                if l.machine.status() == fleethub_rollout::Status::Paused {
                    let more = l.machine.command(now, Command::Resume).map_err(refused)?;
                    step.pushes.extend(more.pushes);
                    step.events.extend(more.events);
                }
                step
            }
        };
        let pending = PendingStep::of(l, step, now, None)?;
        let view = RolloutView::of(&l.machine, l.created_ms, l.updated_ms);
        let result = self.commit_steps(pending.into_iter().collect()).await;
        if let Err(e) = result {
            // The machine moved on but its step was not written: read it again from the store.
            machines.remove(id);
            return Err(e);
        }
        state.wake.notify_one();
        Ok(view)
    }

    /// The loaded rollout `id`, read from the store the first time.
    async fn loaded<'m>(
        &self,
        machines: &'m mut std::collections::BTreeMap<String, Loaded>,
        id: &str,
    ) -> HubResult<&'m mut Loaded> {
        if !machines.contains_key(id) {
            let key = id.to_string();
            let row = self.store().read(move |r| r.get_rollout(&key)).await?;
            let row = row.ok_or_else(|| not_found(id))?;
            let machine = durable::load(self.store(), id)
                .await?
                .ok_or_else(|| not_found(id))?;
            let loaded = Loaded::new(machine, row.created_ms, row.updated_ms);
            if !loaded.machine.status().is_terminal() {
                self.rollouts_state().watch(&loaded.reads());
            }
            machines.insert(id.to_string(), loaded);
        }
        machines.get_mut(id).ok_or_else(|| not_found(id))
    }

    /// Loads every unfinished rollout, so the engine goes on with them after a restart.
    pub(crate) async fn load_unfinished_rollouts(&self) -> HubResult<()> {
        let ids = self.store().read(|r| r.unfinished_rollouts()).await?;
        let state = self.rollouts_state().clone();
        let mut machines = state.machines.lock().await;
        let now = self.now();
        for id in &ids {
            // Nothing was watched while the hub was down: no device fails for that.
            self.loaded(&mut machines, id)
                .await?
                .machine
                .resume_watching(now);
        }
        if ids.is_empty() {
            return Ok(());
        }
        state.active.store(true, Ordering::Release);
        // Reports committed before the stop whose observations had not been taken in yet were
        // lost with the queue: tell the machines what the twins say now (a report they already
        // saw is recognised as such and changes nothing).
        let watched: Vec<String> = machines
            .values()
            .filter(|l| !l.machine.status().is_terminal())
            .flat_map(|l| l.machine.devices().iter())
            .filter(|d| d.state.timer().is_some())
            .map(|d| d.id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        drop(machines);
        for (device, doc) in self.twin_docs(watched).await? {
            let Some(firmware) = doc
                .as_ref()
                .and_then(fleethub_core::firmware::ReportedFirmware::from_twin)
            else {
                continue;
            };
            state.observe(Observation::Reported { device, firmware });
        }
        state.wake.notify_one();
        Ok(())
    }

    /// Records, in a write, an observation for the rollout engine once it commits (nothing
    /// while no rollout runs; `make` is called only then).
    pub(crate) fn rollouts_observe_on_commit(
        &self,
        tx: &mut WriteTx<'_>,
        make: impl FnOnce() -> Observation,
    ) {
        let state = self.rollouts_state();
        if !state.active.load(Ordering::Acquire) {
            return;
        }
        let (state, observation) = (state.clone(), make());
        tx.on_commit(move || state.observe(observation));
    }

    /// Records, in a write that changes a device's twin or registry entry (or creates or
    /// deletes it), that rollouts should judge its membership again once it commits.
    pub(crate) fn rollouts_twin_changed_on_commit(&self, tx: &mut WriteTx<'_>, device: &str) {
        self.rollouts_changed_on_commit(tx, device, || TwinChange::Any);
    }

    /// Records, in a write of a reported patch, which top-level properties it touched, so
    /// rollouts whose targets read none of them need not judge the device again.
    pub(crate) fn rollouts_reported_on_commit<'k>(
        &self,
        tx: &mut WriteTx<'_>,
        device: &str,
        patched: impl Iterator<Item = &'k String>,
    ) {
        self.rollouts_changed_on_commit(tx, device, || {
            TwinChange::Reported(patched.cloned().collect())
        });
    }

    fn rollouts_changed_on_commit(
        &self,
        tx: &mut WriteTx<'_>,
        device: &str,
        change: impl FnOnce() -> TwinChange,
    ) {
        let state = self.rollouts_state();
        if !state.active.load(Ordering::Acquire) {
            return;
        }
        let (state, device, change) = (state.clone(), device.to_string(), change());
        tx.on_commit(move || state.twin_changed(device, change));
    }

    /// A reported patch that touched `firmware`: the section as merged, once committed.
    pub(crate) fn rollouts_observe_report_on_commit(
        &self,
        tx: &mut WriteTx<'_>,
        device: &str,
        reported: &fleethub_core::twin::TwinProperties,
    ) {
        let Some(value) = reported.values.get("firmware") else {
            return;
        };
        self.rollouts_observe_on_commit(tx, || {
            match serde_json::from_value(value.clone()) {
                Ok(firmware) => Observation::Reported {
                    device: device.to_string(),
                    firmware,
                },
                // Not the contract's shape: a report that says nothing the machine can use
                // still counts as the device being alive.
                Err(_) => Observation::Telemetry {
                    device: device.to_string(),
                },
            }
        });
    }
}

/// The view of a rollout not loaded: from its stored state.
fn view_of_row(row: &RolloutRow) -> HubResult<RolloutView> {
    let corrupt =
        |e: serde_json::Error| HubError::server(format!("stored rollout {}: {e}", row.rollout_id));
    let spec: RolloutSpec = serde_json::from_str(&row.spec).map_err(corrupt)?;
    let state = serde_json::from_str(&row.state).map_err(corrupt)?;
    Ok(RolloutView::of_state(
        &row.rollout_id,
        &spec,
        &state,
        row.created_ms,
        row.updated_ms,
    ))
}

#[cfg(test)]
mod tests;
