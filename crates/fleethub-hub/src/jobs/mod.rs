//! Jobs v2 ("scheduled jobs") and the device-operation layer under them: a twin update or a
//! direct method applied to a set of devices (those a query condition selects, or an explicit
//! list), at a start time, durably and at a controlled pace. IoT Hub's REST jobs and the
//! operations FleetHub's own engines start ([`operation`]) are the same thing to the engine.
//!
//! A job is a durable state machine in the store: the `jobs` row holds its document
//! ([`document::JobDocument`]); when it starts, the devices its condition selects are copied into
//! `job_devices` as `pending` rows (the snapshot; a listed set's rows are written at creation,
//! `scheduled` while a device's not-before time is ahead), and the engine
//! ([`engine::JobEngine`]) works through them. A twin job applies its patch to a batch of devices
//! and marks their rows `completed` in the same write, so a crash does both or neither and a
//! restart neither repeats nor skips a device. A method job marks a row `running` before calling
//! the device; rows found `running` when the hub starts are failed rather than called twice.
//! Every terminal state is announced to subscribers from the commit that reached it
//! ([`notify`]).
//!
//! The modules depend one way: `rate`, `notify`, `condition` → `document`, `state` → `request`
//! → `twin_batch`, `method_calls` → `engine` → `operation` → `operations`.

mod condition;
mod document;
mod engine;
mod method_calls;
mod notify;
mod operation;
mod operations;
pub(crate) mod own_rows;
mod rate;
mod request;
mod state;
mod twin_batch;

pub(crate) use document::JobDocument;
pub use document::JobType;
pub use document::{Job, JobStatus, MethodCall, Statistics, TwinUpdate};
pub(crate) use engine::spawn as spawn_engine;
pub use engine::{JobEngine, StepOutcome};
pub use notify::OperationNotice;
pub use operation::{DeviceAction, DeviceSet, DeviceTarget, OperationCreated, OperationSpec};
pub use operations::{JobPage, JobQuery};
pub use rate::{Pace, Ramp, RateControl, RateLimiter};
pub use request::JobId;
pub(crate) use request::MAX_EXECUTION_SECS_LIMIT;
pub(crate) use state::JobsState;

use std::time::Duration;

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

#[cfg(test)]
mod tests;
