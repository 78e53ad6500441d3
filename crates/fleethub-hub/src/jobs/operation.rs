//! The device-operation layer's typed entry point, for the engines that drive waves of devices
//! (rollouts, configurations): a twin update or a direct method over a device set given as a
//! query condition or as an explicit list of ids, each listed device optionally with a
//! not-before time (a maintenance window), at a [`Pace`]. An operation is a job: the same
//! engine runs it, `GET /jobs/v2/{id}` shows it, cancel stops it, and its completion is
//! announced through [`crate::Hub::subscribe_operations`].
//!
//! A list has no text cap (a query condition has the query language's 8,192 characters): its
//! ids are validated, duplicates dropped, and its rows written when the operation is created,
//! one insert per device. An id that is valid but not registered does not fail the operation:
//! its row fails at once with `DeviceNotFound` and the others go on.

use super::document::{device_error, JobDocument, JobType, MethodCall, Statistics, TwinUpdate};
use super::notify::OperationNotice;
use super::rate::Pace;
use super::request::{check_method_call, check_twin_update, JobId};
use super::request::{DEFAULT_MAX_EXECUTION_SECS, MAX_EXECUTION_SECS_LIMIT};
use crate::events::append_change;
use crate::Hub;
use chrono::{DateTime, Utc};
use fleethub_core::events::Change;
use fleethub_core::ids::DeviceId;
use fleethub_core::jobs::{DeviceJobStatus, JobStatus};
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_store::{JobRow, NewJobDevice, NewJobDevices};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;

/// Which devices an operation reaches.
#[derive(Debug, Clone)]
pub enum DeviceSet {
    /// Those a query condition selects when the operation starts (`*` for every device).
    Query(String),
    /// Exactly these devices, in any order, duplicates ignored (the first entry of an id wins).
    Listed(Vec<DeviceTarget>),
}

/// One listed device, and the time before which its part must not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTarget {
    pub device_id: String,
    /// `None`: as soon as the operation and its pace allow.
    pub not_before: Option<DateTime<Utc>>,
}

impl DeviceTarget {
    /// A device to reach as soon as the operation allows.
    pub fn new(device_id: impl Into<String>) -> DeviceTarget {
        DeviceTarget {
            device_id: device_id.into(),
            not_before: None,
        }
    }

    /// A device whose part waits until `time` (its maintenance window opens).
    pub fn not_before(device_id: impl Into<String>, time: DateTime<Utc>) -> DeviceTarget {
        DeviceTarget {
            device_id: device_id.into(),
            not_before: Some(time),
        }
    }
}

/// What an operation does to each device.
#[derive(Debug, Clone)]
pub enum DeviceAction {
    /// Merge-patch tags and desired properties (pushed to connected devices after each commit).
    UpdateTwin(TwinUpdate),
    /// Invoke a direct method.
    InvokeMethod(MethodCall),
    /// Bring the twin in line with the configurations that target it (the configuration
    /// engine's own action: what it writes depends on each twin).
    ApplyConfigurations,
    /// Set `desired.firmware` to the device's latest push in this rollout (the rollout
    /// engine's own action: each device gets its own download URL, and an attempt's desired
    /// firmware is written in the same commit that marks it sent, once).
    PushFirmware { rollout: String },
}

/// A device operation, as an engine asks for it.
#[derive(Debug, Clone)]
pub struct OperationSpec {
    pub id: JobId,
    pub devices: DeviceSet,
    pub action: DeviceAction,
    /// `None`: start at once.
    pub start_time: Option<DateTime<Utc>>,
    /// Devices not reached this long after the start fail with `JobTimedOut`.
    pub max_execution: Duration,
    pub pace: Option<Pace>,
}

impl OperationSpec {
    /// An operation that starts now, with the jobs' default execution limit and no pace.
    pub fn new(id: JobId, devices: DeviceSet, action: DeviceAction) -> OperationSpec {
        OperationSpec {
            id,
            devices,
            action,
            start_time: None,
            max_execution: Duration::from_secs(DEFAULT_MAX_EXECUTION_SECS),
            pace: None,
        }
    }
}

/// What creating an operation did with its device set.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationCreated {
    /// The operation as `GET /jobs/v2/{id}` shows it.
    pub job: super::document::Job,
    /// Distinct listed devices (0 for a query, whose devices are selected when it starts).
    pub listed: u64,
    /// Listed entries dropped because their id came earlier in the list.
    pub duplicates: u64,
    /// Listed ids that are not registered: their rows failed at once with `DeviceNotFound`.
    pub unknown: Vec<String>,
}

/// A listed device, validated, as it enters the store.
pub(super) struct Listed {
    id: DeviceId,
    not_before_ms: Option<i64>,
}

impl Hub {
    /// Publishes, once `tx` commits, that these devices' parts in operation `job` ended (an
    /// engine that processes its own rows reports through this).
    pub(crate) fn operation_devices_finished_on_commit(
        &self,
        tx: &mut fleethub_store::WriteTx<'_>,
        job: &str,
        finished: Vec<(String, DeviceJobStatus)>,
    ) {
        let notices = &self.jobs_state().notices;
        if finished.is_empty() || !notices.any() {
            return;
        }
        let list = finished
            .into_iter()
            .map(|(device_id, status)| OperationNotice::DeviceFinished {
                operation: job.to_string(),
                device_id,
                status,
            })
            .collect();
        notices.on_commit(tx, list);
    }

    /// Completion notices of every device operation (jobs included) from now on: each device's
    /// terminal state and each operation's, once each, in commit order. "From now on" counts
    /// from the writes that run after this call: subscribe before creating the operations whose
    /// ends you wait for (a write already running may record nothing for a subscriber it did not
    /// see).
    pub fn subscribe_operations(&self) -> mpsc::UnboundedReceiver<OperationNotice> {
        self.jobs_state().notices.subscribe()
    }

    /// Creates a device operation; it starts at its start time, like a job.
    pub async fn create_operation(&self, spec: OperationSpec) -> HubResult<OperationCreated> {
        let prepared = self.prepare_operation(spec)?;
        let count = prepared.listed.as_ref().map_or(0, |l| l.len() as u64);
        let (doc, duplicates) = (prepared.doc, prepared.duplicates);
        let unknown = self
            .insert_job(&doc, prepared.listed.unwrap_or_default())
            .await?;
        Ok(OperationCreated {
            job: doc.into_job(Statistics::default()),
            listed: count,
            duplicates,
            unknown,
        })
    }

    /// Writes a prepared operation inside `tx`, so an engine creates it in the same commit as
    /// the change it follows from; `false` if its id is taken.
    pub(crate) fn insert_operation_in(
        &self,
        tx: &mut fleethub_store::WriteTx<'_>,
        prepared: PreparedOperation,
    ) -> HubResult<bool> {
        let row = job_row(&prepared.doc, self.now_ms())?;
        let listed = prepared.listed.unwrap_or_default();
        let inserted = insert_job_in(self, tx, &row, &prepared.doc.created_time, &listed)?;
        Ok(inserted.is_some())
    }

    /// Validates an operation and builds its document, without writing anything.
    pub(crate) fn prepare_operation(&self, spec: OperationSpec) -> HubResult<PreparedOperation> {
        match &spec.action {
            DeviceAction::UpdateTwin(update) => check_twin_update(update)?,
            DeviceAction::InvokeMethod(call) => check_method_call(call)?,
            DeviceAction::ApplyConfigurations | DeviceAction::PushFirmware { .. } => {}
        }
        let secs = spec.max_execution.as_secs();
        if !(1..=MAX_EXECUTION_SECS_LIMIT).contains(&secs) {
            return Err(HubError::new(
                ErrorCode::JobInvalid,
                format!(
                    "max_execution is {secs} s; it must be from 1 to {MAX_EXECUTION_SECS_LIMIT} s"
                ),
            ));
        }
        let (query_condition, listed, duplicates) = match spec.devices {
            DeviceSet::Query(text) => {
                super::condition::DeviceSelection::validate(&text)?;
                (text, None, 0)
            }
            DeviceSet::Listed(targets) => {
                let (listed, duplicates) = validate_list(targets)?;
                (String::new(), Some(listed), duplicates)
            }
        };
        let rollout_id = match &spec.action {
            DeviceAction::PushFirmware { rollout } => Some(rollout.clone()),
            _ => None,
        };
        let (job_type, method, twin) = match spec.action {
            DeviceAction::UpdateTwin(t) => (JobType::UpdateTwin, None, Some(t)),
            DeviceAction::InvokeMethod(m) => (JobType::DeviceMethod, Some(m), None),
            DeviceAction::ApplyConfigurations => (JobType::ApplyConfigurations, None, None),
            DeviceAction::PushFirmware { .. } => (JobType::PushFirmware, None, None),
        };
        let now = self.now();
        let mut doc = new_document(spec.id, job_type, query_condition, now, spec.start_time);
        doc.max_execution_time_in_seconds = secs;
        doc.cloud_to_device_method = method;
        doc.update_twin = twin;
        doc.pace = spec.pace;
        doc.rollout_id = rollout_id;
        if let Some(list) = &listed {
            doc.listed_devices = Some(list.len() as u64);
            doc.snapshot_done = true;
        }
        Ok(PreparedOperation {
            doc,
            listed,
            duplicates,
        })
    }

    /// Stores a new job (and, for a listed device set, its rows) in one write; refuses a taken
    /// id. Returns the listed ids that are not registered.
    pub(super) async fn insert_job(
        &self,
        doc: &JobDocument,
        listed: Vec<Listed>,
    ) -> HubResult<Vec<String>> {
        let row = job_row(doc, self.now_ms())?;
        let (hub, created_time) = (self.clone(), doc.created_time.clone());
        let inserted = self
            .store()
            .write(move |tx| insert_job_in(&hub, tx, &row, &created_time, &listed))
            .await?;
        inserted.ok_or_else(|| {
            HubError::new(
                ErrorCode::JobAlreadyExists,
                format!(
                    "job '{}' already exists; choose another id (a finished job's id stays taken \
                     until its history is pruned)",
                    doc.job_id
                ),
            )
        })
    }
}

/// A validated operation: its document and listed devices, not yet written.
pub(crate) struct PreparedOperation {
    doc: JobDocument,
    listed: Option<Vec<Listed>>,
    duplicates: u64,
}

/// A new job's row.
fn job_row(doc: &JobDocument, now_ms: i64) -> HubResult<JobRow> {
    let start = fleethub_core::time::parse_timestamp(&doc.start_time)
        .ok_or_else(|| HubError::server("a new job's start time is unreadable"))?;
    Ok(JobRow {
        job_id: doc.job_id.clone(),
        job_type: doc.job_type.as_str().to_string(),
        status: doc.status,
        created_ms: now_ms,
        start_ms: start.timestamp_millis(),
        end_ms: None,
        body: doc.to_value(),
    })
}

/// Writes a new job's row, its listed devices' rows, its event and the engine's wake-up;
/// `None` (nothing written) if the id is taken, else the listed ids that are not registered.
fn insert_job_in(
    hub: &Hub,
    tx: &mut fleethub_store::WriteTx<'_>,
    row: &JobRow,
    created_time: &str,
    listed: &[Listed],
) -> HubResult<Option<Vec<String>>> {
    if !tx.insert_job(row)? {
        return Ok(None);
    }
    let now_ms = row.created_ms;
    let missing = insert_listed(tx, row, created_time, listed, now_ms)?;
    let notices = hub.jobs_state().notices.clone();
    notices.devices_on_commit(tx, &row.job_id, missing.clone(), DeviceJobStatus::Failed);
    let created = Change::JobCreated {
        job_id: row.job_id.clone(),
        job_type: row.job_type.clone(),
    };
    append_change(tx, None, &created, now_ms)?;
    let hub = hub.clone();
    tx.on_commit(move || hub.jobs_state().wake.notify_one());
    Ok(Some(missing))
}

/// A new job's document: `scheduled` when it starts later, `queued` otherwise.
pub(super) fn new_document(
    id: JobId,
    job_type: JobType,
    query_condition: String,
    now: DateTime<Utc>,
    start_time: Option<DateTime<Utc>>,
) -> JobDocument {
    let start = start_time.unwrap_or(now);
    let status = if start > now {
        JobStatus::Scheduled
    } else {
        JobStatus::Queued
    };
    JobDocument {
        job_id: id.to_string(),
        job_type,
        query_condition,
        created_time: fleethub_core::time::format_timestamp(now),
        start_time: fleethub_core::time::format_timestamp(start),
        max_execution_time_in_seconds: DEFAULT_MAX_EXECUTION_SECS,
        cloud_to_device_method: None,
        update_twin: None,
        rate_control: None,
        status,
        failure_reason: None,
        status_message: None,
        end_time: None,
        started_ms: None,
        snapshot_done: false,
        snapshot_after: None,
        final_statistics: None,
        listed_devices: None,
        pace: None,
        rollout_id: None,
    }
}

/// Validates every id (the first bad one refuses the whole list, naming its position) and
/// drops repeated ids; returns the list in id order and how many entries were dropped.
fn validate_list(targets: Vec<DeviceTarget>) -> HubResult<(Vec<Listed>, u64)> {
    let total = targets.len();
    let mut seen = HashSet::with_capacity(total);
    let mut listed = Vec::with_capacity(total);
    for (i, t) in targets.into_iter().enumerate() {
        let id = DeviceId::parse(&t.device_id)
            .map_err(|e| HubError::new(e.code, format!("device list entry {i}: {}", e.message)))?;
        if seen.insert(t.device_id) {
            listed.push(Listed {
                id,
                not_before_ms: t.not_before.map(|t| t.timestamp_millis()),
            });
        }
    }
    // Id order: the rows go into the table's key order, and the engine works through them so.
    listed.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let duplicates = (total - listed.len()) as u64;
    Ok((listed, duplicates))
}

/// Writes a listed device set's rows: pending, scheduled (a not-before time still ahead) or,
/// for an id that is not registered, failed. Returns those ids.
fn insert_listed(
    tx: &mut fleethub_store::WriteTx<'_>,
    row: &JobRow,
    created_time: &str,
    listed: &[Listed],
    now_ms: i64,
) -> HubResult<Vec<String>> {
    use fleethub_store::JobReads;
    let not_found = device_error(
        ErrorCode::DeviceNotFound.name(),
        "the device is not registered; the operation went on without it",
    );
    let mut missing = Vec::new();
    let mut rows = Vec::with_capacity(listed.len());
    for l in listed {
        let id = l.id.as_str();
        let entry = if !tx.device_exists(id)? {
            missing.push(id.to_string());
            NewJobDevice {
                device_id: id,
                status: DeviceJobStatus::Failed,
                not_before_ms: None,
                error: Some(&not_found),
            }
        } else {
            match l.not_before_ms.filter(|t| *t > now_ms) {
                Some(t) => NewJobDevice {
                    device_id: id,
                    status: DeviceJobStatus::Scheduled,
                    not_before_ms: Some(t),
                    error: None,
                },
                None => NewJobDevice {
                    device_id: id,
                    status: DeviceJobStatus::Pending,
                    not_before_ms: None,
                    error: None,
                },
            }
        };
        rows.push(entry);
    }
    if !rows.is_empty() {
        let job = NewJobDevices {
            job_id: &row.job_id,
            job_type: &row.job_type,
            created_time,
        };
        tx.insert_job_devices(&job, &rows)?;
    }
    Ok(missing)
}
