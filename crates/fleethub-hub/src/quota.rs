//! Throttling, modelled on IoT Hub's: token buckets per device (kept on its connection) and per
//! hub (shared), for device-to-cloud telemetry, reported-property updates and new connections.
//!
//! Telemetry over the limit is slowed, never dropped: the gateway waits before it stores the
//! message and reads nothing more from that device meanwhile, so TCP pushes back on the device.
//! A reported patch over the limit is answered 429 `ThrottlingException` (the SDKs retry), and a
//! connection over the hub's rate is refused before authentication.

use crate::Hub;
use fleethub_core::{ErrorCode, HubError, HubResult};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A sustained rate with a burst on top.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Operations per second, sustained.
    pub per_second: f64,
    /// Operations allowed at once after a quiet period (the bucket's size); at least 1.
    pub burst: u32,
}

impl Rate {
    /// `per_second` with a burst of `burst_seconds` worth of operations; `None` (no limit) when
    /// the rate is 0.
    pub fn with_burst_seconds(per_second: f64, burst_seconds: f64) -> Option<Rate> {
        (per_second > 0.0).then(|| Rate {
            per_second,
            burst: (per_second * burst_seconds)
                .ceil()
                .clamp(1.0, f64::from(u32::MAX)) as u32,
        })
    }
}

/// Per-device and per-hub rates; `None` means unlimited.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaConfig {
    /// Telemetry messages per second from one device.
    pub device_telemetry: Option<Rate>,
    /// Reported-property patches per second from one device.
    pub device_reported: Option<Rate>,
    /// Telemetry messages per second from all devices together.
    pub hub_telemetry: Option<Rate>,
    /// Reported-property patches per second from all devices together.
    pub hub_reported: Option<Rate>,
    /// New device connections (CONNECT attempts) per second.
    pub hub_connections: Option<Rate>,
}

impl Default for QuotaConfig {
    /// Generous enough for the benchmarks and the simulator (a few messages per device per
    /// second): 100 per second per device with a two-second burst, the hub unlimited.
    fn default() -> Self {
        QuotaConfig {
            device_telemetry: Rate::with_burst_seconds(100.0, 2.0),
            device_reported: Rate::with_burst_seconds(100.0, 2.0),
            hub_telemetry: None,
            hub_reported: None,
            hub_connections: None,
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_second`. Pure: time is passed in.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    /// Tokens available at `at`; negative when waiters reserved ahead (see [`reserve`](Self::reserve)).
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: f64::from(rate.burst.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let cap = f64::from(self.rate.burst.max(1));
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(cap);
        self.at = self.at.max(now);
    }

    /// Takes a token even if none is left and returns how long the caller must wait before it
    /// may act (zero when a token was there). Later callers queue behind earlier ones.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate.per_second)
        }
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back a token taken by [`try_take`](Self::try_take) for an operation that did not happen.
    pub fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(f64::from(self.rate.burst.max(1)));
    }
}

/// Monotonic time (tokio's, so tests with paused time control it). Not the hub's `Clock`: a rate
/// is about elapsed time on this machine, and a wall clock that jumps would refill or starve it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// An optional bucket: `None` when the rate is unlimited.
fn bucket(rate: Option<Rate>, now: Instant) -> Option<TokenBucket> {
    rate.map(|r| TokenBucket::new(r, now))
}

/// The hub-wide buckets, shared by every connection.
#[derive(Debug)]
pub(crate) struct HubQuotas {
    telemetry: Option<parking_lot::Mutex<TokenBucket>>,
    reported: Option<parking_lot::Mutex<TokenBucket>>,
    connections: Option<parking_lot::Mutex<TokenBucket>>,
}

impl HubQuotas {
    pub(crate) fn new(config: &QuotaConfig) -> HubQuotas {
        let now = now();
        let shared = |r| bucket(r, now).map(parking_lot::Mutex::new);
        HubQuotas {
            telemetry: shared(config.hub_telemetry),
            reported: shared(config.hub_reported),
            connections: shared(config.hub_connections),
        }
    }
}

/// One connection's per-device buckets; the gateway keeps it with the session.
#[derive(Debug)]
pub struct DeviceQuota {
    telemetry: Option<TokenBucket>,
    reported: Option<TokenBucket>,
}

/// What was throttled, for the `/metrics` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Telemetry delayed (back-pressure).
    Telemetry,
    /// Reported patches answered 429.
    Reported,
    /// Connections refused.
    Connections,
}

impl Hub {
    /// Fresh per-device buckets for a new connection.
    pub fn device_quota(&self) -> DeviceQuota {
        let (q, now) = (&self.inner.config.quotas, now());
        DeviceQuota {
            telemetry: bucket(q.device_telemetry, now),
            reported: bucket(q.device_reported, now),
        }
    }

    /// How long the gateway must wait before storing the device's next telemetry message (and
    /// read nothing more from it meanwhile); zero when it is within its device's and the hub's rate.
    pub fn telemetry_delay(&self, quota: &mut DeviceQuota) -> Duration {
        let now = now();
        let device = quota
            .telemetry
            .as_mut()
            .map_or(Duration::ZERO, |b| b.reserve(now));
        let hub = self
            .inner
            .quotas
            .telemetry
            .as_ref()
            .map_or(Duration::ZERO, |b| b.lock().reserve(now));
        let delay = device.max(hub);
        if !delay.is_zero() {
            self.count_throttled(Throttled::Telemetry);
        }
        delay
    }

    /// Admits a reported-property patch, or answers 429 when the device or the hub is over its rate.
    pub fn admit_report(&self, quota: &mut DeviceQuota) -> HubResult<()> {
        let now = now();
        if let Some(b) = quota.reported.as_mut() {
            if !b.try_take(now) {
                self.count_throttled(Throttled::Reported);
                return Err(throttled(
                    "reported-property updates from this device",
                    b.rate,
                ));
            }
        }
        if let Some(hub) = &self.inner.quotas.reported {
            let mut hub = hub.lock();
            if !hub.try_take(now) {
                if let Some(b) = quota.reported.as_mut() {
                    b.refund();
                }
                self.count_throttled(Throttled::Reported);
                return Err(throttled("reported-property updates to this hub", hub.rate));
            }
        }
        Ok(())
    }

    /// Admits a new connection attempt, or refuses it when the hub is over its connection rate.
    pub fn admit_connection(&self) -> HubResult<()> {
        let Some(hub) = &self.inner.quotas.connections else {
            return Ok(());
        };
        let mut hub = hub.lock();
        if hub.try_take(now()) {
            return Ok(());
        }
        self.count_throttled(Throttled::Connections);
        Err(throttled("new connections to this hub", hub.rate))
    }

    fn count_throttled(&self, kind: Throttled) {
        let m = self.metrics();
        let counter = match kind {
            Throttled::Telemetry => &m.throttled_telemetry,
            Throttled::Reported => &m.throttled_reported,
            Throttled::Connections => &m.throttled_connections,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn throttled(what: &str, rate: Rate) -> HubError {
    HubError::new(
        ErrorCode::ThrottlingException,
        format!(
            "{what} exceed the limit of {} per second (burst {}); retry later",
            rate.per_second, rate.burst
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 10.0,
        burst: 3,
    };

    #[test]
    fn a_full_bucket_allows_its_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RATE, t0);
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
    }

    #[test]
    fn reservations_queue_behind_each_other_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RATE, t0);
        let waits: Vec<Duration> = (0..6).map(|_| b.reserve(t0)).collect();
        let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 0, 0, 100, 200, 300]);
        // Once the waits have passed, the bucket is empty, not in debt.
        assert_eq!(
            b.reserve(t0 + Duration::from_millis(300)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_refund_gives_back_one_token_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RATE, t0);
        assert!(b.try_take(t0));
        b.refund();
        b.refund();
        assert_eq!((0..10).filter(|_| b.try_take(t0)).count(), 3);
    }

    #[test]
    fn a_zero_rate_means_unlimited_and_the_burst_is_at_least_one() {
        assert_eq!(Rate::with_burst_seconds(0.0, 2.0), None);
        assert_eq!(Rate::with_burst_seconds(0.2, 2.0).unwrap().burst, 1);
        assert_eq!(Rate::with_burst_seconds(100.0, 2.0).unwrap().burst, 200);
    }
}
