//! The schema, as numbered migrations tracked by `PRAGMA user_version`.
//!
//! Migration N (1-based) is `MIGRATIONS[N - 1]`; a database at version V gets the migrations after
//! V, all in one transaction, so opening is idempotent and a failed upgrade leaves nothing behind.
//! Never edit a released migration: append a new one.

use rusqlite::{Connection, TransactionBehavior};

use super::{entry_packing, metadata_packing, twin_layout};
use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    //
    // `devices` keeps its rowid: a twin is usually far larger than the ~200 bytes below which
    // SQLite recommends WITHOUT ROWID. The AUTOINCREMENT logs never reuse a sequence number after
    // pruning or completion, so a reader's `after_seq` cursor never skips or repeats a row.
    r#"
    CREATE TABLE devices (
        device_id    TEXT PRIMARY KEY NOT NULL,
        status       TEXT NOT NULL,
        identity     TEXT NOT NULL,
        tags         TEXT NOT NULL,
        desired      TEXT NOT NULL,
        reported     TEXT NOT NULL,
        twin_version INTEGER NOT NULL,
        twin_etag    TEXT NOT NULL
    );
    CREATE INDEX devices_status ON devices (status);

    CREATE TABLE telemetry (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id   TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        enqueued_ms INTEGER NOT NULL,
        properties  TEXT NOT NULL,
        body        BLOB NOT NULL,
        UNIQUE (device_id, message_id)
    );
    CREATE INDEX telemetry_enqueued ON telemetry (enqueued_ms);
    CREATE INDEX telemetry_device_seq ON telemetry (device_id, seq);

    CREATE TABLE c2d (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id   TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        properties  TEXT NOT NULL,
        body        BLOB NOT NULL,
        enqueued_ms INTEGER NOT NULL,
        expiry_ms   INTEGER NOT NULL
    );
    CREATE INDEX c2d_device_seq ON c2d (device_id, seq);
    CREATE INDEX c2d_expiry ON c2d (expiry_ms) WHERE expiry_ms > 0;

    CREATE TABLE sessions (
        client_id TEXT PRIMARY KEY NOT NULL,
        session   TEXT NOT NULL
    );

    CREATE TABLE events (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms   INTEGER NOT NULL,
        device_id TEXT,
        kind      TEXT NOT NULL,
        body      TEXT NOT NULL
    );

    CREATE TABLE settings (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );
    "#,
    // 2: the tag index and jobs.
    //
    // `device_tags` holds one row per primitive leaf of every device's tags, kept by triggers so
    // no write path can forget it. `path` is SQLite's `json_tree` fullkey (`$.location.building`,
    // `$."odd key"`), `kind` its `json_type` (text, integer, real, true, false, null) and `value`
    // its atom (the column has no declared type, so SQLite never converts '1.0' to 1). The query compiler turns selective tag conditions into lookups on
    // `(path, value)` instead of scanning every twin.
    //
    // `jobs` holds one row per job (the hub owns the `body` document); `job_devices` holds the
    // device snapshot a job resolved when it started, one row per device, with the device's
    // outcome. Times in `job_devices` are IoT Hub timestamps (fixed width, so they sort as text),
    // because queries over `devices.jobs` compare them.
    r#"
    CREATE TABLE device_tags (
        path      TEXT NOT NULL,
        value,
        kind      TEXT NOT NULL,
        device_id TEXT NOT NULL
    );
    CREATE INDEX device_tags_path_value ON device_tags (path, value);
    CREATE INDEX device_tags_device ON device_tags (device_id);

    INSERT INTO device_tags (path, value, kind, device_id)
        SELECT t.fullkey, t.atom, t.type, d.device_id
        FROM devices AS d, json_tree(d.tags) AS t
        WHERE t.type NOT IN ('object', 'array');

    CREATE TRIGGER devices_tags_after_insert AFTER INSERT ON devices BEGIN
        INSERT INTO device_tags (path, value, kind, device_id)
            SELECT fullkey, atom, type, NEW.device_id FROM json_tree(NEW.tags)
            WHERE type NOT IN ('object', 'array');
    END;
    CREATE TRIGGER devices_tags_after_update AFTER UPDATE OF tags, device_id ON devices
    WHEN NEW.tags IS NOT OLD.tags OR NEW.device_id IS NOT OLD.device_id BEGIN
        DELETE FROM device_tags WHERE device_id = OLD.device_id;
        INSERT INTO device_tags (path, value, kind, device_id)
            SELECT fullkey, atom, type, NEW.device_id FROM json_tree(NEW.tags)
            WHERE type NOT IN ('object', 'array');
    END;
    CREATE TRIGGER devices_tags_after_delete AFTER DELETE ON devices BEGIN
        DELETE FROM device_tags WHERE device_id = OLD.device_id;
    END;

    CREATE TABLE jobs (
        job_id     TEXT PRIMARY KEY NOT NULL,
        job_type   TEXT NOT NULL,
        status     TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        start_ms   INTEGER NOT NULL,
        end_ms     INTEGER,
        body       TEXT NOT NULL
    );
    CREATE INDEX jobs_status_start ON jobs (status, start_ms);
    CREATE INDEX jobs_created ON jobs (created_ms);

    CREATE TABLE job_devices (
        job_id       TEXT NOT NULL,
        device_id    TEXT NOT NULL,
        job_type     TEXT NOT NULL,
        status       TEXT NOT NULL,
        created_time TEXT NOT NULL,
        start_time   TEXT,
        end_time     TEXT,
        updated_time TEXT NOT NULL,
        outcome      TEXT,
        error        TEXT,
        PRIMARY KEY (job_id, device_id)
    ) WITHOUT ROWID;
    CREATE INDEX job_devices_status ON job_devices (job_id, status, device_id);
    CREATE INDEX job_devices_device ON job_devices (device_id);
    "#,
    // 3: live job statistics.
    //
    // `job_counts` holds how many of a job's devices are in each status, so that reading a
    // running job's statistics costs a few rows instead of counting a million. The store's own
    // write functions keep it (`WriteTx` sums each write's changes and applies them with the
    // write's savepoint); triggers would be simpler but halved twin-job throughput.
    r#"
    CREATE TABLE job_counts (
        job_id TEXT NOT NULL,
        status TEXT NOT NULL,
        n      INTEGER NOT NULL,
        PRIMARY KEY (job_id, status)
    ) WITHOUT ROWID;

    INSERT INTO job_counts (job_id, status, n)
        SELECT job_id, status, count(*) FROM job_devices GROUP BY job_id, status;
    "#,
    // 4: the change feed's retention.
    //
    // Readers page the event log by `seq` (its primary key); pruning removes events older than
    // the retention in bounded batches, found through this index.
    r#"
    CREATE INDEX events_time ON events (time_ms);
    "#,
    // 5: who owns a device's part in a job while it runs (a method call in flight): the
    // node that started it, so recovery after a crash fails only its own node's calls. NULL
    // for rows that are not running (and for rows written before this migration).
    r#"
    ALTER TABLE job_devices ADD COLUMN owner TEXT;
    "#,
    // 6: a device's part in a job may wait for a time of its own (a maintenance window): a
    // `scheduled` row with `not_before_ms`. The partial index finds the earliest such time of a
    // job and the rows that are due without reading any other row.
    r#"
    ALTER TABLE job_devices ADD COLUMN not_before_ms INTEGER;
    CREATE INDEX job_devices_not_before ON job_devices (job_id, not_before_ms)
        WHERE status = 'scheduled';
    "#,
    // 7: the firmware store's metadata. One row per artifact, keyed by the SHA-256 of its bytes
    // (the bytes live in files under the hub's data directory, named by the same digest).
    // `models` is a JSON array of the compatible models; `version_key` is the semantic-version
    // sort key, so listings come out in version order.
    r#"
    CREATE TABLE firmware (
        sha256      TEXT PRIMARY KEY NOT NULL,
        version     TEXT NOT NULL,
        version_key TEXT NOT NULL,
        models      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        signature   TEXT NOT NULL,
        signed_by   TEXT NOT NULL,
        uploaded_ms INTEGER NOT NULL,
        notes       TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX firmware_version ON firmware (version);
    CREATE INDEX firmware_order ON firmware (version_key, sha256);
    "#,
    // 8: rollouts (docs/rollouts.md). `rollouts` holds the spec as created and the engine's
    // rollout-level state as JSON; `rollout_devices` one record per device; `rollout_pushes` the
    // push journal, keyed by (rollout, device, attempt) so a replayed push is the same row, with
    // a partial index on the pushes not handed on yet; `rollout_events` the audit trail, its
    // AUTOINCREMENT `seq` a cursor that never repeats.
    r#"
    CREATE TABLE rollouts (
        rollout_id TEXT PRIMARY KEY NOT NULL,
        spec       TEXT NOT NULL,
        status     TEXT NOT NULL,
        state      TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE INDEX rollouts_unfinished ON rollouts (created_ms)
        WHERE status IN ('running', 'paused');

    CREATE TABLE rollout_devices (
        rollout_id TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        record     TEXT NOT NULL,
        PRIMARY KEY (rollout_id, device_id)
    ) WITHOUT ROWID;

    CREATE TABLE rollout_pushes (
        rollout_id TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        attempt    INTEGER NOT NULL,
        version    TEXT NOT NULL,
        rollback   INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        sent_ms    INTEGER,
        PRIMARY KEY (rollout_id, device_id, attempt)
    ) WITHOUT ROWID;
    CREATE INDEX rollout_pushes_unsent ON rollout_pushes (rollout_id, created_ms)
        WHERE sent_ms IS NULL;

    CREATE TABLE rollout_events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        rollout_id TEXT NOT NULL,
        at_ms      INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        wave       TEXT,
        device_id  TEXT,
        message    TEXT NOT NULL
    );
    CREATE INDEX rollout_events_by_rollout ON rollout_events (rollout_id, seq);
    "#,
    // 9: a device's registry revision as a column, so an identity update or a delete can carry
    // the revision it read in its WHERE clause (optimistic concurrency, as `twin_version` does
    // for twins). Until now the hub kept it inside `identity` as `$revision`: copied once here.
    r#"
    ALTER TABLE devices ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
    UPDATE devices SET revision = coalesce(json_extract(identity, '$."$revision"'), 0);
    "#,
    // 10: configurations (IoT Hub automatic device management). `configurations` holds one row
    // per configuration; `body` is the configuration as the hub keeps it (labels, content,
    // target condition, metric queries). A deleted configuration stays as a tombstone
    // (`deleted = 1`) until no device holds it any more, because removing its settings from the
    // devices that had them needs its content. `device_configurations` is each twin's
    // `configurations.{id}.status` (Targeted or Applied): one row per device a configuration
    // targets, so a configuration's targeted and applied counts are a range of its key.
    r#"
    CREATE TABLE configurations (
        config_id  TEXT PRIMARY KEY NOT NULL,
        body       TEXT NOT NULL,
        priority   INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        etag       TEXT NOT NULL,
        deleted    INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;

    CREATE TABLE device_configurations (
        config_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        status    TEXT NOT NULL,
        PRIMARY KEY (config_id, device_id)
    ) WITHOUT ROWID;
    CREATE INDEX device_configurations_device ON device_configurations (device_id);

    CREATE TRIGGER devices_configurations_after_delete AFTER DELETE ON devices BEGIN
        DELETE FROM device_configurations WHERE device_id = OLD.device_id;
    END;
    "#,
];

/// The SQL migrations after the twin layout (migration 11): `AFTER_LAYOUT[0]` is migration 12,
/// `AFTER_LAYOUT[1]` migration 13, and so on.
const AFTER_LAYOUT: &[&str] = &[
    // 12: devices counted by status and reported firmware (`device_counts`), kept by triggers in
    // the transaction of every insert, delete and status or firmware change, so the dashboard's
    // overview and `GET /statistics/devices` read a few rows instead of scanning every device
    // (a GROUP BY over a million twins took seconds). A firmware field is kept as the JSON text
    // of its value (`"2.1.0"`, quotes included, so a number and a string stay apart), '' when
    // the device reports none (a key column cannot be NULL; '' is no JSON text).
    r#"
    CREATE TABLE device_counts (
        status           TEXT NOT NULL,
        firmware_version TEXT NOT NULL,
        firmware_status  TEXT NOT NULL,
        devices          INTEGER NOT NULL,
        PRIMARY KEY (status, firmware_version, firmware_status)
    ) WITHOUT ROWID;
    INSERT INTO device_counts (status, firmware_version, firmware_status, devices)
        SELECT status, coalesce(reported -> '$.firmware.current_version', ''),
            coalesce(reported -> '$.firmware.status', ''), count(*)
        FROM devices GROUP BY 1, 2, 3;

    CREATE TRIGGER device_counts_after_insert AFTER INSERT ON devices BEGIN
        INSERT INTO device_counts (status, firmware_version, firmware_status, devices)
            VALUES (NEW.status, coalesce(NEW.reported -> '$.firmware.current_version', ''),
                coalesce(NEW.reported -> '$.firmware.status', ''), 1)
            ON CONFLICT DO UPDATE SET devices = devices + 1;
    END;
    CREATE TRIGGER device_counts_after_delete AFTER DELETE ON devices BEGIN
        UPDATE device_counts SET devices = devices - 1
            WHERE status = OLD.status
              AND firmware_version = coalesce(OLD.reported -> '$.firmware.current_version', '')
              AND firmware_status = coalesce(OLD.reported -> '$.firmware.status', '');
        DELETE FROM device_counts WHERE devices <= 0;
    END;
    CREATE TRIGGER device_counts_after_update AFTER UPDATE OF status, reported ON devices
    WHEN NEW.status IS NOT OLD.status
      OR (NEW.reported -> '$.firmware.current_version')
         IS NOT (OLD.reported -> '$.firmware.current_version')
      OR (NEW.reported -> '$.firmware.status') IS NOT (OLD.reported -> '$.firmware.status')
    BEGIN
        UPDATE device_counts SET devices = devices - 1
            WHERE status = OLD.status
              AND firmware_version = coalesce(OLD.reported -> '$.firmware.current_version', '')
              AND firmware_status = coalesce(OLD.reported -> '$.firmware.status', '');
        DELETE FROM device_counts WHERE devices <= 0;
        INSERT INTO device_counts (status, firmware_version, firmware_status, devices)
            VALUES (NEW.status, coalesce(NEW.reported -> '$.firmware.current_version', ''),
                coalesce(NEW.reported -> '$.firmware.status', ''), 1)
            ON CONFLICT DO UPDATE SET devices = devices + 1;
    END;
    "#,
    // 13: the tag index as one b-tree. `device_tags` was a rowid table with two indexes, kept
    // by triggers: three b-tree inserts per tag leaf, nine leaves a device in the bench fleet.
    // Now its key is the whole row, `WITHOUT ROWID`, so a leaf costs one insert; the store's
    // writes keep it (`WriteTx::index_tags`, `unindex_tags`) instead of triggers. A null leaf is
    // stored with the value '' (a key column cannot be NULL); its kind tells it from the text ''.
    r#"
    DROP TRIGGER devices_tags_after_insert;
    DROP TRIGGER devices_tags_after_update;
    DROP TRIGGER devices_tags_after_delete;
    DROP TABLE device_tags;
    CREATE TABLE device_tags (
        path      TEXT NOT NULL,
        value     NOT NULL,
        kind      TEXT NOT NULL,
        device_id TEXT NOT NULL,
        PRIMARY KEY (path, value, kind, device_id)
    ) WITHOUT ROWID;
    INSERT INTO device_tags (path, value, kind, device_id)
        SELECT t.fullkey, coalesce(t.atom, ''), t.type, d.device_id
        FROM devices AS d, json_tree(d.tags) AS t
        WHERE t.type NOT IN ('object', 'array')
        ORDER BY 1, 2, 3, 4;
    "#,
    // 14: a device's rollouts. `rollout_devices` is keyed by rollout first, so "every rollout
    // this device is in" (the device page's rollout attempts) scanned every rollout's rows; the
    // index on the device finds them directly. `updated_ms` is when the engine last wrote the
    // record (NULL for records written before this migration): when a device's attempt ended.
    r#"
    ALTER TABLE rollout_devices ADD COLUMN updated_ms INTEGER;
    CREATE INDEX rollout_devices_device ON rollout_devices (device_id);
    "#,
    // 15: `twin_metadata` packed (a node's stamp only where it differs from the section's most
    // common one; `fleethub_core::twin::stored_metadata`). This only creates the table the
    // packed rows go to; `metadata_packing.rs` copies them in resumable chunks and swaps the
    // tables.
    r#"
    CREATE TABLE twin_metadata_packed (
        row      INTEGER PRIMARY KEY,
        desired  TEXT NOT NULL,
        reported TEXT NOT NULL
    );
    "#,
    // 16: registry entries packed (only the fields that differ from a new device's entry and
    // from the row's `device_id` and `status`; `fleethub_core::stored_entry`). This only
    // creates the table that holds the packing's progress (the last `devices.row` packed);
    // `entry_packing.rs` packs the entries in place in resumable chunks and drops it.
    r#"
    CREATE TABLE entry_packing (after INTEGER NOT NULL);
    INSERT INTO entry_packing (after) VALUES (-1);
    "#,
];

/// The newest schema version this build knows.
const NEWEST: i64 = twin_layout::VERSION + AFTER_LAYOUT.len() as i64;

/// Brings the database up to the newest schema this build knows: the SQL migrations up to 10
/// in one transaction, the twin layout (migration 11, `twin_layout.rs`) in resumable chunks,
/// then the SQL migrations after it in one transaction, then the packing of `twin_metadata`
/// that migration 15 began (`metadata_packing.rs`) and of the registry entries that migration
/// 16 began (`entry_packing.rs`), each in resumable chunks.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_with(conn, None).map(|_| ())
}

/// [`migrate`], copying at most `budget` devices into the new twin layout when given; `false`
/// if it stopped before the end (as a killed process would).
pub(crate) fn migrate_with(
    conn: &mut Connection,
    budget: Option<usize>,
) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let sql_newest = MIGRATIONS.len() as i64;
    if current > NEWEST {
        return Err(StoreError::Other(format!(
            "database schema version {current} is newer than this build supports \
             (up to {NEWEST}); run a newer fleethub"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tracing::info!(version = index + 1, "applying store migration");
        tx.execute_batch(sql)?;
    }
    if current < sql_newest {
        tx.pragma_update(None, "user_version", sql_newest)?;
    }
    tx.commit()?;
    if current < twin_layout::VERSION {
        tracing::info!(
            version = twin_layout::VERSION,
            "applying store migration (twin layout)"
        );
        if !twin_layout::migrate(conn, budget)? {
            return Ok(false);
        }
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let done = (current - twin_layout::VERSION).max(0) as usize;
    for (index, sql) in AFTER_LAYOUT.iter().enumerate().skip(done) {
        tracing::info!(
            version = twin_layout::VERSION as usize + index + 1,
            "applying store migration"
        );
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", NEWEST)?;
    tx.commit()?;
    if !metadata_packing::resume(conn, budget)? {
        return Ok(false);
    }
    entry_packing::resume(conn, budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_keeps_the_schema_and_its_data() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute("INSERT INTO settings (key, value) VALUES ('k', 'v')", [])
            .unwrap();
        migrate(&mut conn).unwrap();
        let value: String = conn
            .query_row("SELECT value FROM settings WHERE key = 'k'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(value, "v");
    }

    fn tag_rows(conn: &Connection) -> Vec<(String, String, String, String)> {
        let mut stmt = conn
            .prepare(
                "SELECT device_id, path, kind, quote(value) FROM device_tags \
                 ORDER BY device_id, path",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn the_tag_index_follows_every_insert_update_and_delete() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let epoch = crate::sqlite::writes::TwinEpoch::default();
        let mut tx = crate::WriteTx {
            conn: &conn,
            node: "local",
            count_deltas: Vec::new(),
            effects: Vec::new(),
            epoch: &epoch,
        };
        let device = |id: &str, tags: serde_json::Value| {
            let mut row = crate::rows::test_device(id, serde_json::json!({}));
            row.tags = tags;
            row
        };
        let d1 = serde_json::json!({"v": "1.0", "loc": {"floor": 3}, "ok": true, "n": null});
        assert!(tx.insert_device(&device("d1", d1)).unwrap());
        assert!(tx
            .insert_device(&device("d2", serde_json::json!({"v": "2.0"})))
            .unwrap());
        let row = |d: &str, p: &str, k: &str, v: &str| {
            (d.to_string(), p.to_string(), k.to_string(), v.to_string())
        };
        assert_eq!(
            tag_rows(&conn),
            vec![
                row("d1", "$.loc.floor", "integer", "3"),
                row("d1", "$.n", "null", "''"),
                row("d1", "$.ok", "true", "1"),
                row("d1", "$.v", "text", "'1.0'"),
                row("d2", "$.v", "text", "'2.0'"),
            ]
        );
        let tags = serde_json::json!({"v": "1.1"});
        let only_tags = crate::TwinSections {
            tags: Some(&tags),
            ..Default::default()
        };
        // A stale version changes nothing, the index included.
        assert!(tx
            .update_twin("d1", only_tags, 5, "e")
            .unwrap_err()
            .is_conflict());
        assert_eq!(tag_rows(&conn).len(), 5);
        tx.update_twin("d1", only_tags, 2, "e").unwrap();
        let desired = serde_json::json!({"values": {"x": 1}, "metadata": {}, "version": 2});
        let only_desired = crate::TwinSections {
            desired: Some(&desired),
            ..Default::default()
        };
        tx.update_twin("d2", only_desired, 2, "e").unwrap();
        assert!(tx.delete_device("d2", 5).unwrap_err().is_conflict());
        tx.delete_device("d2", 1).unwrap();
        assert_eq!(tag_rows(&conn), vec![row("d1", "$.v", "text", "'1.1'")]);
    }

    #[test]
    fn job_counts_are_backfilled_from_an_older_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A database at version 2 that already has job rows.
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.execute_batch(MIGRATIONS[1]).unwrap();
        tx.pragma_update(None, "user_version", 2).unwrap();
        tx.commit().unwrap();
        let insert = "INSERT INTO job_devices (job_id, device_id, job_type, status, created_time, \
                      updated_time) VALUES (?1, ?2, 'scheduleUpdateTwin', ?3, 't', 't')";
        for (job, device, status) in [
            ("j1", "d1", "pending"),
            ("j1", "d2", "completed"),
            ("j1", "d3", "completed"),
            ("j2", "d1", "failed"),
        ] {
            conn.execute(insert, [job, device, status]).unwrap();
        }
        migrate(&mut conn).unwrap();
        let mut stmt = conn
            .prepare("SELECT job_id, status, n FROM job_counts ORDER BY 1, 2")
            .unwrap();
        let counts: Vec<(String, String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let c = |j: &str, s: &str, n: i64| (j.to_string(), s.to_string(), n);
        assert_eq!(
            counts,
            vec![
                c("j1", "completed", 2),
                c("j1", "pending", 1),
                c("j2", "failed", 1)
            ]
        );
    }

    #[test]
    fn event_pruning_finds_old_events_through_the_time_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let mut stmt = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                super::super::writes::PRUNE_EVENTS
            ))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map([0, 10], |r| r.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING COVERING INDEX events_time")
                    || p.contains("USING INDEX events_time")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|p| p.starts_with("SCAN events")),
            "{plan:?}"
        );
    }

    #[test]
    fn device_revisions_move_from_the_identity_into_their_column() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A database at version 8 with devices whose revision lives in the identity.
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..8] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 8).unwrap();
        tx.commit().unwrap();
        let insert = "INSERT INTO devices (device_id, status, identity, tags, desired, reported, \
                      twin_version, twin_etag) VALUES (?1, 'enabled', ?2, '{}', '{}', '{}', 1, 'e')";
        conn.execute(insert, ["d1", r#"{"deviceId":"d1","$revision":4}"#])
            .unwrap();
        conn.execute(insert, ["d2", r#"{"deviceId":"d2"}"#])
            .unwrap();
        migrate(&mut conn).unwrap();
        let revisions: Vec<(String, i64)> = conn
            .prepare("SELECT device_id, revision FROM devices ORDER BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(revisions, vec![("d1".into(), 4), ("d2".into(), 0)]);
    }

    /// Migration 12 counts the devices a database already holds, and its triggers read the very
    /// fields the hub writes a device's firmware report to.
    #[test]
    fn device_counts_are_backfilled_from_the_devices_there_are() {
        use fleethub_core::firmware::{REPORTED_STATUS_PATH, REPORTED_VERSION_PATH};
        for path in [REPORTED_VERSION_PATH, REPORTED_STATUS_PATH] {
            let json_path = path.replacen("properties.reported.", "$.", 1);
            assert!(
                AFTER_LAYOUT[0].contains(&format!("'{json_path}'")),
                "{json_path}"
            );
        }
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for sql in MIGRATIONS {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
            .unwrap();
        tx.commit().unwrap();
        assert!(twin_layout::migrate(&mut conn, None).unwrap());
        let insert = "INSERT INTO devices (device_id, status, identity, tags, desired, \
                      desired_version, reported, reported_version, twin_version, twin_etag, \
                      revision) VALUES (?1, ?2, '{}', jsonb('{}'), jsonb('{}'), 1, jsonb(?3), 1, \
                      1, 'e', 1)";
        let fw = r#"{"firmware":{"current_version":"1.2.0","status":"success"},"t":1}"#;
        conn.execute(insert, ["d1", "enabled", fw]).unwrap();
        conn.execute(insert, ["d2", "disabled", fw]).unwrap();
        conn.execute(insert, ["d3", "enabled", fw]).unwrap();
        conn.execute(insert, ["d4", "enabled", "{}"]).unwrap();
        migrate(&mut conn).unwrap();
        let rows: Vec<(String, String, String, i64)> = conn
            .prepare("SELECT * FROM device_counts ORDER BY 1, 2, 3")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let row = |s: &str, v: &str, f: &str, n: i64| (s.into(), v.into(), f.into(), n);
        assert_eq!(
            rows,
            vec![
                row("disabled", "\"1.2.0\"", "\"success\"", 1),
                row("enabled", "", "", 1),
                row("enabled", "\"1.2.0\"", "\"success\"", 2),
            ]
        );
    }

    #[test]
    fn a_database_from_a_newer_build_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("newer than this build"), "{err}");
    }
}
