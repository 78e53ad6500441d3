//! Jobs v2 ("scheduled jobs"): a twin update or a direct method applied to every device a query
//! condition selects, at a start time, durably and at a controlled rate.
//!
//! A job is a durable state machine in the store: the `jobs` row holds its document
//! ([`document::JobDocument`]); when it starts, the devices its condition selects are copied into
//! `job_devices` as `pending` rows (the snapshot), and the engine ([`engine::JobEngine`]) works
//! through them. A twin job applies its patch to a batch of devices and marks their rows
//! `completed` in the same write, so a crash does both or neither and a restart neither repeats nor
//! skips a device. A method job marks a row `running` before calling the device; rows found
//! `running` when the hub starts are failed rather than called twice.

mod condition;
mod document;
mod engine;
mod method_calls;
mod notify;
mod operation;
mod operations;
mod rate;
mod request;
mod twin_batch;

pub use document::{JobStatus, MethodCall, Statistics, TwinUpdate};
pub(crate) use engine::spawn as spawn_engine;
pub use engine::{JobEngine, StepOutcome};
pub use notify::OperationNotice;
pub use operation::{DeviceAction, DeviceSet, DeviceTarget, OperationCreated, OperationSpec};
pub use operations::{JobPage, JobQuery};
pub use rate::{Pace, Ramp, RateControl, RateLimiter};
pub use request::{JobId, JobType};

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::sync::Notify;

/// Settings of the job engine.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// How long a finished job (and its device rows) is kept before it is pruned. IoT Hub: 30 days.
    pub retention: Duration,
    /// The most jobs running at once; later ones wait as `queued`.
    pub max_concurrent: usize,
    /// Devices a twin job updates per store write.
    pub twin_batch: usize,
    /// Twin batches one engine step writes, each read and merged while the one before it is
    /// written. A step stays well under a second, so a cancel still lands within one.
    pub twin_batches_per_step: usize,
    /// Direct-method calls one method job keeps in flight at once.
    pub method_concurrency: usize,
    /// Devices added to a job's snapshot per store write.
    pub snapshot_chunk: usize,
    /// Run the engine in the background. Tests that drive it with [`JobEngine::step`] and a
    /// manual clock turn this off.
    pub autorun: bool,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            retention: Duration::from_secs(30 * 24 * 3600),
            max_concurrent: 100,
            twin_batch: 1000,
            twin_batches_per_step: 8,
            method_concurrency: 100,
            snapshot_chunk: 100_000,
            autorun: true,
        }
    }
}

/// The engine's in-memory state: its wake-up signal, the per-job rate limiters, and the direct
/// method calls in flight. Everything else lives in the store.
#[derive(Default)]
pub(crate) struct JobsState {
    /// Signalled when there may be new work (a job created or cancelled, a call finished).
    pub(crate) wake: Notify,
    /// Per running job; the lock also serializes engine steps and cancellations.
    runtimes: tokio::sync::Mutex<HashMap<String, engine::JobRuntime>>,
    /// Method calls in flight, across jobs.
    calls_in_flight: AtomicUsize,
    /// Signalled whenever a method call finishes.
    call_finished: Notify,
    /// Who hears of finished devices and operations.
    pub(crate) notices: std::sync::Arc<notify::Subscribers>,
}

#[cfg(test)]
mod tests;
