//! The service operations on jobs: create, get, cancel, list; and pruning old ones.

use super::document::{Job, JobDocument, JobStatus, JobType, Statistics};
use super::engine::{cancel_pending_in, finish_in};
use super::operation::new_document;
use super::request::{parse_job_request, JobId};
use crate::Hub;
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_store::DeviceJobStatus;
use fleethub_store::{JobDeviceRow, JobFilter, JobReads};
use serde_json::Value;

/// Devices canceled in the cancel request's own write; the engine cancels the rest in chunks.
const CANCEL_CHUNK: usize = 100_000;
/// Device rows of an expired job deleted per write.
const PRUNE_CHUNK: usize = 50_000;
/// `pageSize` when the request leaves it out, and the largest accepted.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// `GET /jobs/v2/query` parameters.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub job_type: Option<String>,
    pub job_status: Option<String>,
    pub page_size: Option<usize>,
    pub continuation_token: Option<String>,
}

/// One page of jobs, and the token for the next page (`None` on the last).
#[derive(Debug, Clone)]
pub struct JobPage {
    pub items: Vec<Job>,
    pub continuation_token: Option<String>,
}

fn job_not_found(id: &str) -> HubError {
    HubError::new(ErrorCode::JobNotFound, format!("job '{id}' does not exist"))
}

impl Hub {
    /// `PUT /jobs/v2/{id}`: validates and stores a job; it starts at its `startTime`.
    pub async fn create_job(&self, id: &str, body: Value) -> HubResult<Job> {
        let spec = parse_job_request(id, &body)?;
        let mut doc = new_document(
            spec.job_id,
            spec.job_type,
            spec.query_condition,
            self.now(),
            spec.start_time,
        );
        doc.max_execution_time_in_seconds = spec.max_execution_secs;
        doc.cloud_to_device_method = spec.method;
        doc.update_twin = spec.twin;
        doc.rate_control = spec.rate_control;
        self.insert_job(&doc, Vec::new()).await?;
        Ok(doc.into_job(Statistics::default()))
    }

    /// `GET /jobs/v2/{id}`.
    pub async fn get_job(&self, id: &str) -> HubResult<Job> {
        let key = JobId::parse(id).map_err(|_| job_not_found(id))?.to_string();
        let (row, stats) = self
            .store()
            .read(move |r| {
                let Some(row) = r.get_job(&key)? else {
                    return Ok(None);
                };
                let counts = r.job_device_counts(&key)?;
                Ok(Some((row, counts)))
            })
            .await?
            .ok_or_else(|| job_not_found(id))?;
        let doc = JobDocument::from_row(&row)?;
        let stats = doc.final_statistics.unwrap_or(Statistics::from(stats));
        Ok(doc.into_job(stats))
    }

    /// `POST /jobs/v2/{id}/cancel`: stops the job; devices it has not reached are canceled. A job
    /// that already ended is returned as it is.
    pub async fn cancel_job(&self, id: &str) -> HubResult<Job> {
        let key = JobId::parse(id).map_err(|_| job_not_found(id))?.to_string();
        // The engine's lock: no step is half-way through this job while it is cancelled.
        let state = self.jobs_state().clone();
        let _steps = state.runtimes.lock().await;
        let (now, now_ms) = (self.now_string(), self.now_ms());
        let notices = state.notices.clone();
        let doc = self
            .store()
            .write(move |tx| -> HubResult<Option<JobDocument>> {
                let Some(row) = tx.get_job(&key)? else {
                    return Ok(None);
                };
                let mut doc = JobDocument::from_row(&row)?;
                if doc.status.is_final() {
                    return Ok(Some(doc));
                }
                doc.status = JobStatus::Cancelled;
                doc.end_time = Some(now.clone());
                doc.status_message = Some("cancelled on request".into());
                let moved = cancel_pending_in(tx, &notices, &key, &now, CANCEL_CHUNK)?;
                let busy = moved as usize >= CANCEL_CHUNK
                    || tx.job_has_devices_in(&key, DeviceJobStatus::Running)?;
                if busy {
                    tx.update_job(&key, JobStatus::Cancelled, None, &doc.to_value())?;
                } else {
                    finish_in(tx, &notices, &mut doc, JobStatus::Cancelled, &now, now_ms)?;
                }
                Ok(Some(doc))
            })
            .await?
            .ok_or_else(|| job_not_found(id))?;
        drop(_steps);
        state.wake.notify_one();
        match doc.final_statistics {
            Some(stats) => Ok(doc.into_job(stats)),
            None => self.get_job(id).await,
        }
    }

    /// `GET /jobs/v2/query`: jobs in creation order, filtered by type and status, a page at a time.
    pub async fn query_jobs(&self, query: JobQuery) -> HubResult<JobPage> {
        let job_type = match query.job_type.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(JobType::parse(t).ok_or_else(|| {
                HubError::invalid(format!(
                    "jobType '{t}' is not a job type; use scheduleUpdateTwin or scheduleDeviceMethod"
                ))
            })?),
        };
        let status = match query.job_status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
                HubError::invalid(format!(
                    "jobStatus '{s}' is not a job status; use queued, scheduled, running, \
                     completed, failed or cancelled"
                ))
            })?),
        };
        let page = match query.page_size {
            None => DEFAULT_PAGE,
            Some(n @ 1..=MAX_PAGE) => n,
            Some(n) => {
                return Err(HubError::invalid(format!(
                    "pageSize is {n}; it must be from 1 to {MAX_PAGE}"
                )))
            }
        };
        let after = match query
            .continuation_token
            .as_deref()
            .filter(|t| !t.is_empty())
        {
            None => None,
            Some(t) => Some(parse_token(t)?),
        };
        let rows = self
            .store()
            .read(move |r| {
                let filter = JobFilter {
                    job_type: job_type.map(JobType::as_str),
                    status,
                    after: after.as_ref().map(|(ms, id)| (*ms, id.as_str())),
                };
                let rows = r.list_jobs(&filter, page + 1)?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    // Finished jobs carry frozen statistics; count only the others' rows.
                    let counts = if row.end_ms.is_none() {
                        Some(r.job_device_counts(&row.job_id)?)
                    } else {
                        None
                    };
                    out.push((row, counts));
                }
                Ok(out)
            })
            .await?;
        let more = rows.len() > page;
        let mut items = Vec::with_capacity(page);
        let mut last = None;
        for (row, counts) in rows.into_iter().take(page) {
            let doc = JobDocument::from_row(&row)?;
            let stats = doc
                .final_statistics
                .or(counts.map(Statistics::from))
                .unwrap_or_default();
            items.push(doc.into_job(stats));
            last = Some((row.created_ms, row.job_id));
        }
        let continuation_token = match (more, last) {
            (true, Some((ms, id))) => Some(format!("{ms}.{id}")),
            _ => None,
        };
        Ok(JobPage {
            items,
            continuation_token,
        })
    }

    /// One device's row in a job, as `devices.jobs` shows it.
    pub async fn job_device(&self, job_id: &str, device_id: &str) -> HubResult<JobDeviceRow> {
        let (job, device) = (job_id.to_string(), device_id.to_string());
        self.store()
            .read_point(move |r| r.get_job_device(&job, &device))
            .await?
            .ok_or_else(|| {
                HubError::new(
                    ErrorCode::JobNotFound,
                    format!("job '{job_id}' has no device '{device_id}'"),
                )
            })
    }

    /// Deletes jobs that finished longer ago than the retention, with their device rows.
    pub async fn prune_jobs(&self) -> HubResult<u64> {
        let retention = self.config().jobs.retention;
        let cutoff = self.now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
        let mut pruned = 0;
        loop {
            let done = self
                .store()
                .write(move |tx| -> HubResult<Option<bool>> {
                    let Some(id) = tx.finished_jobs_before(cutoff, 1)?.pop() else {
                        return Ok(None);
                    };
                    let deleted = tx.delete_job_devices(&id, PRUNE_CHUNK)?;
                    if (deleted as usize) < PRUNE_CHUNK {
                        tx.delete_job(&id)?;
                        return Ok(Some(true));
                    }
                    Ok(Some(false))
                })
                .await?;
            match done {
                None => return Ok(pruned),
                Some(true) => pruned += 1,
                Some(false) => tokio::task::yield_now().await,
            }
        }
    }
}

/// A continuation token: `{created_ms}.{job_id}` of the last job on the previous page.
fn parse_token(token: &str) -> HubResult<(i64, String)> {
    let bad = || {
        HubError::invalid(format!(
            "continuationToken '{token}' is not one this hub issued; start again without it"
        ))
    };
    let (ms, id) = token.split_once('.').ok_or_else(bad)?;
    let ms = ms.parse::<i64>().map_err(|_| bad())?;
    let id = JobId::parse(id).map_err(|_| bad())?;
    Ok((ms, id.to_string()))
}
