//! Rate control of a device operation, in two layers.
//!
//! [`Pace`] and [`RateLimiter`] are the typed core that any engine driving waves of devices
//! (jobs, rollouts, configurations) reuses: either a steady rate (N devices per second, spread
//! evenly, optionally on an exponential ramp) or batches (N devices at once, N more every
//! interval). The limiter is driven by times read from the hub's `Clock`, so tests step it with
//! a manual clock.
//!
//! [`RateControl`] is the job REST API's `rateControl` (FleetHub's extension to IoT Hub jobs: a
//! ceiling per second or per minute, and an optional ramp after AWS IoT Jobs' rollout
//! configuration); it is parsed at the edge and becomes a steady [`Pace`].
//!
//! A steady pace is a token bucket: it holds at most one second's worth of devices (at least
//! one), starts full, and refills at the current rate. So with `maxPerSecond: N` a job starts
//! exactly N devices at once and N more every second after.

use chrono::{DateTime, Utc};
use fleethub_core::{ErrorCode, HubError, HubResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// The largest increment factor accepted (AWS IoT Jobs allows 1.1 to 5).
pub const MAX_INCREMENT_FACTOR: f64 = 5.0;

/// A job's `rateControl` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateControl {
    /// At most this many devices started per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<u32>,
    /// At most this many devices started per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u32>,
    /// Start slower and speed up as devices are processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Ramp>,
}

/// An exponential ramp: `initialPerMinute`, multiplied by `incrementFactor` after every
/// `incrementEveryDevices` devices, up to the ceiling (if any).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ramp {
    /// The rate the job starts at, in devices per minute.
    pub initial_per_minute: u32,
    /// What the rate is multiplied by at each step (more than 1, at most 5).
    pub increment_factor: f64,
    /// How many devices are started between steps.
    pub increment_every_devices: u64,
}

fn invalid(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::JobInvalid, message)
}

impl RateControl {
    /// Parses and checks a `rateControl` value.
    pub fn parse(v: &Value) -> HubResult<RateControl> {
        let rc: RateControl = serde_json::from_value(v.clone()).map_err(|e| {
            invalid(format!(
                "rateControl is not valid: {e}; expected {{\"maxPerSecond\": n}} or \
                 {{\"maxPerMinute\": n}}, optionally with \"ramp\": {{\"initialPerMinute\", \
                 \"incrementFactor\", \"incrementEveryDevices\"}}"
            ))
        })?;
        rc.check()?;
        Ok(rc)
    }

    fn check(&self) -> HubResult<()> {
        match (self.max_per_second, self.max_per_minute, &self.ramp) {
            (Some(_), Some(_), _) => {
                return Err(invalid(
                    "rateControl gives both maxPerSecond and maxPerMinute; give one",
                ))
            }
            (None, None, None) => {
                return Err(invalid(
                    "rateControl needs maxPerSecond, maxPerMinute or ramp",
                ))
            }
            _ => {}
        }
        if self.max_per_second == Some(0) {
            return Err(invalid("rateControl.maxPerSecond must be at least 1"));
        }
        if self.max_per_minute == Some(0) {
            return Err(invalid("rateControl.maxPerMinute must be at least 1"));
        }
        if let Some(ramp) = &self.ramp {
            if ramp.initial_per_minute == 0 {
                return Err(invalid(
                    "rateControl.ramp.initialPerMinute must be at least 1",
                ));
            }
            let f = ramp.increment_factor;
            if !(f > 1.0 && f <= MAX_INCREMENT_FACTOR) {
                return Err(invalid(format!(
                    "rateControl.ramp.incrementFactor is {f}; it must be more than 1 and at most {MAX_INCREMENT_FACTOR}"
                )));
            }
            if ramp.increment_every_devices == 0 {
                return Err(invalid(
                    "rateControl.ramp.incrementEveryDevices must be at least 1",
                ));
            }
            if let Some(max) = self.ceiling_per_second() {
                if f64::from(ramp.initial_per_minute) / 60.0 > max {
                    return Err(invalid(
                        "rateControl.ramp.initialPerMinute is above the rate's ceiling",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The ceiling in devices per second, if any.
    fn ceiling_per_second(&self) -> Option<f64> {
        self.max_per_second
            .map(f64::from)
            .or_else(|| self.max_per_minute.map(|m| f64::from(m) / 60.0))
    }

    /// The pace this rate control sets.
    pub fn pace(&self) -> Pace {
        Pace::Steady {
            per_second: self.ceiling_per_second(),
            ramp: self.ramp.clone(),
        }
    }
}

/// How fast an operation starts devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Pace {
    /// At most `per_second` devices a second (no ceiling when `None`), spread evenly; with a
    /// ramp, starting at the ramp's rate and speeding up to the ceiling.
    Steady {
        per_second: Option<f64>,
        ramp: Option<Ramp>,
    },
    /// `size` devices at once, then `size` more every `every_ms` milliseconds; starts unused in
    /// one interval do not carry over to the next.
    Batch { size: u64, every_ms: u64 },
}

impl Pace {
    /// At most `n` devices a second.
    pub fn per_second(n: u32) -> HubResult<Pace> {
        if n == 0 {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                "a pace of 0 devices per second starts nothing; give at least 1",
            ));
        }
        Ok(Pace::Steady {
            per_second: Some(f64::from(n)),
            ramp: None,
        })
    }

    /// `size` devices at once, then `size` more every `every`.
    pub fn batch(size: u64, every: Duration) -> HubResult<Pace> {
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        if size == 0 || every_ms == 0 {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                format!(
                    "a batch pace needs at least 1 device every at least 1 ms; got {size} every \
                     {every_ms} ms"
                ),
            ));
        }
        Ok(Pace::Batch { size, every_ms })
    }
}

/// A running operation's limiter: how many devices may start now, and when the next may.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    pace: Pace,
    tokens: f64,
    /// Steady: the time of the last refill. Batch: the start of the current interval.
    last: DateTime<Utc>,
    /// Devices started so far (drives the ramp).
    started: u64,
}

impl RateLimiter {
    /// A full limiter at `now`, for an operation that has already started `started` devices.
    pub fn new(pace: Pace, now: DateTime<Utc>, started: u64) -> RateLimiter {
        let mut limiter = RateLimiter {
            pace,
            tokens: 0.0,
            last: now,
            started,
        };
        limiter.tokens = limiter.capacity();
        limiter
    }

    /// The current steady rate in devices per second (a batch pace's average).
    pub fn rate_per_second(&self) -> f64 {
        match &self.pace {
            Pace::Steady {
                per_second: ceiling,
                ramp: None,
            } => ceiling.unwrap_or(f64::INFINITY),
            Pace::Steady {
                per_second: ceiling,
                ramp: Some(ramp),
            } => {
                let steps = self.started / ramp.increment_every_devices.max(1);
                let steps = i32::try_from(steps).unwrap_or(i32::MAX);
                let rate =
                    f64::from(ramp.initial_per_minute) / 60.0 * ramp.increment_factor.powi(steps);
                ceiling.map_or(rate, |c| rate.min(c))
            }
            Pace::Batch { size, every_ms } => *size as f64 * 1000.0 / (*every_ms).max(1) as f64,
        }
    }

    fn capacity(&self) -> f64 {
        match &self.pace {
            Pace::Steady { .. } => self.rate_per_second().max(1.0),
            Pace::Batch { size, .. } => *size as f64,
        }
    }

    fn refill(&mut self, now: DateTime<Utc>) {
        if now <= self.last {
            return;
        }
        match &self.pace {
            Pace::Steady { .. } => {
                let elapsed = (now - self.last).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
                self.tokens = (self.tokens + elapsed * self.rate_per_second()).min(self.capacity());
                self.last = now;
            }
            Pace::Batch { every_ms, .. } => {
                let every = i64::try_from(*every_ms).unwrap_or(i64::MAX).max(1);
                let intervals = (now - self.last).num_milliseconds() / every;
                if intervals > 0 {
                    self.last += chrono::Duration::milliseconds(intervals.saturating_mul(every));
                    self.tokens = self.capacity();
                }
            }
        }
    }

    /// How many devices may start at `now`.
    pub fn available(&mut self, now: DateTime<Utc>) -> u64 {
        self.refill(now);
        // The epsilon absorbs float error in refills that should land on a whole number.
        (self.tokens + 1e-9).floor().max(0.0) as u64
    }

    /// Records that `n` devices started.
    pub fn take(&mut self, n: u64) {
        self.tokens = (self.tokens - n as f64).max(0.0);
        self.started += n;
    }

    /// When the next device may start, if none may now.
    pub fn next_token_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let missing = (1.0 - self.tokens).max(0.0);
        if missing == 0.0 {
            return now;
        }
        if let Pace::Batch { every_ms, .. } = &self.pace {
            let every = i64::try_from(*every_ms).unwrap_or(i64::MAX);
            return self.last + chrono::Duration::milliseconds(every);
        }
        let rate = self.rate_per_second();
        if !rate.is_finite() {
            return now;
        }
        let micros = (missing / rate * 1e6).ceil() as i64;
        self.last.max(now) + chrono::Duration::microseconds(micros.max(1))
    }

    /// Whether nothing may start at `now` (leaves the limiter as it is).
    pub fn blocked(&self, now: DateTime<Utc>) -> bool {
        self.clone().available(now) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use fleethub_core::{Clock, ManualClock};
    use serde_json::json;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn per_second_ceiling_allows_exactly_n_each_second() {
        let rc = RateControl::parse(&json!({"maxPerSecond": 7})).unwrap();
        let mut l = RateLimiter::new(rc.pace(), t0(), 0);
        assert_eq!(l.available(t0()), 7);
        l.take(7);
        assert_eq!(l.available(t0() + Duration::milliseconds(500)), 3);
        assert_eq!(l.available(t0() + Duration::seconds(1)), 7);
        l.take(7);
        assert_eq!(
            l.available(t0() + Duration::seconds(10)),
            7,
            "the bucket holds one second"
        );
    }

    #[test]
    fn per_minute_ceiling_spreads_devices_over_the_minute() {
        let rc = RateControl::parse(&json!({"maxPerMinute": 30})).unwrap();
        let mut l = RateLimiter::new(rc.pace(), t0(), 0);
        assert_eq!(l.available(t0()), 1);
        l.take(1);
        assert_eq!(l.available(t0() + Duration::seconds(1)), 0);
        assert_eq!(
            l.next_token_at(t0() + Duration::seconds(1)),
            t0() + Duration::seconds(2)
        );
        assert_eq!(l.available(t0() + Duration::seconds(2)), 1);
    }

    #[test]
    fn the_ramp_multiplies_the_rate_up_to_the_ceiling() {
        let rc = RateControl::parse(&json!({
            "maxPerSecond": 10,
            "ramp": {"initialPerMinute": 60, "incrementFactor": 2.0, "incrementEveryDevices": 5}
        }))
        .unwrap();
        let mut l = RateLimiter::new(rc.pace(), t0(), 0);
        assert_eq!(l.rate_per_second(), 1.0);
        l.take(5);
        assert_eq!(l.rate_per_second(), 2.0);
        l.take(5);
        assert_eq!(l.rate_per_second(), 4.0);
        l.take(20);
        assert_eq!(l.rate_per_second(), 10.0, "capped by maxPerSecond");
    }

    /// The typed paces other engines use, driven by the hub's manual clock.
    #[test]
    fn a_batch_pace_starts_n_at_once_then_n_more_each_interval_without_carrying_over() {
        let clock = ManualClock::new(t0());
        let pace = Pace::batch(3, std::time::Duration::from_secs(60)).unwrap();
        let mut l = RateLimiter::new(pace, clock.now(), 0);
        assert_eq!(l.available(clock.now()), 3);
        l.take(2);
        clock.advance(Duration::seconds(59));
        assert_eq!(l.available(clock.now()), 1, "the interval's last start");
        l.take(1);
        assert!(l.blocked(clock.now()));
        assert_eq!(l.next_token_at(clock.now()), t0() + Duration::seconds(60));
        clock.advance(Duration::seconds(1));
        assert_eq!(l.available(clock.now()), 3, "a new batch at the interval");
        // Three idle intervals later: one batch, not four.
        clock.advance(Duration::seconds(185));
        assert_eq!(l.available(clock.now()), 3);
        l.take(3);
        assert_eq!(
            l.next_token_at(clock.now()),
            t0() + Duration::seconds(300),
            "intervals keep their phase from the start"
        );
    }

    #[test]
    fn a_per_second_pace_refills_by_the_clock() {
        let clock = ManualClock::new(t0());
        let mut l = RateLimiter::new(Pace::per_second(4).unwrap(), clock.now(), 0);
        assert_eq!(l.available(clock.now()), 4);
        l.take(4);
        assert!(l.blocked(clock.now()));
        assert_eq!(
            l.next_token_at(clock.now()),
            t0() + Duration::milliseconds(250)
        );
        clock.advance(Duration::milliseconds(500));
        assert_eq!(l.available(clock.now()), 2);
    }

    #[test]
    fn paces_that_start_nothing_are_refused() {
        assert_eq!(
            Pace::per_second(0).unwrap_err().code,
            ErrorCode::ArgumentInvalid
        );
        let e = Pace::batch(0, std::time::Duration::from_secs(1)).unwrap_err();
        assert!(e.message.contains("got 0 every 1000 ms"), "{}", e.message);
        assert!(Pace::batch(1, std::time::Duration::ZERO).is_err());
    }

    #[test]
    fn invalid_rate_controls_are_refused_with_the_field_named() {
        for (v, needle) in [
            (json!({"maxPerSecond": 1, "maxPerMinute": 1}), "give one"),
            (json!({}), "needs maxPerSecond"),
            (
                json!({"maxPerSecond": 0}),
                "maxPerSecond must be at least 1",
            ),
            (json!({"maxPerSec": 3}), "unknown field"),
            (
                json!({"ramp": {"initialPerMinute": 1, "incrementFactor": 1.0, "incrementEveryDevices": 1}}),
                "incrementFactor",
            ),
            (
                json!({"maxPerMinute": 10, "ramp": {"initialPerMinute": 20, "incrementFactor": 2, "incrementEveryDevices": 1}}),
                "ceiling",
            ),
        ] {
            let err = RateControl::parse(&v).unwrap_err();
            assert_eq!(err.code, ErrorCode::JobInvalid);
            assert!(err.message.contains(needle), "{v}: {}", err.message);
        }
    }
}
