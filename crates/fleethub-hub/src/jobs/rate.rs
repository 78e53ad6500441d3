//! Rate control, FleetHub's extension to IoT Hub jobs: a ceiling on devices started per second
//! or per minute, and an optional exponential ramp (start slow, multiply the rate every so many
//! devices), after AWS IoT Jobs' rollout configuration.
//!
//! The limiter is a token bucket driven by the hub's `Clock`: it holds at most one second's worth
//! of devices (at least one), starts full, and refills at the current rate. So with
//! `maxPerSecond: N` a job starts exactly N devices at once and N more every second after.

use chrono::{DateTime, Utc};
use fleethub_core::{ErrorCode, HubError, HubResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
}

/// A running job's token bucket.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    control: RateControl,
    tokens: f64,
    last: DateTime<Utc>,
    /// Devices started so far (drives the ramp).
    started: u64,
}

impl RateLimiter {
    /// A full bucket at `now`, for a job that has already started `started` devices.
    pub fn new(control: RateControl, now: DateTime<Utc>, started: u64) -> RateLimiter {
        let mut limiter = RateLimiter {
            control,
            tokens: 0.0,
            last: now,
            started,
        };
        limiter.tokens = limiter.capacity();
        limiter
    }

    /// The current rate in devices per second.
    pub fn rate_per_second(&self) -> f64 {
        let ceiling = self.control.ceiling_per_second();
        match &self.control.ramp {
            None => ceiling.unwrap_or(f64::INFINITY),
            Some(ramp) => {
                let steps = self.started / ramp.increment_every_devices;
                let steps = i32::try_from(steps).unwrap_or(i32::MAX);
                let rate =
                    f64::from(ramp.initial_per_minute) / 60.0 * ramp.increment_factor.powi(steps);
                ceiling.map_or(rate, |c| rate.min(c))
            }
        }
    }

    fn capacity(&self) -> f64 {
        self.rate_per_second().max(1.0)
    }

    fn refill(&mut self, now: DateTime<Utc>) {
        if now <= self.last {
            return;
        }
        let elapsed = (now - self.last).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        self.tokens = (self.tokens + elapsed * self.rate_per_second()).min(self.capacity());
        self.last = now;
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
        let rate = self.rate_per_second();
        if missing == 0.0 || !rate.is_finite() {
            return now;
        }
        let micros = (missing / rate * 1e6).ceil() as i64;
        self.last.max(now) + chrono::Duration::microseconds(micros.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use serde_json::json;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn per_second_ceiling_allows_exactly_n_each_second() {
        let rc = RateControl::parse(&json!({"maxPerSecond": 7})).unwrap();
        let mut l = RateLimiter::new(rc, t0(), 0);
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
        let mut l = RateLimiter::new(rc, t0(), 0);
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
        let mut l = RateLimiter::new(rc, t0(), 0);
        assert_eq!(l.rate_per_second(), 1.0);
        l.take(5);
        assert_eq!(l.rate_per_second(), 2.0);
        l.take(5);
        assert_eq!(l.rate_per_second(), 4.0);
        l.take(20);
        assert_eq!(l.rate_per_second(), 10.0, "capped by maxPerSecond");
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
