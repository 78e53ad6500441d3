//! Counters for `/metrics`, in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters the hub bumps as it works.
#[derive(Default, Debug)]
pub struct Metrics {
    pub reported_updates: AtomicU64,
    pub desired_pushed: AtomicU64,
    pub methods_invoked: AtomicU64,
    pub telemetry_stored: AtomicU64,
    pub telemetry_duplicates: AtomicU64,
    pub c2d_enqueued: AtomicU64,
    pub c2d_delivered: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Telemetry messages delayed by a quota (back-pressure; none are dropped).
    pub throttled_telemetry: AtomicU64,
    /// Reported-property patches answered 429 by a quota.
    pub throttled_reported: AtomicU64,
    /// Connection attempts refused by the hub's connection rate.
    pub throttled_connections: AtomicU64,
}

impl Metrics {
    /// Renders the counters plus the given gauges.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 9] = [
            (
                "fleethub_reported_updates_total",
                "Reported-property patches committed",
                &self.reported_updates,
            ),
            (
                "fleethub_desired_pushed_total",
                "Desired-property patches sent to devices",
                &self.desired_pushed,
            ),
            (
                "fleethub_methods_invoked_total",
                "Direct methods sent to devices",
                &self.methods_invoked,
            ),
            (
                "fleethub_telemetry_stored_total",
                "Telemetry messages stored",
                &self.telemetry_stored,
            ),
            (
                "fleethub_telemetry_duplicates_total",
                "Telemetry messages dropped as duplicates",
                &self.telemetry_duplicates,
            ),
            (
                "fleethub_c2d_enqueued_total",
                "Cloud-to-device messages queued",
                &self.c2d_enqueued,
            ),
            (
                "fleethub_c2d_delivered_total",
                "Cloud-to-device messages acknowledged by devices",
                &self.c2d_delivered,
            ),
            (
                "fleethub_connections_accepted_total",
                "Device connections accepted",
                &self.connections_accepted,
            ),
            (
                "fleethub_connections_refused_total",
                "Device connections refused",
                &self.connections_refused,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let name = "fleethub_throttled_total";
        let _ = writeln!(
            out,
            "# HELP {name} Operations slowed (telemetry) or refused (reported, connections) by a quota\n# TYPE {name} counter"
        );
        for (kind, v) in [
            ("telemetry", &self.throttled_telemetry),
            ("reported", &self.throttled_reported),
            ("connections", &self.throttled_connections),
        ] {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{kind}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
