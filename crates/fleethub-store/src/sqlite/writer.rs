//! The writer: one OS thread that owns the write connection and commits queued writes in groups.
//!
//! Each turn it takes every write queued right now (up to `max_batch`) and runs them in one
//! `BEGIN IMMEDIATE … COMMIT`, each inside its own savepoint, so one fsync covers the whole group
//! and a write that fails (or panics) is rolled back alone. Results are delivered only after
//! `COMMIT` succeeds; if the transaction fails, every write in the group gets the error and none
//! of them was applied.
//!
//! A write submitted `first` skips the queue: it is committed in a batch of
//! its own before the next turn's queued writes (for a decision the hub must make durable
//! quickly while a fleet's reports fill the queue). Writes in flight together have no order among
//! them anyway: a caller that needs one write after another waits for the first's answer.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle, ThreadId};

use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::checkpointer::Backstop;
use super::writes::{Effect, TwinEpoch, WriteTx};
use crate::StoreError;

/// A queued write, its types erased so writes of any result type share one queue.
pub(crate) trait Job: Send {
    /// Runs the write inside its savepoint; `true` if its changes should be kept.
    fn run(&mut self, tx: &mut WriteTx<'_>) -> bool;
    /// Delivers the write's result once the batch's fate (`Ok` = committed) is known.
    fn finish(self: Box<Self>, batch: Result<(), StoreError>);
}

/// A caller's closure, its result once run, and where the result goes.
pub(crate) struct WriteJob<F, T, E> {
    f: Option<F>,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> WriteJob<F, T, E> {
    /// A job for `f` that answers on `reply`.
    pub(crate) fn new(f: F, reply: oneshot::Sender<Result<T, E>>) -> Self {
        WriteJob {
            f: Some(f),
            result: None,
            reply,
        }
    }
}

impl<F, T, E> Job for WriteJob<F, T, E>
where
    F: FnOnce(&mut WriteTx<'_>) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn run(&mut self, tx: &mut WriteTx<'_>) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        // A panic is one bad write, not a dead store: its savepoint is rolled back like an error.
        let result = match panic::catch_unwind(AssertUnwindSafe(|| f(tx))) {
            Ok(result) => result,
            Err(payload) => Err(E::from(StoreError::Other(format!(
                "internal error: a write panicked: {}",
                panic_message(&*payload)
            )))),
        };
        let keep = result.is_ok();
        self.result = Some(result);
        keep
    }

    fn finish(self: Box<Self>, batch: Result<(), StoreError>) {
        let result = match (batch, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(E::from(StoreError::Other(
                "internal error: a write was never run".into(),
            ))),
            (Err(e), _) => Err(E::from(e)),
        };
        // The caller may have stopped waiting; the write stands either way.
        let _ = self.reply.send(result);
    }
}

/// How many batches the writer has begun and finished committing. Nothing becomes visible to a
/// reader but through a commit, so a split scan whose parts took their snapshots while
/// `begun()` stayed equal to an earlier `ended()` saw one state of the database.
#[derive(Debug, Default)]
pub(crate) struct Commits {
    begun: AtomicU64,
    ended: AtomicU64,
}

impl Commits {
    /// Commits begun so far (counted before `COMMIT` runs).
    pub(crate) fn begun(&self) -> u64 {
        self.begun.load(AtomicOrdering::SeqCst)
    }

    /// Commits ended so far, succeeded or not (counted after `COMMIT` returns).
    pub(crate) fn ended(&self) -> u64 {
        self.ended.load(AtomicOrdering::SeqCst)
    }

    /// Counts as if one commit had begun and not yet ended.
    #[cfg(test)]
    pub(crate) fn in_flight() -> Commits {
        Commits {
            begun: AtomicU64::new(1),
            ended: AtomicU64::new(0),
        }
    }
}

/// What the writer's queue carries: a write, or word that a write went to the front.
enum Queued {
    Job(Box<dyn Job>),
    First,
}

/// Writes that skip the queue, taken at the start of the writer's next turn.
type FirstJobs = Arc<Mutex<VecDeque<Box<dyn Job>>>>;

/// The handle the store keeps on its writer thread.
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::Sender<Queued>>>,
    first: FirstJobs,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn spawn(
        conn: Connection,
        max_batch: usize,
        backstop: Backstop,
        node: String,
        commits: Arc<Commits>,
    ) -> Result<Writer, StoreError> {
        let (queue, jobs) = mpsc::channel();
        let max_batch = max_batch.max(1);
        let first = FirstJobs::default();
        let lanes = (jobs, first.clone());
        let thread = thread::Builder::new()
            .name("fleethub-store-writer".into())
            .spawn(move || write_loop(&conn, &node, &lanes, max_batch, &backstop, &commits))
            .map_err(|e| StoreError::Other(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            queue: Mutex::new(Some(queue)),
            first,
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a job; `Closed` once the writer is stopping. With `first`, ahead of every queued
    /// job: the writer commits it, with any other such job, in a batch of their own at the start
    /// of its next turn.
    pub(crate) fn submit(&self, job: Box<dyn Job>, first: bool) -> Result<(), StoreError> {
        let queue = self.queue.lock();
        let queue = queue.as_ref().ok_or(StoreError::Closed)?;
        let queued = if first {
            self.first.lock().push_back(job);
            // Wakes an idle writer; a busy one finds the job when its batch is done. The word
            // follows the job, so the writer ends only once it has taken every job.
            Queued::First
        } else {
            Queued::Job(job)
        };
        queue.send(queued).map_err(|_| StoreError::Closed)
    }

    /// Refuses new jobs; those already queued still run.
    pub(crate) fn stop_accepting(&self) {
        drop(self.queue.lock().take());
    }

    /// Waits until the writer has committed its queue and ended; call after `stop_accepting`.
    /// `false` when called from the writer thread itself (a write that closes the store cannot
    /// wait for its own thread to end).
    pub(crate) fn join(&self) -> bool {
        if thread::current().id() == self.thread_id {
            return false;
        }
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
        true
    }
}

/// The writer thread's body: batch, commit, answer, until the queue is closed and empty.
fn write_loop(
    conn: &Connection,
    node: &str,
    (jobs, first): &(mpsc::Receiver<Queued>, FirstJobs),
    max_batch: usize,
    backstop: &Backstop,
    commits: &Commits,
) {
    let epoch = TwinEpoch::default();
    let commit = |batch: Vec<Box<dyn Job>>| {
        // Only a bug in the store itself can panic here (callers' panics are caught per job);
        // the writer stays up, and the batch's callers learn of it through their dropped replies.
        if panic::catch_unwind(AssertUnwindSafe(|| {
            commit_batch(conn, node, &epoch, commits, batch)
        }))
        .is_err()
        {
            tracing::error!("store writer panicked while committing a batch");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        backstop.after_commit(conn);
    };
    while let Ok(queued) = jobs.recv() {
        let ahead: Vec<Box<dyn Job>> = first.lock().drain(..).collect();
        if !ahead.is_empty() {
            commit(ahead);
        }
        let mut batch = Vec::new();
        let mut next = Some(queued);
        while let Some(queued) = next {
            if let Queued::Job(job) = queued {
                batch.push(job);
            }
            if batch.len() >= max_batch {
                break;
            }
            next = jobs.try_recv().ok();
        }
        if !batch.is_empty() {
            commit(batch);
        }
    }
    tracing::debug!("store writer stopped");
}

/// Runs one batch in one transaction, then the effects its writes recorded (in commit order),
/// then delivers every job's result: a caller that hears "committed" knows its effects are
/// already on their way.
fn commit_batch(
    conn: &Connection,
    node: &str,
    epoch: &TwinEpoch,
    commits: &Commits,
    mut batch: Vec<Box<dyn Job>>,
) {
    match run_batch(conn, node, epoch, commits, &mut batch) {
        Ok(effects) => {
            for effect in effects {
                if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(effect)) {
                    tracing::error!(
                        panic = panic_message(&*payload),
                        "an effect after commit panicked"
                    );
                }
            }
            for job in batch {
                job.finish(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = batch.len(), "store batch failed; rolled back");
            if !conn.is_autocommit() {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %e, "store rollback failed");
                }
            }
            for job in batch {
                job.finish(Err(StoreError::from_sqlite(&e)));
            }
        }
    }
}

/// `BEGIN IMMEDIATE`, each job in its savepoint, `COMMIT`; returns the kept writes' effects.
/// An error here dooms the whole batch, effects included.
fn run_batch(
    conn: &Connection,
    node: &str,
    epoch: &TwinEpoch,
    commits: &Commits,
    batch: &mut [Box<dyn Job>],
) -> rusqlite::Result<Vec<Effect>> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    epoch.observe(conn)?;
    let mut tx = WriteTx {
        conn,
        node,
        count_deltas: Vec::new(),
        effects: Vec::new(),
        epoch,
    };
    for job in batch.iter_mut() {
        let kept_effects = tx.effects.len();
        conn.prepare_cached("SAVEPOINT write")?.execute([])?;
        super::errors::clear_abort_cause();
        let keep = job.run(&mut tx);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back on its own (a full store, an I/O error):
            // the savepoint went with it, and so did every write of the batch before this one.
            return Err(transaction_lost());
        }
        if keep {
            tx.flush_job_counts()?;
        } else {
            tx.count_deltas.clear();
            tx.effects.truncate(kept_effects);
            conn.prepare_cached("ROLLBACK TO write")?.execute([])?;
        }
        conn.prepare_cached("RELEASE write")?.execute([])?;
    }
    let mut commit = conn.prepare_cached("COMMIT")?;
    commits.begun.fetch_add(1, AtomicOrdering::SeqCst);
    let committed = commit.execute([]);
    commits.ended.fetch_add(1, AtomicOrdering::SeqCst);
    committed?;
    Ok(tx.effects)
}

/// Why a batch's transaction ended while one of its writes ran: the failure after which SQLite
/// rolled it back, or, when the write ended it some other way, words saying so.
fn transaction_lost() -> rusqlite::Error {
    super::errors::take_abort_cause().unwrap_or_else(|| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some("a write ended its batch's transaction; nothing of the batch was kept".into()),
        )
    })
}

/// The text of a panic, when it has one.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;
    use rusqlite::Connection;
    use tokio::sync::oneshot;

    use super::{commit_batch, Job, WriteJob};
    use crate::sqlite::writes::WriteTx;
    use crate::StoreError;

    /// A write that ends the batch's transaction behind the writer's back fails the whole batch:
    /// nothing of the writes before or after it is kept, and every caller hears of it.
    #[test]
    fn a_write_that_breaks_the_transaction_fails_its_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("db.sqlite")).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let mut answers = Vec::new();
        let mut batch: Vec<Box<dyn Job>> = Vec::new();
        for (key, breaks) in [("first", false), ("breaker", true), ("third", false)] {
            let (reply, answer) = oneshot::channel::<Result<(), StoreError>>();
            answers.push(answer);
            let write = move |tx: &mut WriteTx<'_>| -> Result<(), StoreError> {
                if breaks {
                    tx.conn.execute_batch("ROLLBACK")?;
                    return Ok(());
                }
                tx.put_setting(key, "v")
            };
            batch.push(Box::new(WriteJob::new(write, reply)));
        }
        commit_batch(
            &conn,
            "local",
            &crate::sqlite::writes::TwinEpoch::default(),
            &super::Commits::default(),
            batch,
        );
        for mut answer in answers {
            assert!(answer.try_recv().unwrap().is_err());
        }
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM settings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 0, "no write of the failed batch is kept");
        assert!(
            conn.is_autocommit(),
            "the writer is ready for the next batch"
        );
    }

    /// Found when the tag index stopped using triggers: a statement that fails with SQLITE_FULL
    /// and keeps no statement journal (a one-row insert) makes SQLite roll back the whole
    /// transaction, savepoints included. The batch then answered "no such savepoint: write" (a
    /// 500) instead of the full store's retryable 503, and an atomic entry said the same.
    #[test]
    fn a_full_store_that_ends_the_transaction_fails_the_batch_as_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("db.sqlite")).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let pages: i64 = conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
        let entry = Arc::new(Mutex::new(None));
        let mut answers = Vec::new();
        let mut batch: Vec<Box<dyn Job>> = Vec::new();
        for (key, size) in [("first", 1), ("big", 64 * 1024), ("third", 1)] {
            let (reply, answer) = oneshot::channel::<Result<(), StoreError>>();
            answers.push(answer);
            let entry = entry.clone();
            let write = move |tx: &mut WriteTx<'_>| -> Result<(), StoreError> {
                let result = tx.atomically(|tx| -> Result<(), StoreError> {
                    tx.conn.execute(
                        "INSERT INTO settings (key, value) VALUES (?1, ?2)",
                        [key, &"x".repeat(size)],
                    )?;
                    Ok(())
                });
                if key == "big" {
                    *entry.lock() = Some(format!("{result:?}"));
                }
                result
            };
            batch.push(Box::new(WriteJob::new(write, reply)));
        }
        commit_batch(
            &conn,
            "local",
            &crate::sqlite::writes::TwinEpoch::default(),
            &super::Commits::default(),
            batch,
        );
        let entry = entry.lock().take().unwrap();
        assert!(entry.starts_with("Err(Full("), "the entry said {entry}");
        for mut answer in answers {
            match answer.try_recv().unwrap() {
                Err(StoreError::Full(_)) => {}
                other => panic!("a write of the batch answered {other:?}, not Full"),
            }
        }
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM settings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 0, "no write of the failed batch is kept");
        assert!(conn.is_autocommit());
    }
}
