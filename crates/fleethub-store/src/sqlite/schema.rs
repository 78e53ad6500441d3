//! The schema, as numbered migrations tracked by `PRAGMA user_version`.
//!
//! Migration N (1-based) is `MIGRATIONS[N - 1]`; a database at version V gets the migrations after
//! V, all in one transaction, so opening is idempotent and a failed upgrade leaves nothing behind.
//! Never edit a released migration: append a new one.

use rusqlite::{Connection, TransactionBehavior};

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
];

/// Brings the database up to the newest schema this build knows.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let newest = MIGRATIONS.len() as i64;
    if current > newest {
        return Err(StoreError::Other(format!(
            "database schema version {current} is newer than this build supports \
             (up to {newest}); run a newer fleethub"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tracing::info!(version = index + 1, "applying store migration");
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", newest)?;
    tx.commit()?;
    Ok(())
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

    #[test]
    fn a_database_from_a_newer_build_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("newer than this build"), "{err}");
    }
}
