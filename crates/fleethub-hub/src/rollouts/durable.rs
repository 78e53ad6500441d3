//! A rollout's steps, written whole. Each call into the machine yields a `Step`; the state it
//! leaves, the device records it changed, its pushes (journalled under (rollout, device,
//! attempt)) and its events go to the store in one transaction, before any push is handed on.
//! After a crash the rollout is rebuilt from exactly what was committed: a push not committed was
//! never handed on, and one committed but not yet marked sent is handed on again under the same
//! key, so the device-operation layer sees one push per attempt and none is skipped.

use chrono::{DateTime, Utc};
use fleethub_rollout::{
    DeviceFacts, DeviceRecord, Rollout, RolloutSpec, RolloutState, Snapshot, SpecError, Step,
};
use fleethub_store::{
    RolloutEventRow, RolloutPushRow, RolloutReads, RolloutRow, Store, StoreError, WriteTx,
};
use std::fmt;

/// Why a rollout could not be created.
#[derive(Debug)]
pub enum CreateError {
    /// The spec cannot run; the message names the field.
    Spec(SpecError),
    /// Another rollout has this id.
    Taken(String),
    Store(StoreError),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Spec(e) => write!(f, "{e}"),
            CreateError::Taken(id) => write!(f, "a rollout with id '{id}' already exists"),
            CreateError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CreateError {}

impl From<StoreError> for CreateError {
    fn from(e: StoreError) -> Self {
        CreateError::Store(e)
    }
}

/// One step as rows, ready to be written.
#[derive(Debug, Clone)]
pub struct StepWrite {
    rollout_id: String,
    status: String,
    state: String,
    devices: Vec<(String, String)>,
    pushes: Vec<RolloutPushRow>,
    events: Vec<RolloutEventRow>,
    now_ms: i64,
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(format!("encoding {what}: {e}")))
}

fn status_text(state: &RolloutState) -> Result<String, StoreError> {
    match serde_json::to_value(state.status) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Other("encoding a rollout status".into())),
    }
}

impl StepWrite {
    /// The rows of `step`, which `rollout` just returned: its state now, the records it changed
    /// since the last step, and the step's pushes and events.
    pub fn of(rollout: &mut Rollout, step: &Step, now: DateTime<Utc>) -> Result<Self, StoreError> {
        let state = rollout.state();
        let id = rollout.id().to_string();
        let devices = rollout
            .take_changed()
            .iter()
            .map(|d: &DeviceRecord| Ok((d.id.clone(), encode("a rollout device", d)?)))
            .collect::<Result<_, StoreError>>()?;
        let now_ms = now.timestamp_millis();
        let pushes = step
            .pushes
            .iter()
            .map(|p| RolloutPushRow {
                rollout_id: id.clone(),
                device_id: p.device.clone(),
                attempt: p.attempt,
                version: p.version.clone(),
                rollback: p.rollback,
                created_ms: now_ms,
                sent_ms: None,
            })
            .collect();
        let events = step
            .events
            .iter()
            .map(|e| {
                Ok(RolloutEventRow {
                    seq: 0,
                    rollout_id: id.clone(),
                    at_ms: e.at.timestamp_millis(),
                    kind: encode("an event kind", &e.kind)?
                        .trim_matches('"')
                        .to_string(),
                    wave: e.wave.clone(),
                    device_id: e.device.clone(),
                    message: e.message.clone(),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(StepWrite {
            status: status_text(&state)?,
            state: encode("a rollout's state", &state)?,
            rollout_id: id,
            devices,
            pushes,
            events,
            now_ms,
        })
    }

    /// Whether the step changed nothing the store keeps (no pushes, events or device records;
    /// the rollout-level state changes only with those).
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.pushes.is_empty() && self.events.is_empty()
    }

    /// The rollout's status as stored (`running`, `paused`, …).
    pub fn status(&self) -> &str {
        &self.status
    }

    /// The rollout-level state as stored (JSON).
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Writes the step inside a store write.
    pub fn apply(&self, tx: &mut WriteTx<'_>) -> Result<(), StoreError> {
        if !tx.update_rollout(&self.rollout_id, &self.status, &self.state, self.now_ms)? {
            return Err(StoreError::Other(format!(
                "rollout {} is not stored",
                self.rollout_id
            )));
        }
        tx.put_rollout_devices(&self.rollout_id, &self.devices, self.now_ms)?;
        tx.insert_rollout_pushes(&self.pushes)?;
        tx.append_rollout_events(&self.events)
    }
}

/// Creates a rollout over the devices matching its target now, and stores it with its first
/// step (the first wave's pushes are journalled, not yet handed on).
pub async fn create(
    store: &Store,
    id: &str,
    spec: &RolloutSpec,
    devices: Vec<DeviceFacts>,
    now: DateTime<Utc>,
) -> Result<(Rollout, Step), CreateError> {
    let (mut rollout, step) = Rollout::create(id, spec, devices, now).map_err(CreateError::Spec)?;
    let rows = StepWrite::of(&mut rollout, &step, now)?;
    let row = RolloutRow {
        rollout_id: id.to_string(),
        spec: encode("a rollout spec", spec)?,
        status: rows.status.clone(),
        state: rows.state.clone(),
        created_ms: rows.now_ms,
        updated_ms: rows.now_ms,
    };
    let taken = store
        .write(move |tx| {
            if !tx.insert_rollout(&row)? {
                return Ok(true);
            }
            rows.apply(tx)?;
            Ok::<_, StoreError>(false)
        })
        .await?;
    if taken {
        return Err(CreateError::Taken(id.to_string()));
    }
    Ok((rollout, step))
}

/// Writes a step `rollout` returned.
pub async fn save(
    store: &Store,
    rollout: &mut Rollout,
    step: &Step,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let rows = StepWrite::of(rollout, step, now)?;
    store.write(move |tx| rows.apply(tx)).await
}

/// The rollout as committed, rebuilt; `None` if there is none with this id.
pub async fn load(store: &Store, id: &str) -> Result<Option<Rollout>, StoreError> {
    let key = id.to_string();
    let found = store
        .read(move |r| {
            let Some(row) = r.get_rollout(&key)? else {
                return Ok(None);
            };
            let devices = r.rollout_devices(&key)?;
            Ok(Some((row, devices)))
        })
        .await?;
    let Some((row, devices)) = found else {
        return Ok(None);
    };
    let corrupt = |what: &str, e: &dyn fmt::Display| {
        StoreError::Other(format!("stored rollout {id}: {what} does not decode: {e}"))
    };
    let spec: RolloutSpec = serde_json::from_str(&row.spec).map_err(|e| corrupt("spec", &e))?;
    let state: RolloutState = serde_json::from_str(&row.state).map_err(|e| corrupt("state", &e))?;
    let devices = devices
        .iter()
        .map(|(device, record)| {
            serde_json::from_str(record).map_err(|e| corrupt(&format!("device {device}"), &e))
        })
        .collect::<Result<Vec<DeviceRecord>, _>>()?;
    let snapshot = Snapshot { state, devices };
    Rollout::restore(id, &spec, snapshot)
        .map(Some)
        .map_err(|e| corrupt("spec", &e))
}

#[cfg(test)]
mod tests;
