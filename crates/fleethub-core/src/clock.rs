//! Time comes from a `Clock`, so tests can drive schedules and expiry without sleeping.

use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;
use std::sync::Arc;

/// The source of "now" for everything that reasons about time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Seconds since the Unix epoch.
    fn unix(&self) -> u64 {
        self.now().timestamp().max(0) as u64
    }

    /// How long, in real time, this clock takes to move on by `d`: what a task that waits for
    /// a time on this clock sleeps. The wall clock and a manual clock (which tests move
    /// themselves) answer `d`; a compressed clock answers less.
    fn real_duration(&self, d: std::time::Duration) -> std::time::Duration {
        d
    }
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that runs `scale` times faster than the wall clock from `start` (taken as the
/// real time it was made): a night of rollout in minutes, for demos and rehearsals.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    start: DateTime<Utc>,
    origin: std::time::Instant,
    scale: f64,
}

impl ScaledClock {
    /// A clock that reads `start` now and moves `scale` (≥ 1) seconds per real second.
    pub fn new(start: DateTime<Utc>, scale: f64) -> Self {
        ScaledClock {
            start,
            origin: std::time::Instant::now(),
            scale: scale.max(1.0),
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> DateTime<Utc> {
        let real = self.origin.elapsed().as_secs_f64() * self.scale;
        let scaled = Duration::microseconds((real * 1e6) as i64);
        self.start + scaled
    }

    fn real_duration(&self, d: std::time::Duration) -> std::time::Duration {
        d.div_f64(self.scale)
    }
}

/// A clock that moves only when told to: for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock() += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock() = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}
