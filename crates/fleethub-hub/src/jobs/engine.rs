//! The job engine: each step looks at every unfinished job and moves it on by one bounded piece of
//! work (start it, add a chunk of devices to its snapshot, process a batch, expire, finish).
//!
//! Steps are plain async calls with no timers inside, so a test drives the engine with a manual
//! clock (`step`, `run_until_idle`); production runs [`spawn`], a loop that steps while there is
//! work and otherwise sleeps until the next wake time or a wake-up signal.

use super::condition::DeviceSelection;
use super::document::JobType;
use super::document::{device_error, JobDocument, JobStatus, Statistics};
use super::notify::{OperationNotice, Subscribers};
use super::rate::RateLimiter;
use super::state::{JobRuntime, JobsState};
use super::{method_calls, twin_batch};
use crate::events::append_change;
use crate::hub::HubInner;
use crate::Hub;
use chrono::{DateTime, Utc};
use fleethub_core::events::Change;
use fleethub_core::HubResult;
use fleethub_store::DeviceJobStatus;
use fleethub_store::{JobDeviceUpdate, JobReads, JobSnapshot, StoreError, WriteTx};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Statuses of jobs that may still have work.
const UNFINISHED: &[JobStatus] = &[
    JobStatus::Running,
    JobStatus::Cancelled,
    JobStatus::Scheduled,
    JobStatus::Queued,
];
/// Device rows moved (canceled, expired, interrupted) per write.
const MOVE_CHUNK: usize = 50_000;
/// The longest the background loop sleeps without a reason to wake.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// Whether it changed anything (another step may find more to do at once).
    pub progressed: bool,
    /// The earliest time (by the hub's clock) at which waiting work becomes due: a start time,
    /// an execution deadline, the next rate-limit token.
    pub next_wake: Option<DateTime<Utc>>,
}

impl StepOutcome {
    fn wake_at(&mut self, t: DateTime<Utc>) {
        self.next_wake = Some(self.next_wake.map_or(t, |w| w.min(t)));
    }
}

/// Drives jobs; cheap to create from a [`Hub`].
#[derive(Clone)]
pub struct JobEngine {
    hub: Hub,
}

impl Hub {
    /// The job engine of this hub.
    pub fn job_engine(&self) -> JobEngine {
        JobEngine { hub: self.clone() }
    }
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl JobEngine {
    fn notices(&self) -> Arc<Subscribers> {
        self.hub.jobs_state().notices.clone()
    }

    /// Moves every unfinished job on by one bounded piece of work.
    pub async fn step(&self) -> HubResult<StepOutcome> {
        let state = self.hub.jobs_state().clone();
        let mut runtimes = state.runtimes.lock().await;
        let jobs = self
            .hub
            .store()
            .read(|r| r.unfinished_jobs(UNFINISHED))
            .await?;
        runtimes.retain(|id, _| jobs.iter().any(|j| &j.job_id == id));
        let now = self.hub.inner.clock.now();
        let max_running = self.hub.config().jobs.max_concurrent;
        let mut running = jobs
            .iter()
            .filter(|j| j.status == JobStatus::Running)
            .count();
        let mut out = StepOutcome::default();
        for row in jobs {
            let doc = match JobDocument::from_row(&row) {
                Ok(doc) => doc,
                Err(e) => {
                    tracing::error!(job = %row.job_id, "skipping job: {e}");
                    continue;
                }
            };
            match doc.status {
                JobStatus::Running => self.advance(&mut runtimes, doc, now, &mut out).await?,
                JobStatus::Cancelled => self.sweep_cancelled(doc, &mut out).await?,
                JobStatus::Scheduled | JobStatus::Queued => {
                    if row.start_ms > now.timestamp_millis() {
                        out.wake_at(ms_to_time(row.start_ms));
                        continue;
                    }
                    if running >= max_running {
                        continue;
                    }
                    running += 1;
                    let doc = self.start(doc, now).await?;
                    out.progressed = true;
                    self.advance(&mut runtimes, doc, now, &mut out).await?;
                }
                JobStatus::Completed | JobStatus::Failed => {}
            }
        }
        Ok(out)
    }

    /// Steps until nothing more can happen at the clock's current time and no method call is in
    /// flight; returns the last step's outcome (its `next_wake` says when to advance the clock to).
    pub async fn run_until_idle(&self) -> HubResult<StepOutcome> {
        let state = self.hub.jobs_state().clone();
        loop {
            let outcome = self.step().await?;
            if outcome.progressed {
                continue;
            }
            let finished = state.call_finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if state.calls_in_flight.load(Ordering::Acquire) == 0 {
                return Ok(outcome);
            }
            finished.await;
        }
    }

    /// Marks a due job running.
    async fn start(&self, mut doc: JobDocument, now: DateTime<Utc>) -> HubResult<JobDocument> {
        doc.status = JobStatus::Running;
        doc.started_ms = Some(now.timestamp_millis());
        let body = doc.to_value();
        let id = doc.job_id.clone();
        self.hub
            .store()
            .write(move |tx| tx.update_job(&id, JobStatus::Running, None, &body))
            .await?;
        tracing::info!(job = %doc.job_id, "job started");
        Ok(doc)
    }

    /// One piece of work on a running job: expire it, extend its snapshot and process a batch,
    /// or finish it.
    async fn advance(
        &self,
        runtimes: &mut HashMap<String, JobRuntime>,
        mut doc: JobDocument,
        now: DateTime<Utc>,
        out: &mut StepOutcome,
    ) -> HubResult<()> {
        let now_ms = now.timestamp_millis();
        let started = doc.started_ms.unwrap_or(now_ms);
        let max_ms = i64::try_from(doc.max_execution_time_in_seconds)
            .unwrap_or(i64::MAX / 2000)
            .saturating_mul(1000);
        let deadline = started.saturating_add(max_ms);
        if now_ms >= deadline {
            if self.expire(&mut doc).await? {
                out.progressed = true;
                return Ok(());
            }
        } else {
            out.wake_at(ms_to_time(deadline));
            if !doc.snapshot_done {
                self.extend_snapshot(&mut doc).await?;
                out.progressed = true;
                if doc.status != JobStatus::Running {
                    return Ok(());
                }
            }
            if !runtimes.contains_key(&doc.job_id) {
                let runtime = self.runtime_for(&doc, now).await?;
                runtimes.insert(doc.job_id.clone(), runtime);
            }
            let Some(runtime) = runtimes.get_mut(&doc.job_id) else {
                return Ok(());
            };
            if let Some(due) = runtime.next_not_before {
                if due <= now_ms {
                    runtime.next_not_before = self.release_due(&doc.job_id).await?;
                    out.progressed = true;
                }
                if let Some(next) = runtime.next_not_before {
                    out.wake_at(ms_to_time(next));
                }
            }
            let (wanted, done) = self.process(runtime, &doc, now).await?;
            if done > 0 {
                out.progressed = true;
            }
            if done == wanted && wanted > 0 {
                return Ok(());
            }
            if wanted == 0 {
                if let Some(limiter) = &runtime.limiter {
                    if limiter.blocked(now) {
                        out.wake_at(limiter.next_token_at(now));
                    }
                }
            }
        }
        if doc.snapshot_done && self.finish_if_done(doc).await? {
            out.progressed = true;
        }
        Ok(())
    }

    async fn runtime_for(&self, doc: &JobDocument, now: DateTime<Utc>) -> HubResult<JobRuntime> {
        let pace = doc.pace();
        // Only a listed device set has rows with a not-before time.
        let (id, listed) = (doc.job_id.clone(), doc.listed_devices.is_some());
        let (counts, next_not_before) = if pace.is_none() && !listed {
            (None, None)
        } else {
            self.hub
                .store()
                .read(move |r| {
                    let counts = r.job_device_counts(&id)?;
                    let next = if listed {
                        r.next_not_before(&id)?
                    } else {
                        None
                    };
                    Ok((Some(counts), next))
                })
                .await?
        };
        let limiter = pace.zip(counts).map(|(pace, counts)| {
            // A job resumed after a restart keeps its place on the ramp.
            let started = counts.total() - counts.pending - counts.scheduled;
            RateLimiter::new(pace, now, started)
        });
        Ok(JobRuntime {
            limiter,
            in_flight: Arc::new(AtomicUsize::new(0)),
            next_not_before,
        })
    }

    /// Moves a job's rows whose not-before time has come to `pending`; returns the earliest
    /// not-before time still ahead.
    async fn release_due(&self, job_id: &str) -> HubResult<Option<i64>> {
        let (id, now, now_ms) = (job_id.to_string(), self.hub.now_string(), self.hub.now_ms());
        let (_, next) = self
            .hub
            .store()
            .write(move |tx| tx.release_due_job_devices(&id, now_ms, &now, MOVE_CHUNK))
            .await?;
        Ok(next)
    }

    /// Processes as many devices as the rate and concurrency allow now; returns how many it
    /// asked for and how many it got.
    async fn process(
        &self,
        runtime: &mut JobRuntime,
        doc: &JobDocument,
        now: DateTime<Utc>,
    ) -> HubResult<(usize, usize)> {
        let cfg = &self.hub.config().jobs;
        let mut wanted = match doc.job_type {
            JobType::UpdateTwin | JobType::ApplyConfigurations | JobType::PushFirmware => {
                cfg.twin_batch.max(1) * cfg.twin_batches_per_step.max(1)
            }
            JobType::DeviceMethod => cfg
                .method_concurrency
                .max(1)
                .saturating_sub(runtime.in_flight.load(Ordering::Acquire)),
        };
        if let Some(limiter) = runtime.limiter.as_mut() {
            let available = usize::try_from(limiter.available(now)).unwrap_or(usize::MAX);
            wanted = wanted.min(available);
        }
        if wanted == 0 {
            return Ok((0, 0));
        }
        let done = match doc.job_type {
            JobType::UpdateTwin => twin_batch::run(&self.hub, doc, wanted, cfg.twin_batch).await?,
            JobType::ApplyConfigurations => {
                crate::configurations::apply::run_operation(&self.hub, doc, wanted, cfg.twin_batch)
                    .await?
            }
            JobType::PushFirmware => {
                crate::rollouts::push::run_operation(&self.hub, doc, wanted, cfg.twin_batch).await?
            }
            JobType::DeviceMethod => {
                method_calls::start(&self.hub, doc, wanted, runtime.in_flight.clone()).await?
            }
        };
        if let Some(limiter) = runtime.limiter.as_mut() {
            limiter.take(done as u64);
        }
        Ok((wanted, done))
    }

    /// Adds the next chunk of devices to the job's snapshot; fails the job if its condition
    /// cannot be evaluated.
    async fn extend_snapshot(&self, doc: &mut JobDocument) -> HubResult<()> {
        let selection =
            match DeviceSelection::parse(&doc.query_condition, self.hub.store().dialect()) {
                Ok(s) => s,
                Err(e) => {
                    let reason = format!("queryCondition could not be compiled: {}", e.message);
                    return self.fail(doc, reason).await;
                }
            };
        let chunk = self.hub.config().jobs.snapshot_chunk.max(1);
        let now = self.hub.now_string();
        let mut next = doc.clone();
        let updated = self
            .hub
            .store()
            .write(move |tx| -> HubResult<Result<JobDocument, String>> {
                let snapshot = JobSnapshot {
                    job_id: &next.job_id,
                    job_type: next.job_type.as_str(),
                    created_time: &now,
                    condition: selection.condition(),
                };
                let taken =
                    tx.snapshot_job_devices(&snapshot, next.snapshot_after.as_deref(), chunk);
                let (added, last) = match taken {
                    Ok(taken) => taken,
                    // What the store cannot run is the condition's fault: the job fails, and
                    // saying why, rather than retrying forever.
                    Err(e @ (StoreError::Rejected(_) | StoreError::TooComplex { .. })) => {
                        return Ok(Err(format!("queryCondition could not be evaluated: {e}")))
                    }
                    Err(e) => return Err(e.into()),
                };
                if last.is_some() {
                    next.snapshot_after = last;
                }
                next.snapshot_done = added < chunk as u64;
                tx.update_job(&next.job_id, JobStatus::Running, None, &next.to_value())?;
                Ok(Ok(next))
            })
            .await?;
        match updated {
            Ok(next) => {
                *doc = next;
                Ok(())
            }
            Err(reason) => self.fail(doc, reason).await,
        }
    }

    /// Fails a job that cannot run; its unprocessed devices fail with it.
    async fn fail(&self, doc: &mut JobDocument, reason: String) -> HubResult<()> {
        tracing::warn!(job = %doc.job_id, "job failed: {reason}");
        doc.failure_reason = Some(reason.clone());
        doc.snapshot_done = true;
        let (now, now_ms) = (self.hub.now_string(), self.hub.now_ms());
        let notices = self.notices();
        let mut next = doc.clone();
        let next = self
            .hub
            .store()
            .write(move |tx| -> HubResult<JobDocument> {
                let error = device_error("JobFailed", reason);
                let update = failed_update(&now, &error);
                move_waiting(tx, &notices, &next.job_id, &update, usize::MAX)?;
                finish_in(tx, &notices, &mut next, JobStatus::Failed, &now, now_ms)?;
                Ok(next)
            })
            .await?;
        *doc = next;
        Ok(())
    }

    /// Past the job's execution deadline: stops the snapshot and fails a chunk of the devices not
    /// reached. Returns whether it changed anything.
    async fn expire(&self, doc: &mut JobDocument) -> HubResult<bool> {
        let (now, secs) = (self.hub.now_string(), doc.max_execution_time_in_seconds);
        let was_done = doc.snapshot_done;
        doc.snapshot_done = true;
        let next = doc.clone();
        let notices = self.notices();
        let moved = self
            .hub
            .store()
            .write(move |tx| -> HubResult<u64> {
                let error = device_error(
                    "JobTimedOut",
                    format!(
                        "the job's maxExecutionTimeInSeconds ({secs}) elapsed before it reached this device"
                    ),
                );
                let update = failed_update(&now, &error);
                let moved = move_waiting(tx, &notices, &next.job_id, &update, MOVE_CHUNK)?;
                if !was_done {
                    tx.update_job(&next.job_id, JobStatus::Running, None, &next.to_value())?;
                }
                Ok(moved)
            })
            .await?;
        Ok(moved > 0 || !was_done)
    }

    /// Finishes a job whose devices are all processed; returns whether it did.
    async fn finish_if_done(&self, doc: JobDocument) -> HubResult<bool> {
        let id = doc.job_id.clone();
        let busy = self
            .hub
            .store()
            .read_point(move |r| unfinished_rows(r, &id))
            .await?;
        if busy {
            return Ok(false);
        }
        let (now, now_ms) = (self.hub.now_string(), self.hub.now_ms());
        let notices = self.notices();
        let mut doc = doc;
        let finished = self
            .hub
            .store()
            .write(move |tx| -> HubResult<bool> {
                let id = doc.job_id.clone();
                if unfinished_rows(tx, &id)? {
                    return Ok(false);
                }
                finish_in(tx, &notices, &mut doc, JobStatus::Completed, &now, now_ms)?;
                tracing::info!(job = %id, "job completed");
                Ok(true)
            })
            .await?;
        Ok(finished)
    }

    /// A cancelled job: cancels a chunk of its pending devices, and finishes it once none is
    /// pending or running.
    async fn sweep_cancelled(&self, doc: JobDocument, out: &mut StepOutcome) -> HubResult<()> {
        let (now, now_ms) = (self.hub.now_string(), self.hub.now_ms());
        let notices = self.notices();
        let mut doc = doc;
        let progressed = self
            .hub
            .store()
            .write(move |tx| -> HubResult<bool> {
                let moved = cancel_pending_in(tx, &notices, &doc.job_id, &now, MOVE_CHUNK)?;
                if moved as usize >= MOVE_CHUNK
                    || tx.job_has_devices_in(&doc.job_id, DeviceJobStatus::Running)?
                {
                    return Ok(moved > 0);
                }
                finish_in(tx, &notices, &mut doc, JobStatus::Cancelled, &now, now_ms)?;
                Ok(true)
            })
            .await?;
        out.progressed |= progressed;
        Ok(())
    }

    /// Fails the direct-method calls a previous run left `running` (it may have crashed mid-call):
    /// failing them is safer than calling a device twice.
    pub(crate) async fn recover(&self) -> HubResult<u64> {
        let jobs = self
            .hub
            .store()
            .read(|r| r.unfinished_jobs(UNFINISHED))
            .await?;
        let mut failed = 0;
        for row in jobs
            .iter()
            .filter(|j| j.job_type == JobType::DeviceMethod.as_str())
        {
            loop {
                let (id, now) = (row.job_id.clone(), self.hub.now_string());
                let notices = self.notices();
                let moved = self
                    .hub
                    .store()
                    .write(move |tx| -> HubResult<u64> {
                        let error = device_error(
                            "JobInterrupted",
                            "the hub stopped while this device's method call was in flight; \
                             it was not called again, so it cannot run twice",
                        );
                        let update = failed_update(&now, &error);
                        // Only this node's calls: another node sharing the store is still
                        // waiting for its own.
                        let moved = tx.move_own_running_job_devices(&id, &update, MOVE_CHUNK)?;
                        let n = moved.len() as u64;
                        notices.devices_on_commit(tx, &id, moved, DeviceJobStatus::Failed);
                        Ok(n)
                    })
                    .await?;
                failed += moved;
                if (moved as usize) < MOVE_CHUNK {
                    break;
                }
            }
        }
        if failed > 0 {
            tracing::warn!(
                devices = failed,
                "failed method calls interrupted by a restart"
            );
        }
        Ok(failed)
    }
}

/// Whether any of a job's rows is still to be done: pending, waiting for its time, or running.
fn unfinished_rows(r: &impl JobReads, job_id: &str) -> Result<bool, StoreError> {
    Ok(r.job_has_devices_in(job_id, DeviceJobStatus::Pending)?
        || r.job_has_devices_in(job_id, DeviceJobStatus::Running)?
        || r.job_has_devices_in(job_id, DeviceJobStatus::Scheduled)?)
}

/// Moves up to `limit` rows not yet started (pending first, then those waiting for their
/// not-before time) to `update.status`, announcing each; returns how many moved.
fn move_waiting(
    tx: &mut WriteTx<'_>,
    notices: &Arc<Subscribers>,
    job_id: &str,
    update: &JobDeviceUpdate<'_>,
    limit: usize,
) -> HubResult<u64> {
    let mut moved = 0;
    for from in [DeviceJobStatus::Pending, DeviceJobStatus::Scheduled] {
        let left = limit.saturating_sub(moved as usize);
        if left == 0 {
            break;
        }
        let ids = tx.move_job_devices(job_id, from, update, left)?;
        moved += ids.len() as u64;
        notices.devices_on_commit(tx, job_id, ids, update.status);
    }
    Ok(moved)
}

/// Cancels up to `limit` devices of a job not yet started; returns how many.
pub(super) fn cancel_pending_in(
    tx: &mut WriteTx<'_>,
    notices: &Arc<Subscribers>,
    job_id: &str,
    now: &str,
    limit: usize,
) -> HubResult<u64> {
    let error = device_error(
        "JobCanceled",
        "the job was cancelled before it reached this device",
    );
    let update = JobDeviceUpdate {
        status: DeviceJobStatus::Canceled,
        ..failed_update(now, &error)
    };
    move_waiting(tx, notices, job_id, &update, limit)
}

/// Writes a job's final state: status, end time and the statistics its rows add up to; its
/// subscribers hear of it once the write commits.
pub(super) fn finish_in(
    tx: &mut WriteTx<'_>,
    notices: &Arc<Subscribers>,
    doc: &mut JobDocument,
    status: JobStatus,
    now: &str,
    now_ms: i64,
) -> HubResult<()> {
    let counts = tx.job_device_counts(&doc.job_id)?;
    doc.status = status;
    doc.snapshot_done = true;
    doc.end_time = Some(now.to_string());
    doc.final_statistics = Some(Statistics::from(counts));
    tx.update_job(&doc.job_id, status, Some(now_ms), &doc.to_value())?;
    let finished = Change::JobFinished {
        job_id: doc.job_id.clone(),
        status,
    };
    append_change(tx, None, &finished, now_ms)?;
    let finished = OperationNotice::Finished {
        operation: doc.job_id.clone(),
        status,
    };
    notices.on_commit(tx, vec![finished]);
    Ok(())
}

/// Runs the engine in the background until the hub is dropped.
pub(crate) fn spawn(inner: Weak<HubInner>, state: Arc<JobsState>) {
    tokio::spawn(async move {
        loop {
            let Some(inner) = inner.upgrade() else { return };
            let hub = Hub { inner };
            let wait = match hub.job_engine().step().await {
                Ok(o) if o.progressed => Duration::ZERO,
                Ok(o) => o
                    .next_wake
                    .map(|t| (t - hub.inner.clock.now()).to_std().unwrap_or_default())
                    .unwrap_or(IDLE_WAIT)
                    .min(IDLE_WAIT),
                Err(e) => {
                    tracing::warn!("job engine step failed: {e}");
                    Duration::from_secs(1)
                }
            };
            drop(hub);
            if wait.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = state.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

/// The update that fails a device's row at `now` with `error`.
fn failed_update<'a>(now: &'a str, error: &'a Value) -> JobDeviceUpdate<'a> {
    JobDeviceUpdate {
        status: DeviceJobStatus::Failed,
        start_time: None,
        end_time: Some(now),
        updated_time: now,
        outcome: None,
        error: Some(error),
    }
}
