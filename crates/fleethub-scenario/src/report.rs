//! The report a run ends with: the timeline as it happened, each expectation's verdict with
//! what was measured, and the fleet's final counters; as text for people or JSON for scripts.

use crate::duration::SimDuration;
use crate::timeline::{Outcome, StepRecord};
use fleethub_sim::esp32::{in_version_order, StatsSnapshot};
use serde::Serialize;
use std::fmt::Write;

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario file, or `flags`.
    pub scenario: String,
    pub hub: String,
    pub seed: u64,
    pub devices: usize,
    pub groups: usize,
    pub processes: usize,
    pub time_scale: f64,
    /// Simulated and real length of the run.
    pub simulated: SimDuration,
    pub real_s: f64,
    /// Why the run ended.
    pub ended: String,
    pub steps: Vec<StepRecord>,
    pub expectations: Vec<Outcome>,
    pub stats: StatsSnapshot,
    pub firmware_served: Option<Served>,
    pub passed: bool,
}

/// What was served for the run's generated firmware: by the hub's firmware store (all of its
/// downloads of these artifacts since the hub started) and by the simulator's own server.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Served {
    pub requests: u64,
    pub bytes: u64,
}

impl Report {
    /// Text for a terminal.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = self.write_text(&mut o);
        o
    }

    fn write_text(&self, o: &mut String) -> std::fmt::Result {
        writeln!(o, "FleetHub simulation report")?;
        writeln!(o, "  scenario    {}", self.scenario)?;
        writeln!(o, "  hub         {}", self.hub)?;
        writeln!(
            o,
            "  fleet       {} devices in {} group{}, {} process{}, seed {}",
            self.devices,
            self.groups,
            plural(self.groups),
            self.processes,
            if self.processes == 1 { "" } else { "es" },
            self.seed
        )?;
        writeln!(
            o,
            "  time        {} simulated in {:.1}s real (×{}); {}",
            self.simulated, self.real_s, self.time_scale, self.ended
        )?;

        writeln!(o, "\nTimeline")?;
        if self.steps.is_empty() {
            writeln!(o, "  (no steps ran)")?;
        } else {
            writeln!(o, "  {:<9} {:<8} {:<44} result", "sim", "real", "step")?;
        }
        for s in &self.steps {
            let result = if s.failed == 0 {
                format!("{}/{} ok", s.ok, s.targets)
            } else {
                format!("{}/{} ok, {} failed", s.ok, s.targets, s.failed)
            };
            let step = format!("{} ({})", s.name, s.summary);
            writeln!(
                o,
                "  {:<9} {:<8} {:<44} {result} in {}ms",
                s.ran_at.to_string(),
                format!("{:.1}s", s.real_s),
                step,
                s.took_ms
            )?;
            if let Some(e) = &s.first_error {
                writeln!(o, "  {:<18} first error: {e}", "")?;
            }
        }

        writeln!(o, "\nExpectations")?;
        if self.expectations.is_empty() {
            writeln!(o, "  (none)")?;
        }
        for e in &self.expectations {
            let verdict = if e.passed { "PASS" } else { "FAIL" };
            writeln!(o, "  {verdict}  {}: {}", e.name, e.description)?;
            writeln!(
                o,
                "        measured {} at {} (real {:.1}s)",
                e.measured, e.decided_at, e.real_s
            )?;
            if let Some(n) = &e.note {
                writeln!(o, "        {n}")?;
            }
        }

        let s = &self.stats;
        writeln!(o, "\nFinal stats (as the devices saw it)")?;
        writeln!(
            o,
            "  devices {}  connected {}  reporting {}  updating {}  failed {}  rolled back {}",
            s.devices, s.connected, s.reporting, s.updating, s.failed, s.rolled_back
        )?;
        writeln!(
            o,
            "  telemetry sent {}  reconnects {}  power losses {}",
            s.telemetry_sent, s.reconnects, s.power_losses
        )?;
        if let Some(f) = &self.firmware_served {
            writeln!(
                o,
                "  firmware served {} requests, {} bytes",
                f.requests, f.bytes
            )?;
        }
        writeln!(o, "\nVersions per group")?;
        if s.group_versions.is_empty() {
            writeln!(o, "  (none reported)")?;
        }
        let width = s.group_versions.keys().map(String::len).max().unwrap_or(0);
        for (group, versions) in &s.group_versions {
            let list: Vec<String> = in_version_order(versions)
                .into_iter()
                .map(|(v, n)| format!("{v}: {n}"))
                .collect();
            writeln!(o, "  {group:<width$}  {}", list.join("  "))?;
        }

        let failed = self.expectations.iter().filter(|e| !e.passed).count();
        let total = self.expectations.len();
        writeln!(o)?;
        if total == 0 {
            writeln!(o, "Result: no expectations to judge")
        } else if self.passed {
            writeln!(o, "Result: PASS ({total} of {total} expectations met)")
        } else {
            writeln!(o, "Result: FAIL ({failed} of {total} expectations failed)")
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expect::Measure;

    fn sample() -> Report {
        let stats = StatsSnapshot {
            devices: 20,
            connected: 20,
            reporting: 20,
            updating: 0,
            failed: 1,
            rolled_back: 1,
            telemetry_sent: 480,
            reconnects: 3,
            power_losses: 0,
            versions: [("1.0.0".into(), 16), ("2.1.0".into(), 4)].into(),
            group_versions: [
                (
                    "beta".to_string(),
                    [("1.0.0".to_string(), 1), ("2.1.0".to_string(), 4)].into(),
                ),
                ("hq".to_string(), [("1.0.0".to_string(), 15)].into()),
            ]
            .into(),
        };
        Report {
            scenario: "examples/scenarios/canary.toml".into(),
            hub: "embedded hub (https://localhost:40001)".into(),
            seed: 7,
            devices: 20,
            groups: 2,
            processes: 1,
            time_scale: 360.0,
            simulated: SimDuration::from_secs(1500),
            real_s: 4.2,
            ended: "every step ran and every expectation was decided".into(),
            steps: vec![StepRecord {
                name: "canary".into(),
                summary: "set_firmware 2.1.0 → group beta".into(),
                scheduled: SimDuration::from_secs(300),
                ran_at: SimDuration::from_secs(300),
                real_s: 0.8,
                took_ms: 12,
                targets: 5,
                ok: 4,
                failed: 1,
                first_error: Some("PATCH /twins/sim-beta-9: HTTP 404 device not found".into()),
            }],
            expectations: vec![
                Outcome {
                    name: "beta-updated".into(),
                    description: "group beta: reported firmware 2.1.0, at least 80%, within 10m of step canary".into(),
                    passed: true,
                    measured: Measure { matched: 4, total: 5 },
                    decided_at: SimDuration::from_secs(432),
                    real_s: 1.2,
                    note: None,
                },
                Outcome {
                    name: "no-rollbacks".into(),
                    description: "all devices: firmware status rolled_back, at most 0 devices, within 20m of the start".into(),
                    passed: false,
                    measured: Measure { matched: 1, total: 20 },
                    decided_at: SimDuration::from_secs(1200),
                    real_s: 3.3,
                    note: None,
                },
            ],
            stats,
            firmware_served: Some(Served { requests: 9, bytes: 327_680 }),
            passed: false,
        }
    }

    #[test]
    fn text_report_shows_timeline_verdicts_and_versions() {
        insta::assert_snapshot!(sample().text());
    }

    #[test]
    fn json_report_keeps_every_figure() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["passed"], false);
        assert_eq!(v["steps"][0]["ran_at"], "5m");
        assert_eq!(v["expectations"][1]["measured"]["matched"], 1);
        assert_eq!(v["stats"]["group_versions"]["beta"]["2.1.0"], 4);
        assert_eq!(v["simulated"], "25m");
    }
}
