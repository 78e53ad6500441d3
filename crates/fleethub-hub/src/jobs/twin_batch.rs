//! A twin job's batches. Each device's patch is merged (with the same core functions as
//! `PATCH /twins/{id}`) on a read connection; one store write then, for each device, marks its row
//! `completed` (only if still pending) and writes the twin (only if unchanged since it was read,
//! else merged again on the writer, a bounded number of times) — so a crash leaves each device
//! either updated and marked, or neither. Connected devices get the desired patch pushed after
//! the commit.

use super::document::{device_error, JobDocument, TwinUpdate};
use super::notify::OperationNotice;
use crate::concurrency::{gave_up, ATTEMPTS};
use crate::device::etag_for;
use crate::events::append_change;
use crate::Hub;
use fleethub_core::events::Change;
use fleethub_core::twin::patch::apply_tags_patch;
use fleethub_core::twin::{Section, TwinProperties};
use fleethub_core::{HubError, HubResult};
use fleethub_store::{DeviceJobStatus, StoreError};
use fleethub_store::{JobDeviceUpdate, JobReads, JobTwinTarget, WriteTx};
use serde_json::{Map, Value};
use std::sync::atomic::Ordering;

/// A device whose desired properties changed: who to notify, with which `$version`.
struct Pushed {
    device_id: String,
    desired_version: u64,
}

/// One device of a batch, merged on a read connection: the new sections, or why it fails.
pub(super) struct Prepared {
    target: JobTwinTarget,
    merged: HubResult<Merged>,
}

/// Applies the job's patch to up to `limit` pending devices, `batch` per store write; returns
/// how many were processed (updated or failed).
///
/// Each batch is read and merged on a read connection, then written by the writer, which keeps
/// only the row writes for itself; while one batch is being written the next is read and merged,
/// so the two cores share the work. The write checks each twin's version: a twin changed since
/// it was read (a concurrent `PATCH`) is merged again on the writer, never overwritten.
pub(super) async fn run(
    hub: &Hub,
    doc: &JobDocument,
    limit: usize,
    batch: usize,
) -> HubResult<usize> {
    let Some(update) = doc.update_twin.clone() else {
        return Err(HubError::server(format!(
            "twin job '{}' has no updateTwin",
            doc.job_id
        )));
    };
    let batch = batch.max(1);
    let mut left = limit;
    let mut processed = 0;
    let mut next = prepare(hub, doc, &update, None, batch.min(left)).await?;
    while !next.is_empty() {
        let current = next;
        left = left.saturating_sub(current.len());
        let cursor = current.last().map(|p| p.target.device_id.clone());
        let following = async {
            if left == 0 {
                return Ok(Vec::new());
            }
            prepare(hub, doc, &update, cursor, batch.min(left)).await
        };
        let (written, following) = tokio::join!(commit(hub, doc, &update, current), following);
        processed += written?;
        next = following?;
    }
    Ok(processed)
}

/// Reads up to `limit` pending devices after `after` and merges the patch into each.
pub(super) async fn prepare(
    hub: &Hub,
    doc: &JobDocument,
    update: &TwinUpdate,
    after: Option<String>,
    limit: usize,
) -> HubResult<Vec<Prepared>> {
    let (job_id, patch, now) = (doc.job_id.clone(), update.clone(), hub.now_string());
    hub.store()
        .read(move |r| {
            let targets = r.pending_twin_targets(
                &job_id,
                patch.tags.is_some(),
                patch.desired.is_some(),
                after.as_deref(),
                limit,
            )?;
            Ok(targets
                .into_iter()
                .map(|target| {
                    let merged = merge(&target, &patch, &now);
                    Prepared { target, merged }
                })
                .collect())
        })
        .await
        .map_err(HubError::from)
}

/// Writes a prepared batch; connected devices get the desired patch once it commits.
pub(super) async fn commit(
    hub: &Hub,
    doc: &JobDocument,
    update: &TwinUpdate,
    prepared: Vec<Prepared>,
) -> HubResult<usize> {
    let (job_id, now, now_ms) = (doc.job_id.clone(), hub.now_string(), hub.now_ms());
    let (patch, hub) = (update.clone(), hub.clone());
    let notices = hub.jobs_state().notices.clone();
    hub.clone()
        .store()
        .write(move |tx| {
            let mut finished = notices.any().then(Vec::new);
            let (processed, pushed, conflicts) =
                apply_batch(tx, &job_id, &patch, prepared, &now, now_ms, &mut finished)?;
            if conflicts > 0 {
                let counter = &hub.metrics().write_conflicts;
                counter.fetch_add(conflicts, Ordering::Relaxed);
            }
            if let Some(finished) = finished {
                notices.on_commit(tx, finished);
            }
            hub.configurations_wake_on_commit(tx);
            if let Some(desired) = patch.desired.filter(|_| !pushed.is_empty()) {
                // One effect for the batch: pushed in commit order with every other change.
                tx.on_commit(move || {
                    for p in pushed {
                        if hub.connections().is_connected(&p.device_id) {
                            let body =
                                TwinProperties::patch_to_device_json(&desired, p.desired_version);
                            hub.push_desired(&p.device_id, p.desired_version, body);
                        }
                    }
                });
            }
            Ok(processed)
        })
        .await
}

/// Writes a batch; `finished`, when someone listens for completion notices, gets one per device
/// row this batch ended. Returns how many devices it processed, the desired pushes, and how many
/// twins it found changed since they were merged (each merged again).
fn apply_batch(
    tx: &mut WriteTx<'_>,
    job_id: &str,
    update: &TwinUpdate,
    prepared: Vec<Prepared>,
    now: &str,
    now_ms: i64,
    finished: &mut Option<Vec<OperationNotice>>,
) -> HubResult<(usize, Vec<Pushed>, u64)> {
    let mut pushed = Vec::with_capacity(prepared.len());
    let mut conflicts = 0;
    let mut ended = |device_id: &str, status| {
        if let Some(list) = finished.as_mut() {
            list.push(OperationNotice::DeviceFinished {
                operation: job_id.to_string(),
                device_id: device_id.to_string(),
                status,
            });
        }
    };
    let (mut updated, mut failed) = (0u64, 0u64);
    let (mut first, mut last) = (None, None);
    for Prepared { target, merged } in prepared {
        let device_id = target.device_id.as_str();
        match merged {
            Err(e) => {
                let error = device_error(e.code.name(), e.message);
                if mark(
                    tx,
                    job_id,
                    device_id,
                    DeviceJobStatus::Failed,
                    now,
                    Some(&error),
                )? {
                    failed += 1;
                    ended(device_id, DeviceJobStatus::Failed);
                }
            }
            // Only a row still pending is processed: the job may have been cancelled or expired
            // since the batch was read.
            Ok(applied) if mark(tx, job_id, device_id, DeviceJobStatus::Completed, now, None)? => {
                match write_merged(tx, device_id, update, applied, now, &mut conflicts)? {
                    Ok(applied) => {
                        updated += 1;
                        ended(device_id, DeviceJobStatus::Completed);
                        if let Some(desired_version) = applied.desired_version {
                            pushed.push(Pushed {
                                device_id: device_id.to_string(),
                                desired_version,
                            });
                        }
                    }
                    Err(e) => {
                        let error = device_error(e.code.name(), e.message);
                        let update = failed_now(now, &error);
                        tx.update_job_device(job_id, device_id, &update)?;
                        failed += 1;
                        ended(device_id, DeviceJobStatus::Failed);
                    }
                }
            }
            Ok(_) => {}
        }
        first.get_or_insert_with(|| target.device_id.clone());
        last = Some(target.device_id);
    }
    // One event per batch, not per device: a million-device job would otherwise double the
    // writes it makes. The job's device rows say exactly which twins it changed.
    if let (Some(first), Some(last)) = (first, last) {
        let batch = Change::JobTwinsUpdated {
            job_id: job_id.to_string(),
            updated,
            failed,
            first_device_id: first,
            last_device_id: last,
        };
        append_change(tx, None, &batch, now_ms)?;
    }
    Ok(((updated + failed) as usize, pushed, conflicts))
}

/// Writes merged sections if the twin is still at the version they were merged from; if it
/// changed (or went) after the batch was read, merges again from what the writer reads now, at
/// most [`ATTEMPTS`] tries in all, counting each lost try in `conflicts`. The outer error fails
/// the batch (the store failed); the inner one fails this device.
fn write_merged(
    tx: &mut WriteTx<'_>,
    device_id: &str,
    update: &TwinUpdate,
    mut applied: Merged,
    now: &str,
    conflicts: &mut u64,
) -> Result<HubResult<Merged>, StoreError> {
    let mut attempt = 1;
    loop {
        let etag = etag_for(applied.twin_version as u64);
        let written = tx.update_twin_text(
            device_id,
            applied.tags.as_deref(),
            applied.desired.as_deref(),
            applied.twin_version,
            &etag,
        );
        let lost = match written {
            Ok(()) => return Ok(Ok(applied)),
            Err(e) if !e.is_conflict() => return Err(e),
            Err(lost) => lost,
        };
        *conflicts += 1;
        if attempt == ATTEMPTS {
            return Ok(Err(gave_up(&lost)));
        }
        attempt += 1;
        let fresh = tx.twin_target(device_id, update.tags.is_some(), update.desired.is_some())?;
        applied = match merge(&fresh, update, now) {
            Ok(merged) => merged,
            Err(e) => return Ok(Err(e)),
        };
    }
}

/// The row update that fails a device now with `error`.
fn failed_now<'a>(now: &'a str, error: &'a Value) -> JobDeviceUpdate<'a> {
    JobDeviceUpdate {
        status: DeviceJobStatus::Failed,
        start_time: Some(now),
        end_time: Some(now),
        updated_time: now,
        outcome: None,
        error: Some(error),
    }
}

/// Moves a still-pending device row to `status`; `false` if it was no longer pending.
fn mark(
    tx: &mut WriteTx<'_>,
    job_id: &str,
    device_id: &str,
    status: DeviceJobStatus,
    now: &str,
    error: Option<&Value>,
) -> HubResult<bool> {
    let update = JobDeviceUpdate {
        status,
        start_time: Some(now),
        end_time: Some(now),
        updated_time: now,
        outcome: None,
        error,
    };
    Ok(tx.update_pending_job_device(job_id, device_id, &update)?)
}

/// A twin after the job's patch: the changed sections as JSON text and the new versions.
struct Merged {
    tags: Option<String>,
    desired: Option<String>,
    desired_version: Option<u64>,
    twin_version: i64,
}

fn merge(target: &JobTwinTarget, update: &TwinUpdate, now: &str) -> HubResult<Merged> {
    let twin_version = target
        .twin_version
        .ok_or_else(|| HubError::device_not_found(&target.device_id))?;
    let unreadable = |what: &str, e: serde_json::Error| {
        HubError::server(format!(
            "stored {what} of '{}' is unreadable: {e}",
            target.device_id
        ))
    };
    let tags = match (&update.tags, &target.tags) {
        (Some(patch), Some(text)) => {
            let mut tags: Map<String, Value> =
                serde_json::from_str(text).map_err(|e| unreadable("tags", e))?;
            apply_tags_patch(&mut tags, patch)?;
            Some(serde_json::to_string(&tags).map_err(|e| unreadable("tags", e))?)
        }
        _ => None,
    };
    let (desired, desired_version) = match (&update.desired, &target.desired) {
        (Some(patch), Some(text)) => {
            let mut desired: TwinProperties =
                serde_json::from_str(text).map_err(|e| unreadable("desired", e))?;
            desired.apply_patch(Section::Desired, patch, now)?;
            let text = desired
                .to_stored_text()
                .map_err(|e| unreadable("desired", e))?;
            (Some(text), Some(desired.version))
        }
        _ => (None, None),
    };
    Ok(Merged {
        tags,
        desired,
        desired_version,
        twin_version: twin_version + 1,
    })
}
