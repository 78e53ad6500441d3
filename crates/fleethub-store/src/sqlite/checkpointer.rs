//! The checkpointer: a thread with its own connection that copies committed WAL frames back into
//! the database file, so that the writer does not.
//!
//! SQLite's default is an automatic checkpoint inside the commit that takes the WAL past 1,000
//! pages, on the committing thread. Our writer is the store's one serial resource, and a profile
//! of a million-device twin job put 10% of its time in those checkpoints. So the writer installs
//! a WAL hook instead (which turns automatic checkpoints off): after each commit the hook learns
//! how many frames the WAL holds and, past [`CHECKPOINT_FRAMES`], pokes this thread, which runs a
//! PASSIVE checkpoint (it never blocks the writer or readers) on the other core. A checkpoint is
//! crash-safe at every point: the WAL stays the truth until the database file has the pages and
//! has been synced.
//!
//! If checkpoints fall behind (a long read pinning an old snapshot keeps PASSIVE from finishing,
//! or the thread is starved), the writer checkpoints after its commit past [`BACKSTOP_FRAMES`],
//! as SQLite would have, so the WAL cannot grow without bound.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use parking_lot::Mutex;
use rusqlite::hooks::Wal;
use rusqlite::Connection;

use crate::StoreError;

/// WAL frames (pages) after which the checkpointer is asked to run: 4 MiB of 4 KiB pages, as
/// SQLite does by default (larger checkpoints make longer fsyncs, which commits then wait behind).
pub(crate) const CHECKPOINT_FRAMES: i32 = 1_000;
/// WAL frames past which the writer checkpoints itself (64 MiB): under sustained writes the
/// thread never catches up with the last frame, and only a complete checkpoint lets the next
/// transaction restart the WAL from its beginning. By then the thread has copied most frames.
pub(crate) const BACKSTOP_FRAMES: i32 = 16_000;

/// The checkpoint thread, as the store holds it.
pub(crate) struct Checkpointer {
    poke: Mutex<Option<SyncSender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts the thread on `conn`, its own connection to the database, and hooks `writer` (the
    /// writer's connection) up to it. The writer calls the returned [`Backstop`] after commits.
    pub(crate) fn spawn(
        conn: Connection,
        writer: &mut Connection,
    ) -> Result<(Checkpointer, Backstop), StoreError> {
        let (poke, pokes) = mpsc::sync_channel(1);
        let thread = thread::Builder::new()
            .name("fleethub-store-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &pokes))
            .map_err(|e| StoreError::Other(format!("cannot start the checkpoint thread: {e}")))?;
        let frames = Arc::new(AtomicI32::new(0));
        let (hook_poke, hook_frames) = (poke.clone(), frames.clone());
        // The hook runs inside COMMIT: it must not fail (an error would report a commit that
        // happened as failed) and must not checkpoint (that is the backstop's job, after COMMIT).
        writer.wal_hook(Some(move |_: &mut Wal, frames: i32| {
            hook_frames.store(frames, Ordering::Relaxed);
            if frames >= CHECKPOINT_FRAMES {
                match hook_poke.try_send(()) {
                    Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
                }
            }
            Ok(())
        }))?;
        let checkpointer = Checkpointer {
            poke: Mutex::new(Some(poke)),
            thread: Mutex::new(Some(thread)),
        };
        Ok((checkpointer, Backstop { frames }))
    }

    /// Lets the thread end once the writer's connection is gone (its hook holds a sender too),
    /// and waits for that when `writer_ended`.
    pub(crate) fn stop(&self, writer_ended: bool) {
        drop(self.poke.lock().take());
        if !writer_ended {
            return;
        }
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the store checkpoint thread panicked");
            }
        }
    }
}

fn checkpoint_loop(conn: &Connection, pokes: &Receiver<()>) {
    while pokes.recv().is_ok() {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((frames, done)) => tracing::trace!(frames, done, "checkpoint"),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; the next commit retries"),
        }
    }
    tracing::debug!("store checkpointer stopped");
}

/// The writer's own guard against a WAL the thread could not keep short.
pub(crate) struct Backstop {
    frames: Arc<AtomicI32>,
}

impl Backstop {
    /// Called by the writer after each commit, outside any transaction.
    pub(crate) fn after_commit(&self, conn: &Connection) {
        let frames = self.frames.load(Ordering::Relaxed);
        if frames < BACKSTOP_FRAMES {
            return;
        }
        self.frames.store(0, Ordering::Relaxed);
        tracing::debug!(
            frames,
            "the WAL outgrew the checkpoint thread; checkpointing on the writer"
        );
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint on the writer failed");
        }
    }
}
