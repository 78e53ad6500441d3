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
    /// Writes that lost a race to another writer (and were computed again, or refused with 412).
    pub write_conflicts: AtomicU64,
    /// Telemetry messages delayed by a quota (back-pressure; none are dropped).
    pub throttled_telemetry: AtomicU64,
    /// Reported-property patches answered 429 by a quota.
    pub throttled_reported: AtomicU64,
    /// Connection attempts refused by the hub's connection rate.
    pub throttled_connections: AtomicU64,
    /// What the HTTPS listener refused or closed, and what it holds.
    pub https: HttpsMetrics,
    /// Firmware downloads served and refused.
    pub firmware: FirmwareMetrics,
}

/// The firmware store's delivery at work.
#[derive(Default, Debug)]
pub struct FirmwareMetrics {
    /// Image bytes sent to devices (the body of 200 and 206 answers).
    pub bytes_served: AtomicU64,
    /// Download requests answered with image bytes (HEAD included).
    pub requests: AtomicU64,
    /// Download requests refused for an altered, expired or foreign URL.
    pub refused_urls: AtomicU64,
}

/// The HTTPS listener's connection limits at work: connections it would not keep, and how many it
/// holds. A connection upgraded to MQTT over WebSocket is a device connection and leaves these.
#[derive(Default, Debug)]
pub struct HttpsMetrics {
    /// Closed at accept, before TLS: their source address already held its share.
    pub refused_address_cap: AtomicU64,
    /// Closed at accept, before TLS: the hub already held its share of file descriptors.
    pub refused_connection_cap: AtomicU64,
    /// Closed for not finishing the TLS handshake in time.
    pub handshake_timeouts: AtomicU64,
    /// Closed for not finishing a request's headers within the header timeout.
    pub header_timeouts: AtomicU64,
    /// Closed for having no request in flight for the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Requests ended for a body that sent nothing for the idle timeout while it was awaited.
    pub body_timeouts: AtomicU64,
    /// HTTPS connections open now (a gauge), handshakes included.
    pub open: AtomicU64,
}

impl Metrics {
    /// Renders the counters plus the given gauges.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 10] = [
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
            (
                "fleethub_write_conflicts_total",
                "Writes that found a twin or device changed since they read it",
                &self.write_conflicts,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        labeled_counter(
            &mut out,
            "fleethub_throttled_total",
            "Operations slowed (telemetry) or refused (reported, connections) by a quota",
            "kind",
            &[
                ("telemetry", &self.throttled_telemetry),
                ("reported", &self.throttled_reported),
                ("connections", &self.throttled_connections),
            ],
        );
        let https = &self.https;
        labeled_counter(
            &mut out,
            "fleethub_https_connections_closed_total",
            "HTTPS connections refused at accept or closed by a timeout",
            "reason",
            &[
                ("address_cap", &https.refused_address_cap),
                ("connection_cap", &https.refused_connection_cap),
                ("handshake_timeout", &https.handshake_timeouts),
                ("header_timeout", &https.header_timeouts),
                ("idle_timeout", &https.idle_timeouts),
                ("body_timeout", &https.body_timeouts),
            ],
        );
        let firmware = &self.firmware;
        for (name, help, v) in [
            (
                "fleethub_firmware_bytes_served_total",
                "Firmware image bytes sent to devices",
                &firmware.bytes_served,
            ),
            (
                "fleethub_firmware_requests_total",
                "Firmware download requests answered with the image (HEAD included)",
                &firmware.requests,
            ),
            (
                "fleethub_firmware_refused_urls_total",
                "Firmware downloads refused for an altered, expired or foreign URL",
                &firmware.refused_urls,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let https_open = https.open.load(Ordering::Relaxed);
        let open = [(
            "fleethub_https_connections",
            "HTTPS connections open, not counting those upgraded to MQTT over WebSocket",
            https_open,
        )];
        for (name, help, v) in gauges.iter().chain(&open) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

/// One counter with a label, a line per label value.
fn labeled_counter(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, &AtomicU64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, v) in values {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{value}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
}
