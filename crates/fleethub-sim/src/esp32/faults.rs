//! Seeded randomness for one device. Each kind of decision draws from its own stream, so the
//! OTA fault sequence depends only on the seed and the OTA steps taken, never on how network
//! timing interleaved telemetry or link drops with them.

use super::clock::secs;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Where inside the boot-slot switch power is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SwitchCut {
    /// Before the boot record is written: the old slot boots.
    BeforeBootRecord,
    /// After it: the new slot boots, pending verification.
    AfterBootRecord,
}

/// The random streams of one device.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRng {
    ota: SmallRng,
    net: SmallRng,
    sensor: SmallRng,
}

impl DeviceRng {
    pub(crate) fn new(seed: u64) -> DeviceRng {
        let stream =
            |n: u64| SmallRng::seed_from_u64(mix(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        DeviceRng {
            ota: stream(1),
            net: stream(2),
            sensor: stream(3),
        }
    }

    /// True with probability `p` (clamped to 0..=1; NaN never).
    pub(crate) fn ota_chance(&mut self, p: f64) -> bool {
        chance(&mut self.ota, p)
    }

    /// A byte offset in `from..to` where power is lost during a download.
    pub(crate) fn cut_offset(&mut self, from: u64, to: u64) -> u64 {
        if to <= from {
            return from;
        }
        self.ota.random_range(from..to)
    }

    pub(crate) fn switch_cut(&mut self) -> SwitchCut {
        if self.ota.random_bool(0.5) {
            SwitchCut::BeforeBootRecord
        } else {
            SwitchCut::AfterBootRecord
        }
    }

    /// Time until the next link drop: exponential with mean `mean_s`.
    pub(crate) fn link_drop_after(&mut self, mean_s: f64) -> Duration {
        let u: f64 = self.net.random();
        secs(-mean_s * (1.0 - u).ln())
    }

    /// `base` stretched by up to +50 %, so devices that lost the link together do not
    /// reconnect in lockstep.
    pub(crate) fn jitter(&mut self, base: Duration) -> Duration {
        base.mul_f64(1.0 + self.net.random::<f64>() * 0.5)
    }

    /// Where in its first telemetry interval a device sends: a fleet that boots together must
    /// not publish in lockstep (real devices drift apart the same way).
    pub(crate) fn phase(&mut self, interval: Duration) -> Duration {
        interval.mul_f64(self.sensor.random::<f64>())
    }

    pub(crate) fn duplicate(&mut self, p: f64) -> bool {
        chance(&mut self.sensor, p)
    }

    /// A sensor value: `mid` ± `spread`, one decimal.
    pub(crate) fn reading(&mut self, mid: f64, spread: f64) -> f64 {
        let v = mid + (self.sensor.random::<f64>() * 2.0 - 1.0) * spread;
        (v * 10.0).round() / 10.0
    }
}

fn chance(rng: &mut SmallRng, p: f64) -> bool {
    if p.is_nan() || p <= 0.0 {
        return false;
    }
    rng.random::<f64>() < p.min(1.0)
}

/// SplitMix64's finaliser: neighbouring seeds give unrelated streams.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A device's seed from the run's seed and its index.
pub fn device_seed(run_seed: u64, index: usize) -> u64 {
    mix(run_seed ^ mix(index as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_repeat_under_a_seed_and_differ_across_seeds() {
        let draw = |seed| {
            let mut rng = DeviceRng::new(seed);
            (0..32).map(|_| rng.ota_chance(0.5)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn probabilities_outside_zero_to_one_are_clamped() {
        let mut rng = DeviceRng::new(1);
        assert!(!rng.ota_chance(f64::NAN));
        assert!(!rng.ota_chance(-3.0));
        assert!(rng.ota_chance(7.0));
        assert_eq!(rng.link_drop_after(f64::NAN), Duration::ZERO);
        assert_eq!(rng.cut_offset(5, 5), 5);
    }
}
