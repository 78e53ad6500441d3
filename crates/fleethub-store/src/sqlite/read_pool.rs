//! The read pool: a few connections, each lent to one read at a time on a blocking thread.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::functions::PresenceSlot;
use super::open_connection;
use super::reads::ReadTx;
use super::writer::Commits;
use crate::StoreError;

/// Idle read connections, and one permit per connection so a read waits for a free one.
pub(crate) struct ReadPool {
    path: PathBuf,
    /// What `fh_connected` asks, on every connection (registered once, at open).
    presence: PresenceSlot,
    size: usize,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    /// Opens `size` read connections to the database at `path`.
    pub(crate) fn open(
        path: PathBuf,
        size: usize,
        presence: PresenceSlot,
    ) -> Result<ReadPool, StoreError> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| open_read_connection(&path, &presence))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReadPool {
            path,
            presence,
            size,
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
        })
    }

    /// Runs `f` in a read transaction on a free connection, on a blocking thread.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&ReadTx<'_>) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let permits = Arc::clone(&self.permits);
        let permit = permits
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        // The permit travels with the connection: if the caller stops waiting, the read keeps its
        // connection until it ends, and no other read is promised that connection meanwhile.
        let result = tokio::task::spawn_blocking(move || {
            let result = pool.run_blocking(f);
            drop(permit);
            result
        })
        .await;
        result.map_err(|e| StoreError::Other(format!("internal error: a read was lost: {e}")))?
    }

    /// Runs `f` on the calling thread when a connection is free right now, or hands `f` back
    /// when all are busy (the caller then queues with [`ReadPool::run`]). For short point reads
    /// only: a thread hand-off costs more than a lookup served from SQLite's page cache.
    pub(crate) fn try_run_inline<T, F>(&self, f: F) -> Result<Result<T, StoreError>, F>
    where
        F: FnOnce(&ReadTx<'_>) -> Result<T, StoreError>,
    {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                let result = self.run_blocking(f);
                drop(permit);
                Ok(result)
            }
            Err(_) => Err(f),
        }
    }

    /// How many connections the pool holds.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Runs each of `parts` on its own connection at the same time (on blocking threads), all
    /// in read transactions on one snapshot of the database: the snapshots are taken while
    /// `commits` shows no commit begun since the last one ended, and taken again when one
    /// was. `None` when writes kept landing between them (the caller then reads on one
    /// connection). Takes every connection it needs at once, so two callers never wait on
    /// each other holding half of theirs. At most [`ReadPool::size`] parts.
    pub(crate) async fn run_together<T>(
        self: &Arc<Self>,
        parts: Vec<Part<T>>,
        commits: Arc<Commits>,
    ) -> Result<Option<Vec<T>>, StoreError>
    where
        T: Send + 'static,
    {
        let n = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(n)
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || {
            let conns: Vec<Connection> = {
                let mut idle = pool.idle.lock();
                let at = idle.len().saturating_sub(parts.len());
                idle.split_off(at)
            };
            let (conns, result) = if conns.len() == parts.len() {
                together(conns, parts, &commits)
            } else {
                (conns, Err(StoreError::Closed))
            };
            for conn in conns {
                pool.give_back(conn);
            }
            drop(permit);
            result
        })
        .await;
        result.map_err(|e| StoreError::Other(format!("internal error: a read was lost: {e}")))?
    }

    /// Stops lending connections and closes the idle ones (busy ones close when returned).
    pub(crate) fn close(&self) {
        self.permits.close();
        self.idle.lock().clear();
    }

    fn run_blocking<T>(
        &self,
        f: impl FnOnce(&ReadTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.idle.lock().pop().ok_or(StoreError::Closed)?;
        let result = read_in_transaction(&conn, f);
        self.give_back(conn);
        result
    }

    /// Returns a lent connection to the pool.
    fn give_back(&self, conn: Connection) {
        // A connection left inside a transaction would pin an old snapshot: replace it instead.
        let pooled = if conn.is_autocommit() {
            Some(conn)
        } else {
            drop(conn);
            open_read_connection(&self.path, &self.presence)
                .inspect_err(|e| tracing::error!(error = %e, "cannot reopen a read connection"))
                .ok()
        };
        let mut idle = self.idle.lock();
        if let (Some(pooled), false) = (pooled, self.permits.is_closed()) {
            idle.push(pooled);
        }
    }
}

/// One part of [`ReadPool::run_together`]: a read over its own connection.
pub(crate) type Part<T> = Box<dyn FnOnce(&ReadTx<'_>) -> Result<T, StoreError> + Send>;

/// How often [`together`] takes its snapshots again before it gives up: a commit must land
/// within microseconds of them each time for it to give up.
const SNAPSHOT_ATTEMPTS: usize = 20;

/// Begins a read transaction on every connection on one snapshot, then runs each part on its
/// connection on its own thread; hands the connections back with the result.
fn together<T: Send>(
    conns: Vec<Connection>,
    parts: Vec<Part<T>>,
    commits: &Commits,
) -> (Vec<Connection>, Result<Option<Vec<T>>, StoreError>) {
    let n = parts.len();
    match one_snapshot(&conns, commits) {
        Ok(true) => {}
        other => return (conns, other.map(|_| None)),
    }
    let (conns, results): (Vec<Connection>, Vec<Result<T, StoreError>>) = thread::scope(|scope| {
        let threads: Vec<_> = conns
            .into_iter()
            .zip(parts)
            .map(|(conn, part)| {
                scope.spawn(move || {
                    let result = end_transaction(&conn, || part(&ReadTx { conn: &conn }));
                    (conn, result)
                })
            })
            .collect();
        threads.into_iter().filter_map(|t| t.join().ok()).unzip()
    });
    // A part's panic is caught inside its thread; a thread lost anyway took its connection.
    let result = if results.len() == n {
        results.into_iter().collect::<Result<Vec<T>, _>>().map(Some)
    } else {
        Err(StoreError::Other(
            "internal error: a read part was lost".into(),
        ))
    };
    (conns, result)
}

/// Opens a read transaction on every connection, all on one snapshot; `false` (with none left
/// open) when a commit kept landing while they were taken.
fn one_snapshot(conns: &[Connection], commits: &Commits) -> Result<bool, StoreError> {
    for _ in 0..SNAPSHOT_ATTEMPTS {
        let ended = commits.ended();
        for conn in conns {
            conn.prepare_cached("BEGIN")?.execute([])?;
            // The first read takes the transaction's snapshot.
            conn.prepare_cached("SELECT count(*) FROM sqlite_schema")?
                .query_row([], |_| Ok(()))?;
        }
        if commits.begun() == ended {
            return Ok(true);
        }
        for conn in conns {
            conn.prepare_cached("COMMIT")?.execute([])?;
        }
    }
    Ok(false)
}

/// Runs `f` inside `BEGIN … COMMIT`, so all its queries see one snapshot.
fn read_in_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&ReadTx<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    end_transaction(conn, || f(&ReadTx { conn }))
}

/// Runs `f` in the read transaction open on `conn`, then ends it (`ROLLBACK` if `f` panicked).
fn end_transaction<T>(
    conn: &Connection,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.prepare_cached(end).and_then(|mut s| s.execute([]));
    let value = result.map_err(|payload| {
        StoreError::Other(format!(
            "internal error: a read panicked: {}",
            super::writer::panic_message(&*payload)
        ))
    })??;
    ended?;
    Ok(value)
}

/// A connection that can only read.
fn open_read_connection(
    path: &std::path::Path,
    presence: &PresenceSlot,
) -> Result<Connection, StoreError> {
    let conn = open_connection(path, presence)?;
    // Writes go through the writer alone; a stray write on a reader is a bug, so refuse it.
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of a split scan take their snapshots only while no commit is in flight: with
    /// one begun and not ended, they give up and leave no transaction open (a read then runs
    /// on one connection); with none, every connection reads inside one.
    #[test]
    fn split_snapshots_are_taken_only_while_no_commit_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let presence = PresenceSlot::default();
        let conns: Vec<Connection> = (0..2)
            .map(|_| open_read_connection(&path, &presence).unwrap())
            .collect();
        assert!(!one_snapshot(&conns, &Commits::in_flight()).unwrap());
        assert!(conns.iter().all(Connection::is_autocommit));
        assert!(one_snapshot(&conns, &Commits::default()).unwrap());
        assert!(conns.iter().all(|c| !c.is_autocommit()));
    }
}
