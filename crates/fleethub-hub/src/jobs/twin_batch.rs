//! A twin job's batch: one store write that, for each of up to N pending devices, merges the
//! job's patch into the twin (with the same core functions as `PATCH /twins/{id}`), writes it,
//! and marks the device's row `completed` — so a crash leaves each device either updated and
//! marked, or neither. Connected devices get the desired patch pushed after the commit.

use super::document::{JobDocument, TwinUpdate};
use super::engine::device_error;
use crate::registry::etag_for;
use crate::Hub;
use fleethub_core::twin::patch::apply_tags_patch;
use fleethub_core::twin::{Section, TwinProperties};
use fleethub_core::{HubError, HubResult};
use fleethub_store::{JobDeviceUpdate, JobReads, JobTwinTarget, WriteTx};
use serde_json::{json, Map, Value};

/// A device whose desired properties changed: who to notify, with which `$version`.
struct Pushed {
    device_id: String,
    desired_version: u64,
}

/// Applies the job's patch to up to `limit` pending devices; returns how many were processed
/// (updated or failed).
pub(super) async fn run(hub: &Hub, doc: &JobDocument, limit: usize) -> HubResult<usize> {
    let Some(update) = doc.update_twin.clone() else {
        return Err(HubError::server(format!(
            "twin job '{}' has no updateTwin",
            doc.job_id
        )));
    };
    let (job_id, now, now_ms) = (doc.job_id.clone(), hub.now_string(), hub.now_ms());
    let patch = update.clone();
    let (processed, pushed) = hub
        .store()
        .write(move |tx| apply_batch(tx, &job_id, &patch, limit, &now, now_ms))
        .await?;
    if let Some(desired) = &update.desired {
        for p in pushed {
            if hub.connections().is_connected(&p.device_id) {
                let body = TwinProperties::patch_to_device_json(desired, p.desired_version);
                hub.push_desired(&p.device_id, p.desired_version, body);
            }
        }
    }
    Ok(processed)
}

fn apply_batch(
    tx: &mut WriteTx<'_>,
    job_id: &str,
    update: &TwinUpdate,
    limit: usize,
    now: &str,
    now_ms: i64,
) -> HubResult<(usize, Vec<Pushed>)> {
    let targets = tx.pending_twin_targets(
        job_id,
        update.tags.is_some(),
        update.desired.is_some(),
        limit,
    )?;
    let mut pushed = Vec::with_capacity(targets.len());
    let mut updated = 0u64;
    for target in &targets {
        let applied = match merge(target, update, now) {
            Ok(applied) => applied,
            Err(e) => {
                let error = device_error(e.code.name(), e.message);
                mark(tx, job_id, &target.device_id, "failed", now, Some(&error))?;
                continue;
            }
        };
        let etag = etag_for(applied.twin_version as u64);
        tx.update_twin_text(
            &target.device_id,
            applied.tags.as_deref(),
            applied.desired.as_deref(),
            applied.twin_version,
            &etag,
        )?;
        mark(tx, job_id, &target.device_id, "completed", now, None)?;
        updated += 1;
        if let Some(desired_version) = applied.desired_version {
            pushed.push(Pushed {
                device_id: target.device_id.clone(),
                desired_version,
            });
        }
    }
    // One event per batch, not per device: a million-device job would otherwise double the
    // writes it makes. The job's device rows say exactly which twins it changed.
    if let (Some(first), Some(last)) = (targets.first(), targets.last()) {
        let event = json!({
            "jobId": job_id,
            "updated": updated,
            "failed": targets.len() as u64 - updated,
            "firstDeviceId": first.device_id,
            "lastDeviceId": last.device_id,
        });
        tx.append_event(None, "job.twins_updated", &event, now_ms)?;
    }
    Ok((targets.len(), pushed))
}

fn mark(
    tx: &mut WriteTx<'_>,
    job_id: &str,
    device_id: &str,
    status: &str,
    now: &str,
    error: Option<&Value>,
) -> HubResult<()> {
    let update = JobDeviceUpdate {
        status,
        start_time: Some(now),
        end_time: Some(now),
        updated_time: now,
        outcome: None,
        error,
    };
    tx.update_job_device(job_id, device_id, &update)?;
    Ok(())
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
            let text = serde_json::to_string(&desired).map_err(|e| unreadable("desired", e))?;
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
