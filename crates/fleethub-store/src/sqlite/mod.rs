//! The SQLite backend: one writer thread with group commit, a pool of read connections, and a
//! checkpoint thread (`checkpointer.rs`).
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`, so every commit fsyncs the
//! WAL before the writer reports it. `synchronous=NORMAL` would survive a killed process but could
//! lose the last commits on power loss, and the hub acknowledges devices and operators on commit
//! (DESIGN.md, invariant 2). Group commit pays that fsync once per batch, not once per write.

mod checkpointer;
mod compiled;
mod configurations;
mod entry_packing;
mod errors;
mod firmware;
mod functions;
mod jobs;
mod metadata_packing;
mod read_pool;
mod reads;
mod rollouts;
mod schema;
mod twin_layout;
mod writer;
mod writes;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleethub_query::{CompiledQuery, Dialect};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::{Presence, SplitScans, StoreConfig, StoreError};
use checkpointer::Checkpointer;
use functions::PresenceSlot;
use read_pool::ReadPool;
use writer::{Commits, WriteJob, Writer};

pub use compiled::{QueryRow, QueryRows};
pub use configurations::{
    ConfigurationCounts, ConfigurationReads, ConfigurationRow, ConfiguredDesired, StoredJson,
};
pub use firmware::{FirmwareReads, FirmwareReferences, FirmwareRow};
pub use jobs::{
    DeviceJobStatus, JobDeviceCounts, JobDeviceRow, JobDeviceUpdate, JobFilter, JobReads, JobRow,
    JobSnapshot, JobStatus, JobTwinTarget, NewJobDevice, NewJobDevices,
};
pub use reads::{ReadTx, Reads};
pub use rollouts::{DeviceRolloutRow, RolloutEventRow, RolloutPushRow, RolloutReads, RolloutRow};
pub use writes::{Effect, WriteTx};

/// How long a connection waits for a lock held by another process (e.g. a backup) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection; more than the store has, so none is re-prepared.
const STATEMENT_CACHE: usize = 64;

/// Pages a delete may add past a size-capped store's limit: deleting rows can need a page or two
/// while SQLite rebalances its b-trees, and a store at its limit must still let the operator
/// free space by deleting devices.
pub(crate) const DELETE_HEADROOM_PAGES: i64 = 32;

/// Caps the database at `bytes` on the writer's connection, the only one that writes
/// (`max_page_count` is per connection and never below the current size). A delete may pass
/// the cap by [`DELETE_HEADROOM_PAGES`] (`WriteTx::deleting`).
fn limit_size(conn: &Connection, bytes: u64) -> Result<(), StoreError> {
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let pages = (bytes / page_size.max(1).unsigned_abs()).clamp(1, i64::MAX as u64);
    conn.pragma_update(None, "max_page_count", pages as i64)?;
    Ok(())
}

/// The SQLite store; cheap to clone, and every clone is the same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    readers: Arc<ReadPool>,
    checkpointer: Checkpointer,
    presence: PresenceSlot,
    commits: Arc<Commits>,
    split: SplitScans,
}

impl Store {
    /// Opens (creating if missing) the database at `cfg.path` and brings its schema up to date.
    pub fn open(cfg: StoreConfig) -> Result<Store, StoreError> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::io(&format!("cannot create directory {}", dir.display()), &e)
            })?;
        }
        let presence = PresenceSlot::default();
        let mut conn = open_connection(&cfg.path, &presence)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Other(format!(
                "{} cannot use write-ahead logging (journal mode stays {mode}); \
                 put the data directory on a local file system",
                cfg.path.display()
            )));
        }
        schema::migrate(&mut conn)?;
        if let Some(bytes) = cfg.max_size_bytes {
            limit_size(&conn, bytes)?;
        }
        let readers = Arc::new(ReadPool::open(
            cfg.path.clone(),
            cfg.read_connections,
            presence.clone(),
        )?);
        let (checkpointer, backstop) =
            Checkpointer::spawn(open_connection(&cfg.path, &presence)?, &mut conn)?;
        let commits = Arc::new(Commits::default());
        let writer = Writer::spawn(
            conn,
            cfg.max_batch,
            backstop,
            cfg.node.clone(),
            Arc::clone(&commits),
        )?;
        let split = SplitScans {
            parts: cfg.split.parts.clamp(1, readers.size()),
            ..cfg.split
        };
        Ok(Store {
            inner: Arc::new(Inner {
                writer,
                readers,
                checkpointer,
                presence,
                commits,
                split,
            }),
        })
    }

    /// Runs `f` on a pooled read connection (on a blocking thread). Reads see every committed write.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&ReadTx<'_>) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.readers.run(f).await
    }

    /// Like [`Store::read`], for a short point read (a lookup by key): it runs on the calling
    /// thread when a read connection is free, skipping the hand-off to a blocking thread, and
    /// queues like `read` otherwise. Never use it for scans.
    pub async fn read_point<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&ReadTx<'_>) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        match self.inner.readers.try_run_inline(f) {
            Ok(result) => result,
            Err(f) => self.read(f).await,
        }
    }

    /// Runs one page of a compiled query on the read connections, as [`Reads::run_query`]
    /// does on one. An aggregate over devices with more than [`SplitScans::min_rows`] row keys
    /// runs split ([`fleethub_query::SplitQuery`]): one part per range of row keys, each on its
    /// own connection and thread, all on one snapshot of the database, merged by the query
    /// crate. When writes keep it from taking that snapshot, it runs on one connection.
    pub async fn query(&self, query: CompiledQuery) -> Result<QueryRows, StoreError> {
        let split = self.inner.split;
        let Some(plan) = query.split.clone().filter(|_| split.parts > 1) else {
            return self.read(move |r| r.run_query(&query)).await;
        };
        let bounds = self
            .read_point(|r| compiled::device_row_bounds(r.conn))
            .await?;
        let ranges = match bounds {
            Some((first, last)) if last.abs_diff(first) >= split.min_rows => {
                compiled::row_ranges(first, last, split.parts)
            }
            _ => return self.read(move |r| r.run_query(&query)).await,
        };
        let parts: Vec<read_pool::Part<_>> = ranges
            .into_iter()
            .map(|(from, to)| {
                let plan = plan.clone();
                Box::new(move |r: &ReadTx<'_>| compiled::run_part(r.conn, &plan, from, to))
                    as read_pool::Part<_>
            })
            .collect();
        let commits = Arc::clone(&self.inner.commits);
        match self.inner.readers.run_together(parts, commits).await? {
            Some(rows) => {
                let docs = plan
                    .merge(rows)
                    .map_err(|e| StoreError::Other(format!("internal error: {e}")))?;
                Ok(QueryRows {
                    rows: docs.into_iter().map(QueryRow::Document).collect(),
                    continuation: None,
                })
            }
            None => self.read(move |r| r.run_query(&query)).await,
        }
    }

    /// Runs `f` inside the writer's transaction; resolves only after the batch holding it has
    /// committed. If `f` returns an error or panics, none of its changes are kept. Dropping the
    /// returned future does not cancel a write that was already queued.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.queue_write(f, false).await
    }

    /// Like [`Store::write`], ahead of the writes already queued: committed in a batch of its
    /// own (with any other such write) as soon as the writer finishes the batch it is on. For a
    /// few small writes whose latency matters more than the queue's order (a rollout's gate
    /// decision under a fleet's reports); writes in flight together have no order among them.
    pub async fn write_first<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.queue_write(f, true).await
    }

    async fn queue_write<T, E, F>(&self, f: F, first: bool) -> Result<T, E>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writer
            .submit(Box::new(WriteJob::new(f, reply)), first)
            .map_err(E::from)?;
        answer.await.unwrap_or_else(|_| {
            Err(E::from(StoreError::Other(
                "internal error: the writer dropped a write".into(),
            )))
        })
    }

    /// Tells the store how to answer `connectionState` in queries and job conditions
    /// (connection state is live, not stored): `presence(device_id)` is whether the device is
    /// connected now. The hub sets it once it runs; until then every device is disconnected.
    /// Every connection's `fh_connected` asks it, so setting it costs no round trip.
    pub fn set_presence(&self, presence: Presence) {
        *self.inner.presence.write() = Some(presence);
    }

    /// Runs the migrations of the database at `path`, copying at most `devices` devices into
    /// the twin layout of migration 11 (or, past it, packing at most `devices` metadata rows,
    /// migration 15), and stops there as a process killed part way would: for tests of the
    /// migrations. `true` if it finished.
    #[doc(hidden)]
    pub fn migrate_partly(path: &Path, devices: usize) -> Result<bool, StoreError> {
        let mut conn = open_connection(path, &PresenceSlot::default())?;
        schema::migrate_with(&mut conn, Some(devices))
    }

    /// The SQL dialect this store runs: what the query crate compiles for it.
    pub fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// Stops the store: refuses new work, commits the writes already queued, and waits for the
    /// writer to finish (so call it from shutdown code, not a latency-sensitive task).
    pub fn close(&self) {
        self.inner.writer.stop_accepting();
        self.inner.readers.close();
        let writer_ended = self.inner.writer.join();
        self.inner.checkpointer.stop(writer_ended);
    }
}

/// A connection to the database at `path` with the settings every connection shares and the
/// functions compiled queries call.
fn open_connection(path: &Path, presence: &PresenceSlot) -> Result<Connection, StoreError> {
    // NO_MUTEX: each connection is used by one thread at a time, so SQLite's own locking is waste.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Every write runs in a savepoint, whose statement journal would otherwise be a temporary
    // file: one pwrite per touched page (a third of the writer's time in bulk import).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 64 MiB of page cache (negative = KiB): a million-device table keeps its upper b-tree
    // levels and indexes hot.
    conn.pragma_update(None, "cache_size", -65536)?;
    // Plans that do not depend on bound values: without this, a cached statement such as
    // `WHERE device_id = ?1 ORDER BY …` is parsed and planned again each time it is bound to
    // another value. The store runs no ANALYZE and compiles no LIKE, so no plan loses anything.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    functions::register(&conn, presence.clone())?;
    Ok(conn)
}

#[cfg(test)]
mod statement_tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// Found by profiling `bench desired`: without the query planner stability guarantee,
    /// SQLite plans `WHERE device_id = ?1 ORDER BY …` around the bound value and marks the
    /// statement to be planned again whenever the value changes, so the cached statement was
    /// parsed and planned anew for every device (8% of the writer's time, on every twin change).
    #[test]
    fn a_cached_statement_is_not_planned_again_for_a_new_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut conn = open_connection(&path, &PresenceSlot::default()).unwrap();
        schema::migrate(&mut conn).unwrap();
        assert!(conn
            .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
            .unwrap());
        for sql in [
            "SELECT config_id, status FROM device_configurations WHERE device_id = ?1
             ORDER BY config_id",
            "SELECT seq FROM telemetry WHERE device_id = ?1 ORDER BY seq DESC LIMIT 5",
        ] {
            for id in ["a", "b", "c"] {
                let mut stmt = conn.prepare_cached(sql).unwrap();
                stmt.query_map([id], |_| Ok(())).unwrap().for_each(drop);
                let planned_again = stmt.get_status(StatementStatus::RePrepare);
                assert_eq!(planned_again, 0, "{sql} for {id}");
            }
        }
    }
}
