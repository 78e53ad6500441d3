//! The read pool: a few connections, each lent to one read at a time on a blocking thread.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::functions::PresenceSlot;
use super::open_connection;
use super::reads::ReadTx;
use crate::StoreError;

/// Idle read connections, and one permit per connection so a read waits for a free one.
pub(crate) struct ReadPool {
    path: PathBuf,
    /// What `fh_connected` asks, on every connection (registered once, at open).
    presence: PresenceSlot,
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
        result
    }
}

/// Runs `f` inside `BEGIN … COMMIT`, so all its queries see one snapshot.
fn read_in_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&ReadTx<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(&ReadTx { conn })));
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
