//! Changes, made inside the writer's transaction.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::reads::{json_text, sql_limit};
use crate::{
    C2dRow, DeviceRow, EncodedDeviceRow, HeldTwin, Reads, SectionParts, StoreError, TelemetryRow,
    TwinSections,
};

/// One write's view of the writer's transaction: everything it changes commits with its batch,
/// or not at all if the write returns an error.
pub struct WriteTx<'a> {
    pub(crate) conn: &'a Connection,
    /// The node this store was opened by ([`crate::StoreConfig::node`]): the owner of the job
    /// rows this write moves to `running`.
    pub(crate) node: &'a str,
    /// Changes to `job_counts` made by this write so far: (job, status, delta).
    pub(crate) count_deltas: Vec<(String, fleethub_core::jobs::DeviceJobStatus, i64)>,
    /// What must happen once the batch commits, in the order the writes recorded it.
    pub(crate) effects: Vec<Effect>,
    /// The writer's twin epoch ([`WriteTx::twin_epoch`]).
    pub(crate) epoch: &'a TwinEpoch,
}

/// A number that changes whenever a device's stored twin may have changed other than by a
/// versioned write of this writer: a device was deleted (a device created again under the same
/// id starts its versions over), or another connection committed to the database (another hub
/// process on the same file). A copy of a twin section taken at a twin version, within one
/// epoch, is the stored section for as long as the stored twin version is the same.
#[derive(Debug, Default)]
pub(crate) struct TwinEpoch {
    value: std::cell::Cell<u64>,
    /// `PRAGMA data_version` as the writer last saw it.
    data_version: std::cell::Cell<Option<i64>>,
}

impl TwinEpoch {
    /// Moves the epoch on if another connection committed since the last call (each batch
    /// calls this first, inside its transaction).
    pub(crate) fn observe(&self, conn: &Connection) -> rusqlite::Result<()> {
        let now: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if self.data_version.replace(Some(now)) != Some(now) {
            self.bump();
        }
        Ok(())
    }

    fn bump(&self) {
        self.value.set(self.value.get() + 1);
    }
}

/// Work recorded by a write to run after its transaction commits (a push to a device, a
/// disconnect, an engine wake). The writer runs effects in commit order on its own thread, so
/// they must be quick and must not wait on the store.
pub type Effect = Box<dyn FnOnce() + Send + 'static>;

impl super::reads::sealed::Connected for WriteTx<'_> {
    fn conn(&self) -> &Connection {
        self.conn
    }
}

impl Reads for WriteTx<'_> {}

impl WriteTx<'_> {
    /// Records `effect` to run once this write's transaction has committed, after the effects of
    /// every write committed before it. Dropped, never run, if the write is rolled back.
    pub fn on_commit(&mut self, effect: impl FnOnce() + Send + 'static) {
        self.effects.push(Box::new(effect));
    }

    /// The writer's twin epoch: a copy of a device's twin section taken at twin version `v` in
    /// this epoch still is what the store holds if the device's twin version is still `v` and the
    /// epoch has not moved. Deleting a device moves it, and so does another connection's commit
    /// (seen when the next batch begins).
    pub fn twin_epoch(&self) -> u64 {
        self.epoch.value.get()
    }

    /// Runs `f` in a nested savepoint: if it fails, what it wrote (rows, job counts, effects) is
    /// undone and the rest of the write goes on. Bulk operations use it to keep each entry atomic.
    pub fn atomically<T, E>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let (effects, counts) = (self.effects.len(), self.count_deltas.len());
        self.conn
            .prepare_cached("SAVEPOINT entry")
            .and_then(|mut s| s.execute([]))
            .map_err(|e| E::from(StoreError::from(e)))?;
        let result = f(self);
        if result.is_err() && self.conn.is_autocommit() {
            // SQLite rolled back the whole transaction (a full store, say), savepoints and all:
            // there is nothing left to undo, and the writer reports the batch failed.
            return result;
        }
        if result.is_err() {
            self.effects.truncate(effects);
            self.count_deltas.truncate(counts);
            self.conn
                .prepare_cached("ROLLBACK TO entry")
                .and_then(|mut s| s.execute([]))
                .map_err(|e| E::from(StoreError::from(e)))?;
        }
        self.conn
            .prepare_cached("RELEASE entry")
            .and_then(|mut s| s.execute([]))
            .map_err(|e| E::from(StoreError::from(e)))?;
        result
    }

    /// Adds a new device; `false` (and nothing written) if the id is taken.
    pub fn insert_device(&mut self, row: &DeviceRow) -> Result<bool, StoreError> {
        self.insert_encoded_device(&row.encode()?)
    }

    /// [`insert_device`](Self::insert_device) for a row encoded beforehand.
    pub fn insert_encoded_device(&mut self, row: &EncodedDeviceRow) -> Result<bool, StoreError> {
        // Each section's text is split here: values to JSONB, version to its column, metadata
        // to the row's `twin_metadata` (SQLite parses each text once per statement). INSERT …
        // SELECT, not VALUES, since no trigger makes this a multi-row write: see `set_metadata`
        // (`WHERE true` lets SQLite tell the upsert clause from a join).
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO devices (device_id, status, identity, tags, desired, desired_version,
                                  reported, reported_version, twin_version, twin_etag, revision)
             SELECT ?1, ?2, ?3, jsonb(?4), jsonb_extract(?5, '$.values'), ?5 ->> '$.version',
                    jsonb_extract(?6, '$.values'), ?6 ->> '$.version', ?7, ?8, ?9
             WHERE true
             ON CONFLICT (device_id) DO NOTHING",
        )?;
        let inserted = stmt.execute(params![
            row.device_id,
            row.status,
            row.identity,
            row.tags,
            row.desired,
            row.reported,
            row.twin_version,
            row.twin_etag,
            row.revision,
        ])?;
        if inserted == 0 {
            return Ok(false);
        }
        // INSERT … SELECT, not VALUES: see `set_metadata`.
        self.conn
            .prepare_cached(
                "INSERT INTO twin_metadata (row, desired, reported)
                 SELECT last_insert_rowid(), json_extract(?1, '$.metadata'),
                        json_extract(?2, '$.metadata')",
            )?
            .execute(params![row.desired, row.reported])?;
        self.index_tags(&row.device_id, &row.tags)?;
        Ok(true)
    }

    /// Adds one `device_tags` row per primitive leaf of `tags` (JSON text): one b-tree insert
    /// each, the table's key being the whole row.
    fn index_tags(&self, device_id: &str, tags: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO device_tags (path, value, kind, device_id)
                 SELECT fullkey, coalesce(atom, ''), type, ?1 FROM json_tree(?2)
                 WHERE type NOT IN ('object', 'array')",
            )?
            .execute(params![device_id, tags])?;
        Ok(())
    }

    /// Removes the `device_tags` rows of a device's stored tags, if the device's `column`
    /// (`twin_version` or `revision`) is still `expected`: the rows a write that then matches
    /// replaces or deletes. Nothing is removed when it does not match, so a write that fails
    /// its version check leaves the index as it was.
    fn unindex_tags(&self, device_id: &str, column: Versioned<'_>) -> Result<(), StoreError> {
        let (sql, expected) = match column {
            Versioned::Twin { read, .. } => (UNINDEX_AT_TWIN_VERSION, read),
            Versioned::Device { read, .. } => (UNINDEX_AT_REVISION, read),
        };
        self.conn
            .prepare_cached(sql)?
            .execute(params![device_id, expected])?;
        Ok(())
    }

    /// Replaces a device's status and registry entry (stored packed, as [`DeviceRow::encode`]
    /// packs it) and sets its revision to `revision`, if the
    /// stored revision is still `revision - 1` (the one the caller read); otherwise nothing is
    /// written and the answer is [`StoreError::Conflict`].
    pub fn update_identity(
        &mut self,
        id: &str,
        status: &str,
        identity: &Value,
        revision: i64,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE devices SET status = ?2, identity = ?3, revision = ?4
             WHERE device_id = ?1 AND revision = ?4 - 1",
        )?;
        let stored = fleethub_core::stored_entry::pack(identity, id, status)?;
        let changed = stmt.execute(params![id, status, stored, revision])?;
        self.expect_one(
            changed,
            Versioned::Device {
                id,
                read: revision - 1,
            },
        )
    }

    /// Replaces the reported section, given in its parts as the hub holds it (the values and the
    /// metadata as JSON texts, and the section's version), and sets the twin's version and etag,
    /// if the twin is still at `twin_version - 1` (the version the caller read); otherwise
    /// nothing is written and the answer is [`StoreError::Conflict`]. Answers the device's row
    /// key, for a caller that keeps a copy of what it wrote ([`WriteTx::try_update_reported_at`]).
    /// SQLite parses the values once (into JSONB) and stores the metadata text as it comes, where
    /// the whole section's text was parsed three times (values, version, metadata).
    pub fn update_reported_parts(
        &mut self,
        id: &str,
        reported: SectionParts<'_>,
        twin_version: i64,
        twin_etag: &str,
    ) -> Result<i64, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE devices SET reported = jsonb(?2), reported_version = ?3, twin_version = ?4,
                 twin_etag = ?5
             WHERE device_id = ?1 AND twin_version = ?4 - 1
             RETURNING row",
        )?;
        let row: Option<i64> = stmt
            .query_row(
                params![
                    id,
                    reported.values,
                    reported.version,
                    twin_version,
                    twin_etag
                ],
                |r| r.get(0),
            )
            .optional()?;
        let read = twin_version - 1;
        self.expect_one(usize::from(row.is_some()), Versioned::Twin { id, read })?;
        let row = row.unwrap_or_default();
        // `row = ?1`: see `set_metadata`.
        self.conn
            .prepare_cached("UPDATE twin_metadata SET reported = ?2 WHERE row = ?1")?
            .execute(params![row, reported.metadata])?;
        Ok(row)
    }

    /// Replaces the reported section, given in its parts, of a twin the caller holds a copy of
    /// (a report's hot path) and moves the twin to version `held.twin_version + 1`; `false`, and
    /// nothing written, if the row no longer is that device at that twin version (and registry
    /// revision, when given). The row is found by its key, and without `RETURNING`, whose
    /// ephemeral table SQLite opens and closes per statement.
    pub fn try_update_reported_at(
        &mut self,
        held: HeldTwin<'_>,
        reported: SectionParts<'_>,
        twin_etag: &str,
    ) -> Result<bool, StoreError> {
        const SQL: [&str; 2] = [
            "UPDATE devices SET reported = jsonb(?3), reported_version = ?4,
                 twin_version = ?5 + 1, twin_etag = ?6
             WHERE row = ?1 AND device_id = ?2 AND twin_version = ?5
                 AND (?7 IS NULL OR revision = ?7)",
            "UPDATE twin_metadata SET reported = ?2 WHERE row = ?1",
        ];
        self.update_section_at(SQL, held, reported, twin_etag)
    }

    /// [`WriteTx::try_update_reported_at`] for the desired section: a desired change made to a
    /// twin the caller holds a copy of.
    pub fn try_update_desired_at(
        &mut self,
        held: HeldTwin<'_>,
        desired: SectionParts<'_>,
        twin_etag: &str,
    ) -> Result<bool, StoreError> {
        const SQL: [&str; 2] = [
            "UPDATE devices SET desired = jsonb(?3), desired_version = ?4,
                 twin_version = ?5 + 1, twin_etag = ?6
             WHERE row = ?1 AND device_id = ?2 AND twin_version = ?5
                 AND (?7 IS NULL OR revision = ?7)",
            "UPDATE twin_metadata SET desired = ?2 WHERE row = ?1",
        ];
        self.update_section_at(SQL, held, desired, twin_etag)
    }

    /// Runs a section's two statements (`devices`, then `twin_metadata`) for a held twin.
    fn update_section_at(
        &self,
        [devices, metadata]: [&str; 2],
        held: HeldTwin<'_>,
        section: SectionParts<'_>,
        twin_etag: &str,
    ) -> Result<bool, StoreError> {
        let changed = self.conn.prepare_cached(devices)?.execute(params![
            held.row,
            held.id,
            section.values,
            section.version,
            held.twin_version,
            twin_etag,
            held.revision
        ])?;
        if changed != 1 {
            return Ok(false);
        }
        // `row = ?1`: see `set_metadata`.
        self.conn
            .prepare_cached(metadata)?
            .execute(params![held.row, section.metadata])?;
        Ok(true)
    }

    /// Replaces the metadata of the row `row` (when there is one) for the sections given, from
    /// their stored text.
    ///
    /// The `twin_metadata` updates and deletes name their row as `row = ?1`, a one-row write
    /// that SQLite runs without a statement journal. When such a statement fails with a full
    /// disk (`SQLITE_FULL`, or the store's size cap), SQLite rolls back the whole transaction
    /// rather than the statement, and the writer then fails the batch's writes with the full
    /// store's retryable 503 (`transaction_lost` in writer.rs; `store_full` in the integration
    /// tests). They were written `row IN (SELECT ?1)`, which keeps a statement journal so only
    /// the write that hit the full disk fails, but costs an ephemeral table per statement: 8 to
    /// 10% of the writer's time per reported patch (perf, `bench reported`), on every report, to
    /// spare a batch's other writes a retry on a full disk.
    pub(crate) fn set_metadata(
        &self,
        row: Option<i64>,
        desired: Option<&str>,
        reported: Option<&str>,
    ) -> Result<(), StoreError> {
        let Some(row) = row.filter(|_| desired.is_some() || reported.is_some()) else {
            return Ok(());
        };
        self.conn
            .prepare_cached(
                "UPDATE twin_metadata SET
                     desired = coalesce(json_extract(?2, '$.metadata'), desired),
                     reported = coalesce(json_extract(?3, '$.metadata'), reported)
                 WHERE row = ?1",
            )?
            .execute(params![row, desired, reported])?;
        Ok(())
    }

    /// Replaces a row's desired metadata with `metadata` (JSON text of the metadata alone, packed
    /// as the store keeps it, not the whole section as [`WriteTx::set_metadata`] takes it).
    pub(crate) fn set_desired_metadata_text(
        &self,
        row: i64,
        metadata: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE twin_metadata SET desired = ?2 WHERE row = ?1")?
            .execute(params![row, metadata])?;
        Ok(())
    }

    /// Replaces the given twin sections and sets the twin's version and etag, if the twin is still
    /// at `twin_version - 1` (the version the caller read); otherwise nothing is written and the
    /// answer is [`StoreError::Conflict`].
    pub fn update_twin(
        &mut self,
        id: &str,
        sections: TwinSections<'_>,
        twin_version: i64,
        twin_etag: &str,
    ) -> Result<(), StoreError> {
        self.update_twin_keyed(id, sections, twin_version, twin_etag)
            .map(drop)
    }

    /// [`WriteTx::update_twin`] that answers the device's row key, for a caller that keeps a
    /// copy of the twin it wrote ([`HeldTwin`]).
    pub fn update_twin_keyed(
        &mut self,
        id: &str,
        sections: TwinSections<'_>,
        twin_version: i64,
        twin_etag: &str,
    ) -> Result<i64, StoreError> {
        let tags = sections.tags.map(json_text).transpose()?;
        let section = |s: &Value| crate::rows::section_text(s).map_err(StoreError::from);
        let desired = sections.desired.map(section).transpose()?;
        let reported = sections.reported.map(section).transpose()?;
        let row = self.update_sections(
            id,
            tags.as_deref(),
            desired.as_deref(),
            reported.as_deref(),
            twin_version,
            twin_etag,
        )?;
        self.expect_one(
            usize::from(row.is_some()),
            Versioned::Twin {
                id,
                read: twin_version - 1,
            },
        )?;
        self.set_metadata(row, desired.as_deref(), reported.as_deref())?;
        Ok(row.unwrap_or_default())
    }

    /// Replaces the sections given as stored text (`None` keeps one) and the twin's version and
    /// etag, if the twin is at `twin_version - 1`; the row's key, or `None` if nothing matched.
    /// The metadata is the caller's to write next ([`WriteTx::set_metadata`]).
    pub(crate) fn update_sections(
        &self,
        id: &str,
        tags: Option<&str>,
        desired: Option<&str>,
        reported: Option<&str>,
        twin_version: i64,
        twin_etag: &str,
    ) -> Result<Option<i64>, StoreError> {
        // The row is found first and then written by its key, naming only the columns that
        // change: `RETURNING` (and a trigger, which a `reported` or `tags` column in the SET list
        // would bring in) makes SQLite open a statement journal, and closing one inside a write's
        // savepoint walks the in-memory sub-journal from its start, so a twin job's 1,000-device
        // write cost time quadratic in its size (a third of the job's writer time, perf).
        let row: Option<i64> = self
            .conn
            .prepare_cached("SELECT row FROM devices WHERE device_id = ?1 AND twin_version = ?2")?
            .query_row(params![id, twin_version - 1], |r| r.get(0))
            .optional()?;
        let Some(row) = row else {
            return Ok(None);
        };
        if tags.is_some() {
            let read = twin_version - 1;
            self.unindex_tags(id, Versioned::Twin { id, read })?;
        }
        // Parameters a statement does not name are bound all the same (SQLite counts up to the
        // highest, `?6`), so one parameter list serves all eight.
        let sql = &section_updates()[section_mask(tags, desired, reported)];
        let changed = self.conn.prepare_cached(sql)?.execute(params![
            row,
            tags,
            desired,
            reported,
            twin_version,
            twin_etag
        ])?;
        if let Some(tags) = tags.filter(|_| changed == 1) {
            self.index_tags(id, tags)?;
        }
        Ok((changed == 1).then_some(row))
    }

    /// Runs `f`, a write that frees space by deleting, with a size-capped store's cap raised by
    /// [`super::DELETE_HEADROOM_PAGES`]: deleting rows can need a few pages (b-tree rebalancing,
    /// the change-feed row) before the freed ones are reused, and a store at its limit must still
    /// let the operator free space. The cap is restored whatever `f` returns.
    pub fn deleting<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        let cap: i64 = self
            .conn
            .pragma_query_value(None, "max_page_count", |r| r.get(0))
            .map_err(StoreError::from)?;
        let raised = cap < i64::from(u32::MAX) - super::DELETE_HEADROOM_PAGES;
        if raised {
            self.conn
                .pragma_update(None, "max_page_count", cap + super::DELETE_HEADROOM_PAGES)
                .map_err(StoreError::from)?;
        }
        let out = f(self);
        if raised {
            self.conn
                .pragma_update(None, "max_page_count", cap)
                .map_err(StoreError::from)?;
        }
        out
    }

    /// Deletes a device at `revision` (the one the caller read) and its queued cloud-to-device
    /// messages (its telemetry stays, as a record); [`StoreError::Conflict`], and nothing deleted,
    /// if the device changed or went since it was read.
    pub fn delete_device(&mut self, id: &str, revision: i64) -> Result<(), StoreError> {
        self.unindex_tags(id, Versioned::Device { id, read: revision })?;
        let row: Option<i64> = self
            .conn
            .prepare_cached(
                "DELETE FROM devices WHERE device_id = ?1 AND revision = ?2 RETURNING row",
            )?
            .query_row(params![id, revision], |r| r.get(0))
            .optional()?;
        self.expect_one(
            usize::from(row.is_some()),
            Versioned::Device { id, read: revision },
        )?;
        self.epoch.bump();
        self.conn
            .prepare_cached("DELETE FROM twin_metadata WHERE row = ?1")?
            .execute([row])?;
        self.conn
            .prepare_cached("DELETE FROM c2d WHERE device_id = ?1")?
            .execute([id])?;
        Ok(())
    }

    /// The answer to a write that carried the version it read: `Ok` if it changed its one row,
    /// else [`StoreError::Conflict`] naming what the row is now. The extra read runs only on
    /// that failure path.
    pub(crate) fn expect_one(&self, changed: usize, row: Versioned<'_>) -> Result<(), StoreError> {
        if changed == 1 {
            return Ok(());
        }
        let (what, id, read, column) = match row {
            Versioned::Twin { id, read } => ("twin", id, read, "twin_version"),
            Versioned::Device { id, read } => ("device", id, read, "revision"),
        };
        let now: Option<i64> = self
            .conn
            .prepare_cached(&format!(
                "SELECT {column} FROM devices WHERE device_id = ?1"
            ))?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let now = match now {
            Some(v) => format!("now at {v}"),
            None => "since deleted".to_string(),
        };
        Err(StoreError::Conflict(format!(
            "{what} '{id}' (read at version {read}, {now})"
        )))
    }

    /// Records a telemetry message and returns its `seq`; `None` (and nothing written) if the
    /// device already sent one with this message id.
    pub fn insert_telemetry(&mut self, row: &TelemetryRow) -> Result<Option<i64>, StoreError> {
        // ON CONFLICT rather than INSERT OR IGNORE: only the duplicate is ignored, any other
        // constraint failure still surfaces as an error.
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO telemetry (device_id, message_id, enqueued_ms, properties, body)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (device_id, message_id) DO NOTHING",
        )?;
        let inserted = stmt.execute(params![
            row.device_id,
            row.message_id,
            row.enqueued_ms,
            json_text(&row.properties)?,
            row.body,
        ])?;
        Ok((inserted == 1).then(|| self.conn.last_insert_rowid()))
    }

    /// Deletes up to `limit` telemetry messages enqueued before `older_than_ms` (bounded, so one
    /// write never holds the writer for long); returns how many went.
    pub fn prune_telemetry(&mut self, older_than_ms: i64, limit: usize) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "DELETE FROM telemetry WHERE seq IN (
                 SELECT seq FROM telemetry WHERE enqueued_ms < ?1 LIMIT ?2)",
        )?;
        Ok(stmt.execute(params![older_than_ms, sql_limit(limit)])? as u64)
    }

    /// Queues a cloud-to-device message; returns its sequence number.
    pub fn enqueue_c2d(&mut self, row: &C2dRow) -> Result<i64, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO c2d (device_id, message_id, properties, body, enqueued_ms, expiry_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        stmt.execute(params![
            row.device_id,
            row.message_id,
            json_text(&row.properties)?,
            row.body,
            row.enqueued_ms,
            row.expiry_ms,
        ])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Removes a delivered cloud-to-device message (the oldest, should a sender have reused the
    /// id); `false` if no such message is queued.
    pub fn complete_c2d(&mut self, device_id: &str, message_id: &str) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "DELETE FROM c2d WHERE seq = (
                 SELECT seq FROM c2d WHERE device_id = ?1 AND message_id = ?2
                 ORDER BY seq LIMIT 1)",
        )?;
        Ok(stmt.execute([device_id, message_id])? == 1)
    }

    /// Deletes cloud-to-device messages expired at `now_ms`; returns how many went.
    pub fn expire_c2d(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM c2d WHERE expiry_ms > 0 AND expiry_ms <= ?1")?;
        Ok(stmt.execute([now_ms])? as u64)
    }

    /// Stores a client's MQTT session, replacing any earlier one.
    pub fn put_session(&mut self, client_id: &str, session: &Value) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO sessions (client_id, session) VALUES (?1, ?2)
             ON CONFLICT (client_id) DO UPDATE SET session = excluded.session",
        )?;
        stmt.execute(params![client_id, json_text(session)?])?;
        Ok(())
    }

    /// Forgets a client's MQTT session (nothing happens if there is none).
    pub fn delete_session(&mut self, client_id: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM sessions WHERE client_id = ?1")?
            .execute([client_id])?;
        Ok(())
    }

    /// Appends to the event log; returns the event's sequence number.
    pub fn append_event(
        &mut self,
        device_id: Option<&str>,
        kind: &str,
        body: &Value,
        time_ms: i64,
    ) -> Result<i64, StoreError> {
        self.append_event_text(device_id, kind, &json_text(body)?, time_ms)
    }

    /// [`WriteTx::append_event`] with the body as JSON text (the caller guarantees it is valid
    /// JSON), for a caller that serialized it directly.
    pub fn append_event_text(
        &mut self,
        device_id: Option<&str>,
        kind: &str,
        body: &str,
        time_ms: i64,
    ) -> Result<i64, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO events (time_ms, device_id, kind, body) VALUES (?1, ?2, ?3, ?4)",
        )?;
        stmt.execute(params![time_ms, device_id, kind, body])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Deletes up to `limit` events older than `older_than_ms` (bounded, so one write never holds
    /// the writer for long); returns how many went. Sequence numbers are never reused, so a
    /// reader's cursor stays valid: it just finds the pruned events gone.
    pub fn prune_events(&mut self, older_than_ms: i64, limit: usize) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(PRUNE_EVENTS)?;
        Ok(stmt.execute(params![older_than_ms, sql_limit(limit)])? as u64)
    }

    /// Sets a hub setting, replacing any earlier value.
    pub fn put_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?;
        stmt.execute([key, value])?;
        Ok(())
    }
}

/// Which of a twin write's sections are given, as an index into [`section_updates`].
fn section_mask(tags: Option<&str>, desired: Option<&str>, reported: Option<&str>) -> usize {
    usize::from(tags.is_some())
        | usize::from(desired.is_some()) << 1
        | usize::from(reported.is_some()) << 2
}

/// The `UPDATE` of a device row by its key (`?1`) for each combination of given sections (tags
/// `?2`, desired `?3` and reported `?4` as stored text), setting the twin's version (`?5`) and
/// etag (`?6`); each names only its own columns, so no trigger on another column is coded in.
fn section_updates() -> &'static [String; 8] {
    static SQL: std::sync::OnceLock<[String; 8]> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        std::array::from_fn(|mask| {
            let mut set = String::new();
            if mask & 1 != 0 {
                set.push_str("tags = jsonb(?2), ");
            }
            if mask & 2 != 0 {
                set.push_str(
                    "desired = jsonb_extract(?3, '$.values'), desired_version = ?3 ->> '$.version', ",
                );
            }
            if mask & 4 != 0 {
                set.push_str(
                    "reported = jsonb_extract(?4, '$.values'), reported_version = ?4 ->> '$.version', ",
                );
            }
            format!(
                "UPDATE devices SET {set}twin_version = ?5, twin_etag = ?6 \
                 WHERE row = ?1 AND twin_version = ?5 - 1"
            )
        })
    })
}

/// The tag rows of device `?1` whose twin is at version `?2` (one key per leaf: point deletes).
const UNINDEX_AT_TWIN_VERSION: &str = "DELETE FROM device_tags
    WHERE (path, value, kind, device_id) IN (
        SELECT t.fullkey, coalesce(t.atom, ''), t.type, d.device_id
        FROM devices AS d, json_tree(d.tags) AS t
        WHERE d.device_id = ?1 AND d.twin_version = ?2 AND t.type NOT IN ('object', 'array'))";

/// The tag rows of device `?1` whose registry revision is `?2`.
const UNINDEX_AT_REVISION: &str = "DELETE FROM device_tags
    WHERE (path, value, kind, device_id) IN (
        SELECT t.fullkey, coalesce(t.atom, ''), t.type, d.device_id
        FROM devices AS d, json_tree(d.tags) AS t
        WHERE d.device_id = ?1 AND d.revision = ?2 AND t.type NOT IN ('object', 'array'))";

/// Removes a batch of old events, found through the `events_time` index.
pub(crate) const PRUNE_EVENTS: &str = "DELETE FROM events WHERE seq IN (
    SELECT seq FROM events WHERE time_ms < ?1 LIMIT ?2)";

/// A row a write read at a version and expects to find unchanged.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Versioned<'a> {
    /// A twin, by its `twin_version`.
    Twin { id: &'a str, read: i64 },
    /// A device's registry entry, by its `revision`.
    Device { id: &'a str, read: i64 },
}
