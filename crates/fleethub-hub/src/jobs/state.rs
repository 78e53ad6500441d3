//! The job engine's in-memory state, held by the hub: the wake-up signal, each running job's
//! runtime (rate limiter, calls in flight, next not-before time), and the completion notices'
//! subscribers. Everything else lives in the store. It depends on no other part of the hub.

use super::notify::Subscribers;
use super::rate::RateLimiter;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use tokio::sync::Notify;

/// The engine's in-memory state: its wake-up signal, the per-job runtimes, the direct method
/// calls in flight, and the subscribers to completion notices.
#[derive(Default)]
pub(crate) struct JobsState {
    /// Signalled when there may be new work (a job created or cancelled, a call finished).
    pub(crate) wake: Notify,
    /// Per running job; the lock also serializes engine steps and cancellations.
    pub(super) runtimes: tokio::sync::Mutex<HashMap<String, JobRuntime>>,
    /// Method calls in flight, across jobs.
    pub(super) calls_in_flight: AtomicUsize,
    /// Signalled whenever a method call finishes.
    pub(super) call_finished: Notify,
    /// Who hears of finished devices and operations.
    pub(crate) notices: Arc<Subscribers>,
}

/// A running job's in-memory companion: its rate limiter, its method calls in flight, and the
/// earliest not-before time of its rows still waiting for one.
pub(crate) struct JobRuntime {
    pub(super) limiter: Option<RateLimiter>,
    pub(super) in_flight: Arc<AtomicUsize>,
    /// Known from the store when the runtime is made and from each release after, so a step
    /// reads nothing for it until the time comes.
    pub(super) next_not_before: Option<i64>,
}
