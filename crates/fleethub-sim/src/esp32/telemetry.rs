//! Sensor readings with unique message ids, and the bounded offline buffer.

use super::model::{Model, Now};
use bytes::Bytes;
use serde_json::json;

/// One telemetry message, sent or waiting to be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Telemetry {
    /// `$.mid`: `{device}-{boot}-{n}`, unique for the device across reboots; the hub stores a
    /// repeated id once.
    pub mid: String,
    pub body: Bytes,
}

/// The property bag every message carries besides `$.mid`.
pub(crate) fn properties() -> Vec<(String, String)> {
    vec![
        ("$.ct".into(), "application/json".into()),
        ("$.ce".into(), "utf-8".into()),
    ]
}

impl Model {
    /// Takes a reading: values from the device's sensor stream, so a seed repeats them.
    pub(crate) fn sample(&mut self, now: &Now) -> Telemetry {
        self.ram.telemetry_seq += 1;
        let mid = format!(
            "{}-{}-{}",
            self.id, self.lifetime_boots, self.ram.telemetry_seq
        );
        let body = json!({
            "temperature": self.rng.reading(22.0, 4.0),
            "humidity": self.rng.reading(45.0, 15.0),
            "pm25": self.rng.reading(12.0, 10.0).max(0.0),
            "uptime_s": now.elapsed.saturating_sub(self.ram.booted_at).as_secs(),
            "time": self.device_time(now),
        });
        Telemetry {
            mid,
            body: Bytes::from(body.to_string()),
        }
    }

    /// Keeps `message` for replay, dropping the oldest beyond `telemetry_buffer`.
    pub(crate) fn buffer(&mut self, message: Telemetry) {
        let cap = self.behavior.telemetry_buffer;
        if cap == 0 {
            return;
        }
        while self.ram.telemetry.len() >= cap {
            self.ram.telemetry.pop_front();
        }
        self.ram.telemetry.push_back(message);
    }

    /// Whether this message goes out twice (a QoS 1 redelivery).
    pub(crate) fn duplicate(&mut self) -> bool {
        let p = self.behavior.faults.duplicate_rate;
        self.rng.duplicate(p)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Behavior, Faults};
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    fn now() -> Now {
        Now {
            elapsed: Duration::from_secs(5),
            wall: UNIX_EPOCH + Duration::from_secs(1_750_000_000),
        }
    }

    #[test]
    fn ids_are_unique_across_reboots_and_readings_repeat_under_a_seed() {
        let behavior = Arc::new(Behavior::default());
        let mut a = Model::new("d1", "1.0.0", behavior.clone(), 42);
        let mut b = Model::new("d1", "1.0.0", behavior, 42);
        a.power_on(&now());
        b.power_on(&now());
        let first = a.sample(&now());
        assert_eq!(first, b.sample(&now()));
        a.power_on(&now());
        let after_reboot = a.sample(&now());
        assert_ne!(first.mid, after_reboot.mid);
        assert_eq!(first.mid, "d1-1-1");
        assert_eq!(after_reboot.mid, "d1-2-1");
    }

    #[test]
    fn the_buffer_keeps_the_newest_messages() {
        let behavior = Arc::new(Behavior {
            telemetry_buffer: 3,
            faults: Faults::default(),
            ..Behavior::default()
        });
        let mut m = Model::new("d1", "1.0.0", behavior, 1);
        m.power_on(&now());
        for _ in 0..5 {
            let t = m.sample(&now());
            m.buffer(t);
        }
        let mids: Vec<_> = m.ram.telemetry.iter().map(|t| t.mid.as_str()).collect();
        assert_eq!(mids, ["d1-1-3", "d1-1-4", "d1-1-5"]);
    }
}
