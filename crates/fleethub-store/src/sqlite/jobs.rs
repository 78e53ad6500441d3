//! Jobs: the `jobs` rows (one per job, its document owned by the hub) and the `job_devices`
//! snapshot (one row per targeted device with its outcome), read and written in bulk.
//!
//! Every bulk statement takes a `limit`, so a job over a million devices is worked through in
//! chunks and no single write holds the writer for long.

use fleethub_query::SqlFragment;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, OptionalExtension, Row};
use serde_json::Value;

pub use fleethub_core::jobs::{DeviceJobStatus, JobStatus};

use super::compiled::{condition_params, condition_sql};
use super::reads::{json_text, sql_limit};
use super::writes::Versioned;
use crate::{Reads, StoreError, WriteTx};

/// The SET clause of every `job_devices` update: `?3` status, `?4` start, `?5` end, `?6` updated,
/// `?7` outcome, `?8` error (start and end keep their value when not given), `?9` owner (this
/// store's node for a row moved to `running`, NULL otherwise).
/// (A macro, so the statements below are built with `concat!` at compile time.)
macro_rules! set_from_update {
    () => {
        "UPDATE job_devices SET status = ?3, start_time = coalesce(?4, start_time), \
         end_time = coalesce(?5, end_time), updated_time = ?6, outcome = ?7, error = ?8, \
         owner = ?9 "
    };
}

/// One job: its indexed columns and the document the hub keeps for it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// The job id (primary key).
    pub job_id: String,
    /// `scheduleUpdateTwin` or `scheduleDeviceMethod`.
    pub job_type: String,
    /// The job's status.
    pub status: JobStatus,
    /// When the job was created, in Unix milliseconds.
    pub created_ms: i64,
    /// When the job may start, in Unix milliseconds.
    pub start_ms: i64,
    /// When the job finished (nothing left to do), in Unix milliseconds; `None` while it is not.
    pub end_ms: Option<i64>,
    /// The job document, owned by the hub.
    pub body: Value,
}

/// One device's part in a job, as `devices.jobs` queries show it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDeviceRow {
    /// The job.
    pub job_id: String,
    /// The device.
    pub device_id: String,
    /// The job's type.
    pub job_type: String,
    /// Where the device's part in the job stands.
    pub status: DeviceJobStatus,
    /// When the device joined the job's snapshot (IoT Hub timestamp).
    pub created_time: String,
    /// When work on the device started.
    pub start_time: Option<String>,
    /// When work on the device ended.
    pub end_time: Option<String>,
    /// When the row last changed.
    pub updated_time: String,
    /// `{"deviceMethodResponse":{"status":…,"payload":…}}` for method jobs.
    pub outcome: Option<Value>,
    /// `{"code":…,"description":…}` when the device failed.
    pub error: Option<Value>,
}

/// How many of a job's devices are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobDeviceCounts {
    /// Waiting to be processed.
    pub pending: u64,
    /// Waiting for their own not-before time (a maintenance window).
    pub scheduled: u64,
    /// Being processed (a direct method call in flight).
    pub running: u64,
    /// Done.
    pub completed: u64,
    /// Failed (the row's `error` says why).
    pub failed: u64,
    /// Canceled before they were processed.
    pub canceled: u64,
}

impl JobDeviceCounts {
    /// Every device of the job.
    pub fn total(&self) -> u64 {
        self.pending + self.scheduled + self.running + self.completed + self.failed + self.canceled
    }

    /// The count of devices in `status`.
    pub fn of_mut(&mut self, status: DeviceJobStatus) -> &mut u64 {
        match status {
            DeviceJobStatus::Pending => &mut self.pending,
            DeviceJobStatus::Scheduled => &mut self.scheduled,
            DeviceJobStatus::Running => &mut self.running,
            DeviceJobStatus::Completed => &mut self.completed,
            DeviceJobStatus::Failed => &mut self.failed,
            DeviceJobStatus::Canceled => &mut self.canceled,
        }
    }
}

/// A device a twin job is about to update: the twin sections it asked for, as stored text.
/// `twin_version` is `None` when the device was deleted after the job took its snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTwinTarget {
    /// The device.
    pub device_id: String,
    /// Its tags (when asked for and the device exists).
    pub tags: Option<String>,
    /// Its desired section (when asked for and the device exists).
    pub desired: Option<String>,
    /// Its twin version, `None` if the device no longer exists.
    pub twin_version: Option<i64>,
}

/// What a job's device row changes to.
#[derive(Debug, Clone, Copy)]
pub struct JobDeviceUpdate<'a> {
    /// The new status.
    pub status: DeviceJobStatus,
    /// Sets `start_time` when given (kept otherwise).
    pub start_time: Option<&'a str>,
    /// Sets `end_time` when given (kept otherwise).
    pub end_time: Option<&'a str>,
    /// The row's new `updated_time`.
    pub updated_time: &'a str,
    /// The new outcome (replaces the stored one, `None` clears it).
    pub outcome: Option<&'a Value>,
    /// The new error (replaces the stored one, `None` clears it).
    pub error: Option<&'a Value>,
}

/// The selection of a job list: by type and status, after a cursor, in creation order.
#[derive(Debug, Clone, Default)]
pub struct JobFilter<'a> {
    /// Only jobs of this type.
    pub job_type: Option<&'a str>,
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs after this `(created_ms, job_id)` position.
    pub after: Option<(i64, &'a str)>,
}

const INSERT_LISTED: &str = "INSERT INTO job_devices (job_id, device_id, job_type, status,
         created_time, updated_time, end_time, error, not_before_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)";
const JOB_COLUMNS: &str = "job_id, job_type, status, created_ms, start_ms, end_ms, body";
pub(crate) const JOB_DEVICE_COLUMNS: &str =
    "job_id, device_id, job_type, status, created_time, start_time, \
                                  end_time, updated_time, outcome, error";

/// Job queries, available inside both [`crate::Store::read`] and [`crate::Store::write`].
pub trait JobReads: Reads {
    /// The job with this id, if it exists.
    fn get_job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?1");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        Ok(stmt.query_row([job_id], job_row).optional()?)
    }

    /// Up to `limit` jobs matching `filter`, oldest first (ties by id).
    fn list_jobs(&self, filter: &JobFilter<'_>, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        let (after_ms, after_id) = filter.after.unwrap_or((i64::MIN, ""));
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE (?1 IS NULL OR job_type = ?1) AND (?2 IS NULL OR status = ?2)
               AND (created_ms > ?3 OR (created_ms = ?3 AND job_id > ?4))
             ORDER BY created_ms, job_id LIMIT ?5"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                filter.job_type,
                filter.status.map(JobStatus::as_str),
                after_ms,
                after_id,
                sql_limit(limit)
            ],
            job_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The jobs with work left: not yet finished (`end_ms` unset) and in one of `statuses`.
    fn unfinished_jobs(&self, statuses: &[JobStatus]) -> Result<Vec<JobRow>, StoreError> {
        let mut out = Vec::new();
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = ?1 AND end_ms IS NULL
             ORDER BY start_ms, created_ms, job_id"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        for status in statuses {
            let rows = stmt.query_map([status.as_str()], job_row)?;
            for row in rows {
                out.push(row?);
            }
        }
        Ok(out)
    }

    /// How many of a job's devices are in each state (from `job_counts`, so it costs the same
    /// for ten devices and for a million).
    fn job_device_counts(&self, job_id: &str) -> Result<JobDeviceCounts, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT status, n FROM job_counts WHERE job_id = ?1")?;
        let mut counts = JobDeviceCounts::default();
        let mut rows = stmt.query([job_id])?;
        while let Some(row) = rows.next()? {
            let status = device_job_status(row, 0)?;
            let n = u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
            *counts.of_mut(status) += n;
        }
        Ok(counts)
    }

    /// Whether any of the job's devices is in `status`.
    fn job_has_devices_in(
        &self,
        job_id: &str,
        status: DeviceJobStatus,
    ) -> Result<bool, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM job_devices WHERE job_id = ?1 AND status = ?2)",
        )?;
        Ok(stmt.query_row([job_id, status.as_str()], |r| r.get(0))?)
    }

    /// The earliest not-before time of the job's `scheduled` rows (one index probe).
    fn next_not_before(&self, job_id: &str) -> Result<Option<i64>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT min(not_before_ms) FROM job_devices WHERE job_id = ?1 AND status = 'scheduled'",
        )?;
        Ok(stmt.query_row([job_id], |r| r.get(0))?)
    }

    /// Whether a device with this id is registered (a listed device-operation target).
    fn device_exists(&self, device_id: &str) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM devices WHERE device_id = ?1)")?;
        Ok(stmt.query_row([device_id], |r| r.get(0))?)
    }

    /// Up to `limit` ids of the job's devices in `status`, in id order.
    fn job_device_ids(
        &self,
        job_id: &str,
        status: DeviceJobStatus,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.job_device_ids_after(job_id, status, "", limit)
    }

    /// [`JobReads::job_device_ids`] after the id `after` (a reader that pages while its earlier
    /// pages are still being written).
    fn job_device_ids_after(
        &self,
        job_id: &str,
        status: DeviceJobStatus,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT device_id FROM job_devices WHERE job_id = ?1 AND status = ?2
             AND device_id > ?4 ORDER BY device_id LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![job_id, status.as_str(), sql_limit(limit), after],
            |r| r.get(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One device's row in a job.
    fn get_job_device(
        &self,
        job_id: &str,
        device_id: &str,
    ) -> Result<Option<JobDeviceRow>, StoreError> {
        let sql = format!(
            "SELECT {JOB_DEVICE_COLUMNS} FROM job_devices WHERE job_id = ?1 AND device_id = ?2"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        Ok(stmt
            .query_row([job_id, device_id], job_device_row)
            .optional()?)
    }

    /// Up to `limit` of a job's device rows after `after` (all when `None`), in id order.
    fn list_job_devices(
        &self,
        job_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobDeviceRow>, StoreError> {
        let sql = format!(
            "SELECT {JOB_DEVICE_COLUMNS} FROM job_devices WHERE job_id = ?1 AND device_id > ?2
             ORDER BY device_id LIMIT ?3"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![job_id, after.unwrap_or(""), sql_limit(limit)],
            job_device_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One device's twin sections as a twin job needs them (`twin_version` is `None` when the
    /// device does not exist).
    fn twin_target(
        &self,
        device_id: &str,
        want_tags: bool,
        want_desired: bool,
    ) -> Result<JobTwinTarget, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT CASE WHEN ?2 THEN json(tags) END,
                    CASE WHEN ?3 THEN json_object('values', json(desired), 'metadata',
                        json(fh_metadata(json(desired),
                            (SELECT desired FROM twin_metadata WHERE twin_metadata.row = devices.row))),
                        'version', desired_version) END,
                    twin_version
             FROM devices WHERE device_id = ?1",
        )?;
        let found = stmt
            .query_row(params![device_id, want_tags, want_desired], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let (tags, desired, twin_version) = found.unwrap_or((None, None, None));
        Ok(JobTwinTarget {
            device_id: device_id.to_string(),
            tags,
            desired,
            twin_version,
        })
    }

    /// Up to `limit` of a twin job's pending devices after `after` (by id) with the twin
    /// sections it needs, in id order.
    fn pending_twin_targets(
        &self,
        job_id: &str,
        want_tags: bool,
        want_desired: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobTwinTarget>, StoreError> {
        // One join instead of a lookup per device; sections not asked for are never copied out.
        let mut stmt = self.conn().prepare_cached(
            "SELECT j.device_id,
                    CASE WHEN ?2 THEN json(d.tags) END,
                    CASE WHEN ?3 THEN json_object('values', json(d.desired), 'metadata',
                        json(fh_metadata(json(d.desired),
                            (SELECT desired FROM twin_metadata AS m WHERE m.row = d.row))),
                        'version', d.desired_version) END,
                    d.twin_version
             FROM job_devices AS j LEFT JOIN devices AS d ON d.device_id = j.device_id
             WHERE j.job_id = ?1 AND j.status = 'pending' AND j.device_id > ?5
             ORDER BY j.device_id LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                job_id,
                want_tags,
                want_desired,
                sql_limit(limit),
                after.unwrap_or("")
            ],
            |r| {
                Ok(JobTwinTarget {
                    device_id: r.get(0)?,
                    tags: r.get(1)?,
                    desired: r.get(2)?,
                    twin_version: r.get(3)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl<T: Reads + ?Sized> JobReads for T {}

impl WriteTx<'_> {
    /// Adds a job; `false` (and nothing written) if the id is taken.
    pub fn insert_job(&mut self, row: &JobRow) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO jobs (job_id, job_type, status, created_ms, start_ms, end_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (job_id) DO NOTHING",
        )?;
        let inserted = stmt.execute(params![
            row.job_id,
            row.job_type,
            row.status.as_str(),
            row.created_ms,
            row.start_ms,
            row.end_ms,
            json_text(&row.body)?,
        ])?;
        Ok(inserted == 1)
    }

    /// Replaces a job's status, end time and document; `false` if it does not exist.
    pub fn update_job(
        &mut self,
        job_id: &str,
        status: JobStatus,
        end_ms: Option<i64>,
        body: &Value,
    ) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE jobs SET status = ?2, end_ms = ?3, body = ?4 WHERE job_id = ?1",
        )?;
        Ok(stmt.execute(params![job_id, status.as_str(), end_ms, json_text(body)?])? == 1)
    }

    /// Adds up to `limit` devices to a job's snapshot as `pending` rows: those whose id sorts
    /// after `after` and that satisfy `condition` (a boolean SQL expression over `devices`, with
    /// its parameters numbered from `?1`; `None` selects every device), in id order, by one
    /// `INSERT … SELECT`. Returns how many were added and the last id added.
    pub fn snapshot_job_devices(
        &mut self,
        snapshot: &JobSnapshot<'_>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(u64, Option<String>), StoreError> {
        let n = snapshot.condition.map_or(0, |c| c.params.len());
        let condition = match snapshot.condition {
            Some(c) => condition_sql(c)?,
            None => "1",
        };
        let sql = format!(
            "INSERT INTO job_devices
                 (job_id, device_id, job_type, status, created_time, updated_time)
             SELECT ?{p1}, device_id, ?{p2}, 'pending', ?{p3}, ?{p3} FROM devices
             WHERE device_id > ?{p4} AND ({condition})
             ORDER BY device_id LIMIT ?{p5}",
            p1 = n + 1,
            p2 = n + 2,
            p3 = n + 3,
            p4 = n + 4,
            p5 = n + 5,
        );
        let mut all: Vec<SqlValue> = snapshot.condition.map(condition_params).unwrap_or_default();
        all.push(SqlValue::Text(snapshot.job_id.to_string()));
        all.push(SqlValue::Text(snapshot.job_type.to_string()));
        all.push(SqlValue::Text(snapshot.created_time.to_string()));
        all.push(SqlValue::Text(after.unwrap_or("").to_string()));
        all.push(SqlValue::Integer(sql_limit(limit)));
        // Not cached: the text differs per condition, and a job starts once. What SQLite
        // refuses in the condition is the compiled query's fault (Rejected, TooComplex).
        let inserted = self
            .conn
            .execute(&sql, params_from_iter(all))
            .map_err(|e| StoreError::from_compiled(&e))? as u64;
        if inserted == 0 {
            return Ok((0, None));
        }
        self.count(snapshot.job_id, DeviceJobStatus::Pending, inserted as i64);
        let last: Option<String> = self
            .conn
            .prepare_cached("SELECT max(device_id) FROM job_devices WHERE job_id = ?1")?
            .query_row([snapshot.job_id], |r| r.get(0))?;
        Ok((inserted, last))
    }

    /// Changes one device's row in a job; `false` if the row does not exist.
    pub fn update_job_device(
        &mut self,
        job_id: &str,
        device_id: &str,
        update: &JobDeviceUpdate<'_>,
    ) -> Result<bool, StoreError> {
        match self.get_job_device(job_id, device_id)? {
            Some(row) => self.update_job_device_from(job_id, device_id, row.status, update),
            None => Ok(false),
        }
    }

    /// Changes one device's row in a job only if it is still `pending`; `false` otherwise (the
    /// job was cancelled or expired, or the device was already processed).
    pub fn update_pending_job_device(
        &mut self,
        job_id: &str,
        device_id: &str,
        update: &JobDeviceUpdate<'_>,
    ) -> Result<bool, StoreError> {
        self.update_job_device_from(job_id, device_id, DeviceJobStatus::Pending, update)
    }

    /// Changes one device's row in a job only if its status is `from`; `false` otherwise.
    pub fn update_job_device_from(
        &mut self,
        job_id: &str,
        device_id: &str,
        from: DeviceJobStatus,
        update: &JobDeviceUpdate<'_>,
    ) -> Result<bool, StoreError> {
        let sql = concat!(
            set_from_update!(),
            "WHERE job_id = ?1 AND device_id = ?2 AND status = ?10"
        );
        let changed = self.apply_update(sql, job_id, device_id, update, Some(&from.as_str()))? == 1;
        if changed {
            self.count_move(job_id, from, update.status, 1);
        }
        Ok(changed)
    }

    /// Moves up to `limit` of a job's devices from status `from` to `update.status` (lowest ids
    /// first); returns the ids that moved, in id order.
    pub fn move_job_devices(
        &mut self,
        job_id: &str,
        from: DeviceJobStatus,
        update: &JobDeviceUpdate<'_>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.move_devices(job_id, from, None, update, limit)
    }

    /// Moves up to `limit` of a job's `running` devices that this store's node owns (or that no
    /// node owns: rows from before owners were kept) to `update.status`; returns the ids that
    /// moved. Recovery after a crash uses it, so it never touches another node's calls.
    pub fn move_own_running_job_devices(
        &mut self,
        job_id: &str,
        update: &JobDeviceUpdate<'_>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let node = self.node.to_string();
        self.move_devices(job_id, DeviceJobStatus::Running, Some(&node), update, limit)
    }

    /// The one bulk move: up to `limit` of a job's rows in `from` (lowest ids first), only those
    /// `owner` owns (or no node owns) when it is given, to `update.status`. Returns the moved ids
    /// (the completion notices of the hub's device-operation layer name each one).
    fn move_devices(
        &mut self,
        job_id: &str,
        from: DeviceJobStatus,
        owner: Option<&str>,
        update: &JobDeviceUpdate<'_>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let sql = concat!(
            set_from_update!(),
            "WHERE job_id = ?1 AND device_id IN (
                 SELECT device_id FROM job_devices
                 WHERE job_id = ?1 AND status = ?2
                   AND (?11 IS NULL OR owner IS NULL OR owner = ?11)
                 ORDER BY device_id LIMIT ?10)
             RETURNING device_id"
        );
        let extra: [&dyn rusqlite::ToSql; 2] = [&sql_limit(limit), &owner];
        let mut moved: Vec<String> = self.run_update(
            sql,
            job_id,
            from.as_str(),
            update,
            &extra,
            |stmt, params| stmt.query_map(params, |r| r.get(0))?.collect(),
        )?;
        moved.sort_unstable();
        self.count_move(job_id, from, update.status, moved.len() as i64);
        Ok(moved)
    }

    /// Adds explicitly listed devices to a job (a device-operation's list, given instead of a
    /// query condition), each with the status, not-before time and error its entry gives; ids
    /// must be unique and not yet in the job. One prepared statement per row, so a list of
    /// 100,000 ids is one write of 100,000 inserts and no SQL text grows with the list.
    pub fn insert_job_devices(
        &mut self,
        job: &NewJobDevices<'_>,
        devices: &[NewJobDevice<'_>],
    ) -> Result<(), StoreError> {
        for d in devices {
            let error = d.error.map(json_text).transpose()?;
            let end = d.status.is_final().then_some(job.created_time);
            self.conn.prepare_cached(INSERT_LISTED)?.execute(params![
                job.job_id,
                d.device_id,
                job.job_type,
                d.status.as_str(),
                job.created_time,
                end,
                error,
                d.not_before_ms,
            ])?;
            self.count(job.job_id, d.status, 1);
        }
        Ok(())
    }

    /// Moves up to `limit` of a job's `scheduled` rows whose not-before time is at or before
    /// `now_ms` to `pending` (earliest first). Returns how many moved and the earliest
    /// not-before time still waiting. Reads only due rows, through the partial index.
    pub fn release_due_job_devices(
        &mut self,
        job_id: &str,
        now_ms: i64,
        updated_time: &str,
        limit: usize,
    ) -> Result<(u64, Option<i64>), StoreError> {
        let moved = self
            .conn
            .prepare_cached(
                "UPDATE job_devices SET status = 'pending', updated_time = ?3
                 WHERE job_id = ?1 AND device_id IN (
                     SELECT device_id FROM job_devices
                     WHERE job_id = ?1 AND status = 'scheduled' AND not_before_ms <= ?2
                     ORDER BY not_before_ms LIMIT ?4)",
            )?
            .execute(params![job_id, now_ms, updated_time, sql_limit(limit)])?;
        self.count_move(
            job_id,
            DeviceJobStatus::Scheduled,
            DeviceJobStatus::Pending,
            moved as i64,
        );
        Ok((moved as u64, self.next_not_before(job_id)?))
    }

    /// [`JobReads::job_device_counts`] as this write sees it, its own changes included.
    pub fn job_device_counts(&mut self, job_id: &str) -> Result<JobDeviceCounts, StoreError> {
        self.flush_job_counts()?;
        JobReads::job_device_counts(self, job_id)
    }

    /// Notes `delta` more devices of `job_id` in `status` (applied when the write ends).
    fn count(&mut self, job_id: &str, status: DeviceJobStatus, delta: i64) {
        if delta == 0 {
            return;
        }
        match self
            .count_deltas
            .iter_mut()
            .find(|(j, s, _)| j == job_id && *s == status)
        {
            Some((_, _, n)) => *n += delta,
            None => self.count_deltas.push((job_id.to_string(), status, delta)),
        }
    }

    /// Notes `n` devices of `job_id` moving from `from` to `to`.
    fn count_move(&mut self, job_id: &str, from: DeviceJobStatus, to: DeviceJobStatus, n: i64) {
        if from != to {
            self.count(job_id, from, -n);
            self.count(job_id, to, n);
        }
    }

    /// Applies the counts this write changed; the writer calls it before releasing the write's
    /// savepoint (and drops them instead when the write is rolled back).
    pub(crate) fn flush_job_counts(&mut self) -> rusqlite::Result<()> {
        if self.count_deltas.is_empty() {
            return Ok(());
        }
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO job_counts (job_id, status, n) VALUES (?1, ?2, ?3)
             ON CONFLICT (job_id, status) DO UPDATE SET n = n + excluded.n",
        )?;
        for (job_id, status, delta) in self.count_deltas.drain(..) {
            if delta != 0 {
                stmt.execute(params![job_id, status.as_str(), delta])?;
            }
        }
        Ok(())
    }

    /// Runs a `job_devices` update that starts with `set_from_update!()`: `?1` the job, `?2`
    /// `key` (a device id or a status), `?3`…`?9` the update, `?10` the optional `extra` (a
    /// status); returns how many rows changed.
    fn apply_update(
        &mut self,
        sql: &str,
        job_id: &str,
        key: &str,
        update: &JobDeviceUpdate<'_>,
        extra: Option<&dyn rusqlite::ToSql>,
    ) -> Result<usize, StoreError> {
        self.run_update(
            sql,
            job_id,
            key,
            update,
            extra.as_slice(),
            |stmt, params| stmt.execute(params),
        )
    }

    /// Binds a `set_from_update!()` statement (`?1`…`?9`, then `extra` from `?10`) and hands it
    /// to `run`, which executes it or reads what it returns.
    fn run_update<T>(
        &mut self,
        sql: &str,
        job_id: &str,
        key: &str,
        update: &JobDeviceUpdate<'_>,
        extra: &[&dyn rusqlite::ToSql],
        run: impl FnOnce(&mut rusqlite::Statement<'_>, &[&dyn rusqlite::ToSql]) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let outcome = update.outcome.map(json_text).transpose()?;
        let error = update.error.map(json_text).transpose()?;
        let owner = (update.status == DeviceJobStatus::Running).then_some(self.node);
        let base = params![
            job_id,
            key,
            update.status.as_str(),
            update.start_time,
            update.end_time,
            update.updated_time,
            outcome,
            error,
            owner,
        ];
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        Ok(run(&mut stmt, all.as_slice())?)
    }

    /// Replaces tags and/or desired (as already-serialized JSON text, the desired metadata packed
    /// as `TwinProperties::to_stored_text` writes it; `None` keeps a section) and
    /// the twin version and etag of a device, if its twin is still at `twin_version - 1` (the
    /// version the caller read); [`StoreError::Conflict`], and nothing written, if it changed
    /// meanwhile or the device is gone. The batch path of twin jobs, which merges on a read
    /// connection and never decodes the rest of the row.
    pub fn update_twin_text(
        &mut self,
        device_id: &str,
        tags: Option<&str>,
        desired: Option<&str>,
        twin_version: i64,
        twin_etag: &str,
    ) -> Result<(), StoreError> {
        let row = self.update_sections(device_id, tags, desired, None, twin_version, twin_etag)?;
        let read = twin_version - 1;
        self.expect_one(
            usize::from(row.is_some()),
            Versioned::Twin {
                id: device_id,
                read,
            },
        )?;
        self.set_metadata(row, desired, None)
    }

    /// Deletes up to `limit` device rows of a job (a finished one, being pruned: its statistics
    /// are frozen in its document, and its counts go with the first chunk); returns how many went.
    pub fn delete_job_devices(&mut self, job_id: &str, limit: usize) -> Result<u64, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM job_counts WHERE job_id = ?1")?
            .execute([job_id])?;
        let mut stmt = self.conn.prepare_cached(
            "DELETE FROM job_devices WHERE job_id = ?1 AND device_id IN (
                 SELECT device_id FROM job_devices WHERE job_id = ?1 LIMIT ?2)",
        )?;
        Ok(stmt.execute(params![job_id, sql_limit(limit)])? as u64)
    }

    /// Deletes a job row (its device rows must already be gone); `false` if it did not exist.
    pub fn delete_job(&mut self, job_id: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM job_counts WHERE job_id = ?1")?
            .execute([job_id])?;
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM jobs WHERE job_id = ?1")?;
        Ok(stmt.execute([job_id])? == 1)
    }

    /// Ids of up to `limit` jobs that finished before `before_ms`, oldest first.
    pub fn finished_jobs_before(
        &mut self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT job_id FROM jobs WHERE end_ms IS NOT NULL AND end_ms < ?1
             ORDER BY end_ms LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![before_ms, sql_limit(limit)], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The job that [`WriteTx::insert_job_devices`] adds listed devices to.
#[derive(Debug, Clone, Copy)]
pub struct NewJobDevices<'a> {
    /// The job the rows belong to.
    pub job_id: &'a str,
    /// The job's type, copied into every row.
    pub job_type: &'a str,
    /// The rows' `created_time` and `updated_time` (and `end_time` of a row that starts final).
    pub created_time: &'a str,
}

/// One listed device of a job, as it enters the job.
#[derive(Debug, Clone, Copy)]
pub struct NewJobDevice<'a> {
    /// The device.
    pub device_id: &'a str,
    /// `pending`, `scheduled` (with `not_before_ms`), or final (`failed`, with `error`) for a
    /// device that cannot take part, such as one that is not registered.
    pub status: DeviceJobStatus,
    /// For a `scheduled` row: the time, in Unix milliseconds, before which it must not start.
    pub not_before_ms: Option<i64>,
    /// Why the device failed, for a row that starts final.
    pub error: Option<&'a Value>,
}

/// What a job's device snapshot selects: the job and the compiled query condition.
#[derive(Debug, Clone)]
pub struct JobSnapshot<'a> {
    /// The job the rows belong to.
    pub job_id: &'a str,
    /// The job's type, copied into every row.
    pub job_type: &'a str,
    /// The rows' `created_time` and `updated_time`.
    pub created_time: &'a str,
    /// The compiled query condition (a boolean expression over `devices`, in this store's
    /// dialect); `None` selects every device.
    pub condition: Option<&'a SqlFragment>,
}

fn job_row(r: &Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        job_id: r.get(0)?,
        job_type: r.get(1)?,
        status: job_status(r, 2)?,
        created_ms: r.get(3)?,
        start_ms: r.get(4)?,
        end_ms: r.get(5)?,
        body: json_value(r, 6)?,
    })
}

pub(crate) fn job_device_row(r: &Row<'_>) -> rusqlite::Result<JobDeviceRow> {
    Ok(JobDeviceRow {
        job_id: r.get(0)?,
        device_id: r.get(1)?,
        job_type: r.get(2)?,
        status: device_job_status(r, 3)?,
        created_time: r.get(4)?,
        start_time: r.get(5)?,
        end_time: r.get(6)?,
        updated_time: r.get(7)?,
        outcome: optional_json(r, 8)?,
        error: optional_json(r, 9)?,
    })
}

fn job_status(r: &Row<'_>, index: usize) -> rusqlite::Result<JobStatus> {
    let text = r.get_ref(index)?.as_str()?;
    JobStatus::parse(text).ok_or_else(|| unknown_status(index, text))
}

fn device_job_status(r: &Row<'_>, index: usize) -> rusqlite::Result<DeviceJobStatus> {
    let text = r.get_ref(index)?.as_str()?;
    DeviceJobStatus::parse(text).ok_or_else(|| unknown_status(index, text))
}

fn unknown_status(index: usize, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("'{text}' is not a status this version of FleetHub knows").into(),
    )
}

fn json_value(r: &Row<'_>, index: usize) -> rusqlite::Result<Value> {
    let text = r.get_ref(index)?.as_str()?;
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn optional_json(r: &Row<'_>, index: usize) -> rusqlite::Result<Option<Value>> {
    match r.get_ref(index)?.as_str_or_null()? {
        None => Ok(None),
        Some(_) => json_value(r, index).map(Some),
    }
}
