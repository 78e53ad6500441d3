//! A method job's calls: claim pending devices (mark them `running` before any call goes out),
//! then call each one in its own task, at most `methodConcurrency` per job at a time, and record
//! the device's answer or the failure in its row.

use super::document::{device_error, JobDocument};
use super::notify::OperationNotice;
use crate::methods::MethodRequest;
use crate::Hub;
use fleethub_core::{HubError, HubResult};
use fleethub_store::DeviceJobStatus;
use fleethub_store::{JobDeviceUpdate, JobReads};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Claims up to `limit` pending devices and starts their calls; returns how many started.
pub(super) async fn start(
    hub: &Hub,
    doc: &JobDocument,
    limit: usize,
    in_flight: Arc<AtomicUsize>,
) -> HubResult<usize> {
    let Some(call) = doc.cloud_to_device_method.clone() else {
        return Err(HubError::server(format!(
            "method job '{}' has no cloudToDeviceMethod",
            doc.job_id
        )));
    };
    let (job_id, now) = (doc.job_id.clone(), hub.now_string());
    let claimed = hub
        .store()
        .write(move |tx| -> HubResult<Vec<String>> {
            let ids = tx.job_device_ids(&job_id, DeviceJobStatus::Pending, limit)?;
            let running = JobDeviceUpdate {
                status: DeviceJobStatus::Running,
                start_time: Some(&now),
                end_time: None,
                updated_time: &now,
                outcome: None,
                error: None,
            };
            for id in &ids {
                tx.update_pending_job_device(&job_id, id, &running)?;
            }
            Ok(ids)
        })
        .await?;
    let state = hub.jobs_state().clone();
    for device_id in &claimed {
        let request = MethodRequest {
            method_name: call.method_name.clone(),
            payload: call.payload.clone(),
            response_timeout_in_seconds: Some(call.response_timeout_in_seconds),
            connect_timeout_in_seconds: Some(call.connect_timeout_in_seconds),
        };
        in_flight.fetch_add(1, Ordering::AcqRel);
        state.calls_in_flight.fetch_add(1, Ordering::AcqRel);
        let (hub, job_id, device_id) = (hub.clone(), doc.job_id.clone(), device_id.clone());
        let (in_flight, state) = (in_flight.clone(), state.clone());
        tokio::spawn(async move {
            call_one(&hub, &job_id, &device_id, request).await;
            in_flight.fetch_sub(1, Ordering::AcqRel);
            state.calls_in_flight.fetch_sub(1, Ordering::AcqRel);
            state.call_finished.notify_waiters();
            state.wake.notify_one();
        });
    }
    Ok(claimed.len())
}

/// Calls one device and records the outcome. A device offline past `connectTimeoutInSeconds`
/// fails with `DeviceNotOnline`, without holding up the others.
async fn call_one(hub: &Hub, job_id: &str, device_id: &str, request: MethodRequest) {
    let result = hub.invoke_method(device_id, request).await;
    let (job, device, now) = (job_id.to_string(), device_id.to_string(), hub.now_string());
    let notices = hub.jobs_state().notices.clone();
    let written = hub
        .store()
        .write(move |tx| -> HubResult<bool> {
            let (status, outcome, error) = match result {
                Ok(r) => (
                    DeviceJobStatus::Completed,
                    Some(json!({ "deviceMethodResponse": { "status": r.status, "payload": r.payload } })),
                    None,
                ),
                Err(e) => (DeviceJobStatus::Failed, None, Some(device_error(e.code.name(), e.message))),
            };
            let update = JobDeviceUpdate {
                status,
                start_time: None,
                end_time: Some(&now),
                updated_time: &now,
                outcome: outcome.as_ref(),
                error: error.as_ref(),
            };
            // Only a row this call claimed: nothing else moves a running row while the hub runs.
            let moved = tx.update_job_device_from(&job, &device, DeviceJobStatus::Running, &update)?;
            if moved {
                let notice = OperationNotice::DeviceFinished {
                    operation: job.clone(),
                    device_id: device.clone(),
                    status,
                };
                notices.on_commit(tx, vec![notice]);
            }
            Ok(moved)
        })
        .await;
    if let Err(e) = written {
        // The row stays `running`; the next start fails it as interrupted.
        tracing::warn!(
            job = job_id,
            device = device_id,
            "recording a method outcome failed: {e}"
        );
    }
}
