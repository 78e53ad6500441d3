//! [`SimClock`]: simulated time running `scale` times faster than real time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Longest simulated duration any timer takes (about 31 years): keeps arithmetic finite.
const MAX_SIM_SECS: f64 = 1e9;

/// Simulated time: `scale` simulated seconds pass per real second (3600 / 10 = 360 makes one
/// simulated hour take ten real seconds). Every device timer sleeps through this clock. Clones
/// share one clock: a [`skip`](SimClock::skip) moves all of them.
#[derive(Debug, Clone)]
pub struct SimClock {
    scale: f64,
    started: Instant,
    started_wall: SystemTime,
    /// Simulated nanoseconds skipped over at once (a quiet day in `fleethub demo`).
    skipped: Arc<AtomicU64>,
}

impl SimClock {
    /// A clock starting now at wall-clock time, running `scale` times faster than real time.
    /// A scale that is not a positive finite number is taken as 1.
    pub fn new(scale: f64) -> SimClock {
        SimClock::starting_at(SystemTime::now(), scale)
    }

    /// A clock that reads `wall` now and runs `scale` times faster than real time: simulated
    /// time that starts on a chosen night.
    pub fn starting_at(wall: SystemTime, scale: f64) -> SimClock {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        SimClock {
            scale,
            started: Instant::now(),
            started_wall: wall,
            skipped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves simulated time on by `by` at once, for every clone. Timers already set keep their
    /// real deadlines: skip only while nothing waits on simulated time for its meaning.
    pub fn skip(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.skipped.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many simulated seconds pass per real second.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Simulated time elapsed since the clock started.
    pub fn elapsed(&self) -> Duration {
        let skipped = Duration::from_nanos(self.skipped.load(Ordering::Relaxed));
        secs(self.started.elapsed().as_secs_f64() * self.scale).saturating_add(skipped)
    }

    /// The simulated wall-clock time (start + elapsed).
    pub fn now(&self) -> SystemTime {
        self.started_wall + self.elapsed()
    }

    /// Sleeps for `simulated` simulated time.
    pub async fn sleep(&self, simulated: Duration) {
        tokio::time::sleep(self.real(simulated)).await
    }

    /// The real instant `simulated` simulated time from now.
    pub(crate) fn deadline(&self, simulated: Duration) -> Instant {
        Instant::now() + self.real(simulated)
    }

    /// The real duration that `simulated` simulated time takes.
    pub(crate) fn real(&self, simulated: Duration) -> Duration {
        secs(simulated.as_secs_f64() / self.scale)
    }
}

/// `s` seconds as a Duration; negative or not-a-number is zero, huge is capped. Scenario
/// files are people's input: no value in them may panic `Duration::from_secs_f64`.
pub(crate) fn secs(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(s.min(MAX_SIM_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_inputs_neither_panic_nor_go_negative() {
        assert_eq!(secs(-1.0), Duration::ZERO);
        assert_eq!(secs(f64::NAN), Duration::ZERO);
        assert_eq!(secs(f64::INFINITY), Duration::from_secs_f64(MAX_SIM_SECS));
        assert_eq!(SimClock::new(0.0).scale(), 1.0);
        assert_eq!(SimClock::new(f64::NAN).scale(), 1.0);
    }

    #[test]
    fn a_clock_starts_on_its_night_and_a_skip_moves_every_clone() {
        let night = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_277_600);
        let clock = SimClock::starting_at(night, 1.0);
        let clone = clock.clone();
        assert!(clock.now() >= night && clock.now() < night + Duration::from_secs(60));
        clock.skip(Duration::from_secs(18 * 3600));
        assert!(clone.elapsed() >= Duration::from_secs(18 * 3600));
        assert!(clone.now() >= night + Duration::from_secs(18 * 3600));
        assert_eq!(clone.real(Duration::from_secs(10)), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_simulated_hour_takes_a_scaled_real_time() {
        let clock = SimClock::new(36_000.0);
        let real = Instant::now();
        clock.sleep(Duration::from_secs(3600)).await;
        assert!(real.elapsed() >= Duration::from_millis(100));
        assert!(clock.elapsed() >= Duration::from_secs(3600));
        assert!(clock.now() > SystemTime::now() + Duration::from_secs(3000));
    }
}
