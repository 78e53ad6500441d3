//! Migration 11: the twin layout of issue 12, run in chunks so it survives being killed.
//!
//! Until version 10 a device row held its tags, desired and reported sections as JSON text,
//! each section with its `$metadata` tree inline (`{"values":…,"metadata":…,"version":N}`), so
//! every scan read and parsed the metadata too. From version 11:
//! - `devices` is keyed by an `INTEGER PRIMARY KEY` (`row`), with `device_id` unique; tags and
//!   the section values are SQLite JSONB, each section's version an integer column;
//! - `twin_metadata` holds each section's metadata as JSON text under the same `row`, so a scan
//!   of the devices b-tree never reads it.
//!
//! The copy runs into `devices_v11` in chunks of [`CHUNK`] devices, one transaction each, in
//! device-id order, and the database stays at version 10 until the last step swaps the tables
//! and sets version 11 in one transaction. A process killed part way leaves whole chunks copied
//! and the old table untouched; the next start picks up after the last copied id. A row an
//! older build changed or deleted in between is found by its versions and copied again.

use rusqlite::{params, Connection, TransactionBehavior};

use crate::StoreError;

/// The schema version this migration brings a database to.
pub(crate) const VERSION: i64 = 11;

/// Devices copied per transaction.
pub(crate) const CHUNK: usize = 10_000;

const CREATE: &str = r#"
    CREATE TABLE IF NOT EXISTS devices_v11 (
        row              INTEGER PRIMARY KEY,
        device_id        TEXT NOT NULL UNIQUE,
        status           TEXT NOT NULL,
        twin_version     INTEGER NOT NULL,
        revision         INTEGER NOT NULL,
        desired_version  INTEGER NOT NULL,
        reported_version INTEGER NOT NULL,
        tags             BLOB NOT NULL,
        reported         BLOB NOT NULL,
        desired          BLOB NOT NULL,
        twin_etag        TEXT NOT NULL,
        identity         TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS twin_metadata (
        row      INTEGER PRIMARY KEY,
        desired  TEXT NOT NULL,
        reported TEXT NOT NULL
    );
"#;

/// The columns a copy writes, and what it reads for them from a version-10 row (sections
/// without values, metadata or version, which no hub wrote, become empty ones).
const COPY: &str = "INSERT INTO devices_v11 (device_id, status, twin_version, revision,
        desired_version, reported_version, tags, reported, desired, twin_etag, identity)
    SELECT device_id, status, twin_version, revision,
        coalesce(desired ->> '$.version', 0), coalesce(reported ->> '$.version', 0),
        jsonb(tags),
        coalesce(jsonb_extract(reported, '$.values'), jsonb('{}')),
        coalesce(jsonb_extract(desired, '$.values'), jsonb('{}')),
        twin_etag, identity
    FROM devices";

/// The metadata of every row copied after `?1` (rows are numbered in copy order).
const COPY_METADATA: &str = "INSERT INTO twin_metadata (row, desired, reported)
    SELECT n.row, coalesce(json_extract(o.desired, '$.metadata'), '{}'),
        coalesce(json_extract(o.reported, '$.metadata'), '{}')
    FROM devices_v11 AS n JOIN devices AS o ON o.device_id = n.device_id
    WHERE n.row > ?1";

/// The old table goes with its indexes and triggers; the new one gets the same index and the
/// same triggers as migrations 2 and 10 made (their text repeated: a released migration is never
/// edited, and these are what the tables hold from version 11 on).
const SWAP: &str = r#"
    DROP TABLE devices;
    ALTER TABLE devices_v11 RENAME TO devices;
    CREATE INDEX devices_status ON devices (status);

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
    CREATE TRIGGER devices_configurations_after_delete AFTER DELETE ON devices BEGIN
        DELETE FROM device_configurations WHERE device_id = OLD.device_id;
    END;
"#;

/// Brings a version-10 database to version 11, resuming a copy an earlier run began. Copies at
/// most `budget` devices when given and returns `false` without finishing (a test's stand-in
/// for a process killed part way); `true` once the database is at version 11.
pub(crate) fn migrate(conn: &mut Connection, budget: Option<usize>) -> Result<bool, StoreError> {
    conn.execute_batch(CREATE)?;
    let mut copied = 0;
    loop {
        let room = budget.map_or(CHUNK, |b| CHUNK.min(b - copied));
        if room == 0 {
            return Ok(false);
        }
        let n = copy_chunk(conn, room)?;
        copied += n;
        if n < room {
            break;
        }
        tracing::info!(copied, "twin layout migration: copying devices");
    }
    finish(conn)?;
    Ok(true)
}

/// Copies up to `limit` devices after the last one copied, with their metadata, in one
/// transaction; returns how many.
fn copy_chunk(conn: &mut Connection, limit: usize) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let last_row = last_row(&tx)?;
    let after: String = tx.query_row(
        "SELECT coalesce(max(device_id), '') FROM devices_v11",
        [],
        |r| r.get(0),
    )?;
    let sql = format!("{COPY} WHERE device_id > ?1 ORDER BY device_id LIMIT ?2");
    let n = tx.execute(&sql, params![after, limit as i64])?;
    tx.execute(COPY_METADATA, [last_row])?;
    tx.commit()?;
    Ok(n)
}

fn last_row(conn: &Connection) -> Result<i64, StoreError> {
    Ok(
        conn.query_row("SELECT coalesce(max(row), 0) FROM devices_v11", [], |r| {
            r.get(0)
        })?,
    )
}

/// Copies again what changed since it was copied (only an older build, started in between,
/// can have written), then swaps the tables and sets the version, in one transaction.
fn finish(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= VERSION {
        return Ok(());
    }
    tx.execute_batch(
        "CREATE TEMP TABLE stale AS
             SELECT n.row FROM devices_v11 AS n LEFT JOIN devices AS o ON o.device_id = n.device_id
             WHERE o.device_id IS NULL OR o.twin_version IS NOT n.twin_version
                OR o.revision IS NOT n.revision OR o.status IS NOT n.status
                OR o.twin_etag IS NOT n.twin_etag;
         DELETE FROM twin_metadata WHERE row IN (SELECT row FROM temp.stale);
         DELETE FROM devices_v11 WHERE row IN (SELECT row FROM temp.stale);
         DROP TABLE temp.stale;",
    )?;
    let last_row = last_row(&tx)?;
    let missing = format!(
        "{COPY} WHERE NOT EXISTS (SELECT 1 FROM devices_v11 AS n \
         WHERE n.device_id = devices.device_id) ORDER BY device_id"
    );
    let recopied = tx.execute(&missing, [])?;
    tx.execute(COPY_METADATA, [last_row])?;
    if recopied > 0 {
        tracing::info!(
            recopied,
            "twin layout migration: copied changed devices again"
        );
    }
    tx.execute_batch(SWAP)?;
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}
