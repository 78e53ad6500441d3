//! How an engine's own operation (`applyConfigurations`, `pushFirmware`) works through its
//! rows: up to a limit of pending rows per step, a batch per store write, each row marked
//! completed in the write that does its device's part, or failed with the error that part
//! returned (its writes and effects rolled back alone, the rest of the batch kept).

use super::document::JobDocument;
use crate::Hub;
use fleethub_core::{HubError, HubResult};
use fleethub_store::{DeviceJobStatus, JobDeviceUpdate, JobReads, WriteTx};
use serde_json::json;

/// What an operation does, as plain functions so the batch's write can call them.
pub(crate) struct OwnRows<B> {
    /// Reads what the whole batch needs, once per write.
    pub begin: fn(&Hub, &mut WriteTx<'_>, &JobDocument) -> HubResult<B>,
    /// One device's part.
    pub row: fn(&Hub, &mut WriteTx<'_>, &B, &str) -> HubResult<()>,
    /// Told that a device's part failed, after its row was marked failed.
    pub failed: fn(&Hub, &mut WriteTx<'_>, &B, &str, &HubError) -> HubResult<()>,
    /// After the batch's rows, in the same write.
    pub end: fn(&Hub, &mut WriteTx<'_>, &B) -> HubResult<()>,
}

impl<B> Clone for OwnRows<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for OwnRows<B> {}

/// Does nothing: for an operation without a hook.
pub(crate) fn no_end<B>(_: &Hub, _: &mut WriteTx<'_>, _: &B) -> HubResult<()> {
    Ok(())
}

/// One step: up to `limit` pending rows, `batch` per write. Returns how many it processed.
pub(crate) async fn run<B: 'static>(
    hub: &Hub,
    doc: &JobDocument,
    limit: usize,
    batch: usize,
    work: OwnRows<B>,
) -> HubResult<usize> {
    let mut processed = 0;
    while processed < limit {
        let n = (limit - processed).min(batch.max(1));
        let job = doc.job_id.clone();
        let ids = hub
            .store()
            .read(move |r| r.job_device_ids(&job, DeviceJobStatus::Pending, n))
            .await?;
        let count = ids.len();
        if count == 0 {
            break;
        }
        let (h, doc) = (hub.clone(), doc.clone());
        hub.store()
            .write(move |tx| batch_in(&h, tx, &doc, &ids, work))
            .await?;
        processed += count;
        if count < n {
            break;
        }
    }
    Ok(processed)
}

fn batch_in<B>(
    hub: &Hub,
    tx: &mut WriteTx<'_>,
    doc: &JobDocument,
    ids: &[String],
    work: OwnRows<B>,
) -> HubResult<()> {
    let job = doc.job_id.as_str();
    let shared = (work.begin)(hub, tx, doc)?;
    let finished = rows_in(
        hub,
        tx,
        job,
        ids,
        |tx, id| (work.row)(hub, tx, &shared, id),
        |tx, id, e| (work.failed)(hub, tx, &shared, id, e),
    )?;
    (work.end)(hub, tx, &shared)?;
    hub.operation_devices_finished_on_commit(tx, job, finished);
    Ok(())
}

/// The rows of one batch, in one write: each still-pending row is marked completed together
/// with its device's part (`row`), or, if that part fails, marked failed with its error (what
/// the part wrote rolled back alone) and `failed` told. Returns the rows it ended.
pub(crate) fn rows_in(
    hub: &Hub,
    tx: &mut WriteTx<'_>,
    job: &str,
    ids: &[String],
    mut row: impl FnMut(&mut WriteTx<'_>, &str) -> HubResult<()>,
    mut failed: impl FnMut(&mut WriteTx<'_>, &str, &HubError) -> HubResult<()>,
) -> HubResult<Vec<(String, DeviceJobStatus)>> {
    let now = hub.now_string();
    let mut finished = Vec::new();
    for id in ids {
        let done = JobDeviceUpdate {
            status: DeviceJobStatus::Completed,
            start_time: Some(&now),
            end_time: Some(&now),
            updated_time: &now,
            outcome: None,
            error: None,
        };
        let outcome = tx.atomically(|tx| -> HubResult<bool> {
            if !tx.update_pending_job_device(job, id, &done)? {
                return Ok(false);
            }
            row(tx, id)?;
            Ok(true)
        });
        let status = match outcome {
            Ok(false) => continue,
            Ok(true) => DeviceJobStatus::Completed,
            Err(e) => {
                let error = json!({ "code": e.code.name(), "description": e.message });
                let update = JobDeviceUpdate {
                    status: DeviceJobStatus::Failed,
                    error: Some(&error),
                    ..done
                };
                if !tx.update_pending_job_device(job, id, &update)? {
                    continue;
                }
                failed(tx, id, &e)?;
                DeviceJobStatus::Failed
            }
        };
        finished.push((id.clone(), status));
    }
    Ok(finished)
}
