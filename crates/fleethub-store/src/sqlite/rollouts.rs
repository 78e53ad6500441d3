//! Rollouts as the store keeps them: one `rollouts` row (the spec as created, the status, the
//! machine's rollout-level state), one `rollout_devices` row per device (its record), the push
//! journal (`rollout_pushes`, keyed by rollout, device and attempt) and the audit trail
//! (`rollout_events`). The store knows no rollout semantics: the hub hands it JSON text and keys,
//! and writes a step's state, pushes and events in one transaction, so a restart resumes from
//! exactly what was committed: a push is either journalled with the state that made it or not
//! made at all.

use rusqlite::{params, OptionalExtension, Row};

use super::reads::sql_limit;
use crate::{Reads, StoreError, WriteTx};

/// A rollout's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    /// The rollout's id.
    pub rollout_id: String,
    /// Its spec as created (JSON).
    pub spec: String,
    /// `running`, `paused`, `completed`, `aborted` or `superseded`.
    pub status: String,
    /// The engine's rollout-level state (JSON): waves, reason, cursors.
    pub state: String,
    /// When it was created, Unix milliseconds.
    pub created_ms: i64,
    /// When its state last changed, Unix milliseconds.
    pub updated_ms: i64,
}

/// One push in the journal: set a device's desired firmware, once per (rollout, device, attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPushRow {
    /// The rollout that made it.
    pub rollout_id: String,
    /// The device it is for.
    pub device_id: String,
    /// The device's attempt number in the rollout: the push's idempotency key with the two above.
    pub attempt: u32,
    /// The version it sets.
    pub version: String,
    /// Whether it sends the device back to its previous version.
    pub rollback: bool,
    /// When the engine made it, Unix milliseconds.
    pub created_ms: i64,
    /// When it was handed to the device-operation layer; `None` while it waits.
    pub sent_ms: Option<i64>,
}

/// One transition in a rollout's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutEventRow {
    /// Its place in the log: increasing, never reused.
    pub seq: i64,
    /// The rollout it belongs to.
    pub rollout_id: String,
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
    /// Its kind (`wave_started`, `gate_tripped`, …).
    pub kind: String,
    /// The wave it concerns, if one.
    pub wave: Option<String>,
    /// The device it concerns, if one.
    pub device_id: Option<String>,
    /// A sentence for the operator.
    pub message: String,
}

/// A rollout one device belongs to, with the device's record there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRolloutRow {
    /// The rollout's id.
    pub rollout_id: String,
    /// Its spec as created (JSON).
    pub spec: String,
    /// Its status (`running`, `paused`, …).
    pub status: String,
    /// When it was created, Unix milliseconds.
    pub created_ms: i64,
    /// The device's record in it (JSON).
    pub record: String,
    /// When the engine last wrote that record; `None` for a record older than schema 14.
    pub updated_ms: Option<i64>,
    /// When the rollout first pushed the device; `None` if it never did.
    pub first_push_ms: Option<i64>,
}

/// The rollouts of one device, newest first: the device's rows through `rollout_devices_device`,
/// each joined to its rollout and to its first push (both by primary key).
pub(crate) const DEVICE_ROLLOUTS: &str = "
    SELECT r.rollout_id, r.spec, r.status, r.created_ms, d.record, d.updated_ms,
        (SELECT min(p.created_ms) FROM rollout_pushes AS p
         WHERE p.rollout_id = d.rollout_id AND p.device_id = d.device_id)
    FROM rollout_devices AS d JOIN rollouts AS r ON r.rollout_id = d.rollout_id
    WHERE d.device_id = ?1
    ORDER BY r.created_ms DESC, r.rollout_id LIMIT ?2";

const ROLLOUT_COLUMNS: &str = "rollout_id, spec, status, state, created_ms, updated_ms";
const PUSH_COLUMNS: &str = "rollout_id, device_id, attempt, version, rollback, created_ms, sent_ms";
const EVENT_COLUMNS: &str = "seq, rollout_id, at_ms, kind, wave, device_id, message";

/// Rollout queries, available inside both [`crate::Store::read`] and [`crate::Store::write`].
pub trait RolloutReads: Reads {
    /// The rollout with this id, if stored.
    fn get_rollout(&self, rollout_id: &str) -> Result<Option<RolloutRow>, StoreError> {
        let sql = format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE rollout_id = ?1");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        Ok(stmt.query_row([rollout_id], rollout_row).optional()?)
    }

    /// Up to `limit` rollouts, newest first.
    fn list_rollouts(&self, limit: usize) -> Result<Vec<RolloutRow>, StoreError> {
        let sql = format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY created_ms DESC, rollout_id LIMIT ?1"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map([sql_limit(limit)], rollout_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The ids of rollouts that are not finished (`running` or `paused`): what a starting hub
    /// resumes.
    fn unfinished_rollouts(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT rollout_id FROM rollouts WHERE status IN ('running', 'paused')
             ORDER BY created_ms, rollout_id",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every device record of a rollout, as (device id, record), in device-id order.
    fn rollout_devices(&self, rollout_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT device_id, record FROM rollout_devices WHERE rollout_id = ?1
             ORDER BY device_id",
        )?;
        let rows = stmt.query_map([rollout_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` of the rollouts `device_id` belongs to, newest first, each with the
    /// device's record there. Found through the index on the device, so it costs the same with
    /// a million devices in a rollout.
    fn device_rollouts(
        &self,
        device_id: &str,
        limit: usize,
    ) -> Result<Vec<DeviceRolloutRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(DEVICE_ROLLOUTS)?;
        let rows = stmt.query_map(params![device_id, sql_limit(limit)], |r| {
            Ok(DeviceRolloutRow {
                rollout_id: r.get(0)?,
                spec: r.get(1)?,
                status: r.get(2)?,
                created_ms: r.get(3)?,
                record: r.get(4)?,
                updated_ms: r.get(5)?,
                first_push_ms: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` journalled pushes of a rollout not yet handed on, oldest first.
    fn unsent_rollout_pushes(
        &self,
        rollout_id: &str,
        limit: usize,
    ) -> Result<Vec<RolloutPushRow>, StoreError> {
        let sql = format!(
            "SELECT {PUSH_COLUMNS} FROM rollout_pushes
             WHERE rollout_id = ?1 AND sent_ms IS NULL
             ORDER BY created_ms, device_id, attempt LIMIT ?2"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params![rollout_id, sql_limit(limit)], push_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every push made to one device by a rollout, by attempt.
    fn rollout_pushes_of(
        &self,
        rollout_id: &str,
        device_id: &str,
    ) -> Result<Vec<RolloutPushRow>, StoreError> {
        let sql = format!(
            "SELECT {PUSH_COLUMNS} FROM rollout_pushes
             WHERE rollout_id = ?1 AND device_id = ?2 ORDER BY attempt"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params![rollout_id, device_id], push_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` audit events of a rollout after `after_seq`, oldest first.
    fn rollout_events(
        &self,
        rollout_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<RolloutEventRow>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM rollout_events
             WHERE rollout_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map(params![rollout_id, after_seq, sql_limit(limit)], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl<T: Reads + ?Sized> RolloutReads for T {}

impl WriteTx<'_> {
    /// Stores a new rollout; `false` (and nothing written) if its id is taken.
    pub fn insert_rollout(&mut self, row: &RolloutRow) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO rollouts (rollout_id, spec, status, state, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (rollout_id) DO NOTHING",
        )?;
        let n = stmt.execute(params![
            row.rollout_id,
            row.spec,
            row.status,
            row.state,
            row.created_ms,
            row.updated_ms
        ])?;
        Ok(n == 1)
    }

    /// Replaces a rollout's status and state; `false` if it is not stored.
    pub fn update_rollout(
        &mut self,
        rollout_id: &str,
        status: &str,
        state: &str,
        updated_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE rollouts SET status = ?2, state = ?3, updated_ms = ?4 WHERE rollout_id = ?1",
        )?;
        Ok(stmt.execute(params![rollout_id, status, state, updated_ms])? == 1)
    }

    /// Writes device records (device id, record) as of `updated_ms`, replacing any stored for
    /// the same device.
    pub fn put_rollout_devices(
        &mut self,
        rollout_id: &str,
        records: &[(String, String)],
        updated_ms: i64,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO rollout_devices (rollout_id, device_id, record, updated_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (rollout_id, device_id)
             DO UPDATE SET record = excluded.record, updated_ms = excluded.updated_ms",
        )?;
        for (device, record) in records {
            stmt.execute(params![rollout_id, device, record, updated_ms])?;
        }
        Ok(())
    }

    /// Journals pushes. One already journalled under the same (rollout, device, attempt) is
    /// left as it is: a replay is not a new push. Answers how many were new.
    pub fn insert_rollout_pushes(
        &mut self,
        pushes: &[RolloutPushRow],
    ) -> Result<usize, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO rollout_pushes
                 (rollout_id, device_id, attempt, version, rollback, created_ms, sent_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (rollout_id, device_id, attempt) DO NOTHING",
        )?;
        let mut new = 0;
        for p in pushes {
            new += stmt.execute(params![
                p.rollout_id,
                p.device_id,
                p.attempt,
                p.version,
                p.rollback,
                p.created_ms,
                p.sent_ms
            ])?;
        }
        Ok(new)
    }

    /// Marks journalled pushes as handed on; answers how many were waiting.
    pub fn mark_rollout_pushes_sent(
        &mut self,
        rollout_id: &str,
        pushes: &[(String, u32)],
        sent_ms: i64,
    ) -> Result<usize, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE rollout_pushes SET sent_ms = ?4
             WHERE rollout_id = ?1 AND device_id = ?2 AND attempt = ?3 AND sent_ms IS NULL",
        )?;
        let mut marked = 0;
        for (device, attempt) in pushes {
            marked += stmt.execute(params![rollout_id, device, attempt, sent_ms])?;
        }
        Ok(marked)
    }

    /// Appends audit events (their `seq` is assigned here; the one given is ignored).
    pub fn append_rollout_events(&mut self, events: &[RolloutEventRow]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO rollout_events (rollout_id, at_ms, kind, wave, device_id, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for e in events {
            stmt.execute(params![
                e.rollout_id,
                e.at_ms,
                e.kind,
                e.wave,
                e.device_id,
                e.message
            ])?;
        }
        Ok(())
    }
}

fn rollout_row(r: &Row<'_>) -> rusqlite::Result<RolloutRow> {
    Ok(RolloutRow {
        rollout_id: r.get(0)?,
        spec: r.get(1)?,
        status: r.get(2)?,
        state: r.get(3)?,
        created_ms: r.get(4)?,
        updated_ms: r.get(5)?,
    })
}

fn push_row(r: &Row<'_>) -> rusqlite::Result<RolloutPushRow> {
    Ok(RolloutPushRow {
        rollout_id: r.get(0)?,
        device_id: r.get(1)?,
        attempt: r.get(2)?,
        version: r.get(3)?,
        rollback: r.get(4)?,
        created_ms: r.get(5)?,
        sent_ms: r.get(6)?,
    })
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<RolloutEventRow> {
    Ok(RolloutEventRow {
        seq: r.get(0)?,
        rollout_id: r.get(1)?,
        at_ms: r.get(2)?,
        kind: r.get(3)?,
        wave: r.get(4)?,
        device_id: r.get(5)?,
        message: r.get(6)?,
    })
}

#[cfg(test)]
mod tests;
