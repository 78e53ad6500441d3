//! The read pool: a few connections, each lent to one read at a time on a blocking thread.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::open_connection;
use super::reads::ReadTx;
use crate::config::ConnectionInit;
use crate::StoreError;

/// Idle read connections, and one permit per connection so a read waits for a free one.
pub(crate) struct ReadPool {
    path: PathBuf,
    init: Option<ConnectionInit>,
    /// Inits added after the store opened ([`ReadPool::add_init`]), in order. Each idle
    /// connection remembers how many of them it has run, and runs the rest when next lent, so
    /// every init runs once per connection, never per read.
    added: RwLock<Vec<ConnectionInit>>,
    idle: Mutex<Vec<Pooled>>,
    permits: Arc<Semaphore>,
}

/// An idle connection and how many of the pool's added inits it has run.
struct Pooled {
    conn: Connection,
    inits_run: usize,
}

impl ReadPool {
    /// Opens `size` read connections to the database at `path`.
    pub(crate) fn open(
        path: PathBuf,
        size: usize,
        init: Option<ConnectionInit>,
    ) -> Result<ReadPool, StoreError> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| {
                open_read_connection(&path, init.as_ref()).map(|conn| Pooled { conn, inits_run: 0 })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReadPool {
            path,
            init,
            added: RwLock::new(Vec::new()),
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

    /// Adds an init that every read connection runs once, before its next read (and every
    /// connection opened later runs at open).
    pub(crate) fn add_init(&self, init: ConnectionInit) {
        self.added.write().push(init);
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
        let mut pooled = self.idle.lock().pop().ok_or(StoreError::Closed)?;
        let result = self
            .run_added_inits(&mut pooled)
            .and_then(|()| read_in_transaction(&pooled.conn, f));
        // A connection left inside a transaction would pin an old snapshot: replace it instead.
        let pooled = if pooled.conn.is_autocommit() {
            Some(pooled)
        } else {
            drop(pooled);
            open_read_connection(&self.path, self.init.as_ref())
                .map(|conn| Pooled { conn, inits_run: 0 })
                .inspect_err(|e| tracing::error!(error = %e, "cannot reopen a read connection"))
                .ok()
        };
        let mut idle = self.idle.lock();
        if let (Some(pooled), false) = (pooled, self.permits.is_closed()) {
            idle.push(pooled);
        }
        result
    }

    /// Runs the added inits `pooled` has not run yet.
    fn run_added_inits(&self, pooled: &mut Pooled) -> Result<(), StoreError> {
        let added = self.added.read();
        for init in &added[pooled.inits_run.min(added.len())..] {
            (init.0)(&pooled.conn)?;
            pooled.inits_run += 1;
        }
        Ok(())
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
    init: Option<&ConnectionInit>,
) -> Result<Connection, StoreError> {
    let conn = open_connection(path, init)?;
    // Writes go through the writer alone; a stray write on a reader is a bug, so refuse it.
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}
