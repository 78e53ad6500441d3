//! How a rollout's pushes reach devices: through the device-operation layer.
//!
//! A step's pushes become one `pushFirmware` operation listing their devices, inserted in the
//! same write that journals them ([`hand_on_in`]); the job engine then works through its rows at
//! job speed. Each row, in one write ([`run_operation`]), reads the device's latest journalled
//! push in the rollout and, if it is not marked sent, sets `desired.firmware` (with a download
//! URL of the device's own) and marks it — and any older attempt it replaces — sent. So an
//! attempt's desired firmware is written at most once (the write that does it is the one that
//! marks it), and every journalled push is either written or replaced by a newer attempt of the
//! same device, which the same row writes.

use crate::jobs::own_rows::{self, OwnRows};
use crate::jobs::{DeviceAction, DeviceSet, DeviceTarget, JobDocument, JobId, OperationSpec};
use crate::Hub;
use fleethub_core::firmware::{DesiredFirmware, REPORTED_VERSION_PATH};
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_rollout::{Observation, Push, RolloutSpec};
use fleethub_store::{FirmwareReads, FirmwareRow, RolloutReads, WriteTx};
use serde_json::{Map, Value};

/// The operation id of a set of pushes: derived from the rollout and the (device, attempt)
/// keys, so the same pushes always name the same operation.
pub(crate) fn operation_id(rollout_id: &str, pushes: &[Push]) -> String {
    let mut keys: Vec<(&str, u32)> = pushes
        .iter()
        .map(|p| (p.device.as_str(), p.attempt))
        .collect();
    keys.sort_unstable();
    let mut bytes = rollout_id.as_bytes().to_vec();
    for (device, attempt) in keys {
        bytes.push(0);
        bytes.extend_from_slice(device.as_bytes());
        bytes.extend_from_slice(&attempt.to_be_bytes());
    }
    let hex = fleethub_core::firmware::sha256_hex(&bytes);
    format!("ro-{rollout_id}-{}", &hex[..12])
}

/// Inserts the operation that delivers `pushes` inside `tx` (the write that journals them).
pub(crate) fn hand_on_in(
    hub: &Hub,
    tx: &mut WriteTx<'_>,
    rollout_id: &str,
    pushes: &[Push],
) -> HubResult<()> {
    if pushes.is_empty() {
        return Ok(());
    }
    let id = JobId::parse(&operation_id(rollout_id, pushes))?;
    let targets = pushes
        .iter()
        .map(|p| DeviceTarget::new(&p.device))
        .collect();
    let mut spec = OperationSpec::new(
        id,
        DeviceSet::Listed(targets),
        DeviceAction::PushFirmware {
            rollout: rollout_id.to_string(),
        },
    );
    // The machine paces pushes (batches, windows) and times each device out itself; the
    // operation only has to deliver, and a device that is offline gets its desired state when
    // it connects, so the row is done once written.
    spec.max_execution = std::time::Duration::from_secs(7 * 24 * 3600);
    let prepared = hub.prepare_operation(spec)?;
    // A taken id is the same pushes handed on already (a replay): nothing more to do.
    hub.insert_operation_in(tx, prepared)?;
    Ok(())
}

/// One step of a `pushFirmware` operation: up to `limit` pending rows, `batch` per write, each
/// completed in the write that sets its device's desired firmware.
pub(crate) async fn run_operation(
    hub: &Hub,
    doc: &JobDocument,
    limit: usize,
    batch: usize,
) -> HubResult<usize> {
    let work = OwnRows {
        begin: |_, tx, doc| {
            let Some(rollout) = doc.rollout_id.clone() else {
                return Err(HubError::server(format!(
                    "operation {} pushes firmware but names no rollout",
                    doc.job_id
                )));
            };
            let spec = rollout_spec_in(tx, &rollout)?;
            Ok((rollout, spec))
        },
        row: |hub, tx, (rollout, spec): &(String, RolloutSpec), id| {
            apply_latest_in(hub, tx, rollout, spec, id)
        },
        failed: |hub, tx, (rollout, _), id, e| {
            // The machine hears that this attempt could not be made.
            let latest = tx.rollout_pushes_of(rollout, id)?.last().map(|p| p.attempt);
            if let Some(attempt) = latest {
                let (device, reason) = (id.to_string(), e.message.clone());
                hub.rollouts_observe_on_commit(tx, move || Observation::PushFailed {
                    device,
                    attempt,
                    reason,
                });
            }
            Ok(())
        },
        end: own_rows::no_end,
    };
    own_rows::run(hub, doc, limit, batch, work).await
}

fn rollout_spec_in(tx: &WriteTx<'_>, rollout: &str) -> HubResult<RolloutSpec> {
    let row = tx
        .get_rollout(rollout)?
        .ok_or_else(|| HubError::server(format!("rollout {rollout} is not stored")))?;
    serde_json::from_str(&row.spec)
        .map_err(|e| HubError::server(format!("stored spec of rollout {rollout}: {e}")))
}

/// Writes the device's latest push, unless already written; marks it and the attempts before
/// it sent.
fn apply_latest_in(
    hub: &Hub,
    tx: &mut WriteTx<'_>,
    rollout: &str,
    spec: &RolloutSpec,
    device: &str,
) -> HubResult<()> {
    let (now, now_ms) = (hub.now_string(), hub.now_ms());
    let pushes = tx.rollout_pushes_of(rollout, device)?;
    let Some(latest) = pushes.last() else {
        return Err(HubError::server(format!(
            "rollout {rollout} journalled no push for device {device}"
        )));
    };
    if latest.sent_ms.is_some() {
        return Ok(());
    }
    let artifact = artifact_in(tx, spec, &latest.version)?;
    let ttl = hub.firmware_max_url_ttl()?;
    let (desired, _) = hub.desired_firmware_in(&artifact, device, ttl)?;
    let mut patch = Map::new();
    patch.insert("firmware".into(), firmware_value(&desired)?);
    crate::twin::patch_desired_in(hub, tx, device, patch, &now)?;
    let unsent: Vec<(String, u32)> = pushes
        .iter()
        .filter(|p| p.sent_ms.is_none())
        .map(|p| (device.to_string(), p.attempt))
        .collect();
    tx.mark_rollout_pushes_sent(rollout, &unsent, now_ms)?;
    Ok(())
}

fn firmware_value(desired: &DesiredFirmware) -> HubResult<Value> {
    serde_json::to_value(desired).map_err(|e| HubError::server(e.to_string()))
}

/// The artifact a push of `version` installs: the rollout's own, or for a rollback the one
/// stored under that version.
fn artifact_in(tx: &WriteTx<'_>, spec: &RolloutSpec, version: &str) -> HubResult<FirmwareRow> {
    let sha = if version == spec.artifact.version {
        Some(spec.artifact.sha256.to_ascii_lowercase())
    } else {
        None
    };
    if let Some(row) = sha.map(|s| tx.get_firmware(&s)).transpose()?.flatten() {
        return Ok(row);
    }
    let mut rows = tx.firmware_by_version(version)?;
    match rows.len() {
        1 => Ok(rows.remove(0)),
        0 => Err(HubError::new(
            ErrorCode::FirmwareNotFound,
            format!(
                "no firmware artifact has version {version} (the device's {REPORTED_VERSION_PATH} \
                 before the rollout); upload it to roll back to it"
            ),
        )),
        n => Err(HubError::new(
            ErrorCode::FirmwareConflict,
            format!("version {version} names {n} artifacts; a rollback needs exactly one"),
        )),
    }
}
