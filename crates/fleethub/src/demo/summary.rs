//! The morning summary: per wave and per city, updated, failed (with reasons), rolled back and
//! flagged devices, the fleet's compliance, and whether the story came out as told.

use super::hub_runtime::HubCpu;
use super::ID;
use crate::cli::table::{columns, text};
use anyhow::Result;
use chrono::{DateTime, Utc};
use fleethub_client::HubClient;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The city whose Wi-Fi breaks on 2.1.0.
const BAD_CITY: &str = "boston";

/// What the operator reads in the morning.
pub struct Summary {
    status: String,
    at: SystemTime,
    waves: Vec<Value>,
    cities: Vec<Value>,
    tripped: Vec<String>,
    rollback_complete: bool,
    fleet: (u64, u64),
    elsewhere: (u64, u64),
}

/// What the night cost: real time, and CPU (the hub's apart from the devices').
pub struct Cost {
    pub real: Duration,
    /// `None` where the process cannot read its threads' figures.
    pub cpu: Option<HubCpu>,
}

impl Cost {
    fn json(&self) -> Value {
        let Some(cpu) = self.cpu else {
            return Value::Null;
        };
        json!({
            "process": tenths(cpu.process),
            "hub": tenths(cpu.hub()),
            "hub_store_threads": tenths(cpu.store),
            "devices_and_operator": tenths(cpu.rest()),
        })
    }

    /// One line: the hub's CPU, the rest of the process's, the whole and its average cores.
    fn text(&self) -> String {
        let Some(cpu) = self.cpu else {
            return "CPU: not measured (no /proc/self/task here)\n".into();
        };
        format!(
            "CPU (user+system): hub {:.1} s (store threads {:.1} s), simulated devices and \
             operator {:.1} s; whole process {:.1} s, {:.2} cores on average\n",
            cpu.hub(),
            cpu.store,
            cpu.rest(),
            cpu.process,
            cpu.process / self.real.as_secs_f64().max(0.001)
        )
    }
}

fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

impl Summary {
    /// Reads the rollout, its devices and trail, and every twin.
    pub async fn read(rest: &HubClient, view: &Value, now: SystemTime) -> Result<Summary> {
        let records = rest.rollout_devices(ID).await?;
        let mut tripped = Vec::new();
        let mut after = None;
        loop {
            let page = rest.rollout_events(ID, after, Some(1000)).await?;
            for e in page["events"].as_array().into_iter().flatten() {
                if e["kind"] == "gate_tripped" {
                    tripped.push(text(&e["wave"]));
                }
            }
            match page["next"].as_i64() {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let twins = rest
            .query_all(
                "SELECT deviceId, tags.city AS city, properties.reported.firmware.current_version AS version FROM devices",
                1000,
            )
            .await?;
        let by_id: BTreeMap<&str, &Value> = records
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r["id"].as_str()?, r)))
            .collect();
        let mut cities: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let mut reasons: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let (mut fleet, mut elsewhere) = ((0, 0), (0, 0));
        for t in &twins {
            let city = text(&t["city"]);
            let on_fix = t["version"] == "2.1.0";
            fleet.1 += 1;
            fleet.0 += u64::from(on_fix);
            if city != BAD_CITY {
                elsewhere.1 += 1;
                elsewhere.0 += u64::from(on_fix);
            }
            let row = cities.entry(city.clone()).or_default();
            bump(row, "devices");
            if on_fix {
                bump(row, "on_2_1_0");
            }
            let Some(r) = t["deviceId"].as_str().and_then(|id| by_id.get(id)) else {
                continue;
            };
            let state = text(&r["state"]);
            if matches!(
                state.as_str(),
                "updated" | "flagged" | "rolled_back" | "backoff" | "skipped"
            ) {
                bump(row, &state);
            }
            if let Some(why) = r["failure"].as_str() {
                *reasons
                    .entry(city)
                    .or_default()
                    .entry(why.to_string())
                    .or_default() += 1;
            }
        }
        let cities = cities
            .into_iter()
            .map(|(city, mut row)| {
                let why = reasons.get(&city).map(|r| {
                    let mut r: Vec<(&String, &u64)> = r.iter().collect();
                    r.sort_by(|a, b| b.1.cmp(a.1));
                    r.iter()
                        .take(2)
                        .map(|(w, n)| format!("{w} ({n})"))
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                row.insert("city".into(), json!(city));
                row.insert("failure_reasons".into(), json!(why));
                Value::Object(row)
            })
            .collect();
        let waves: Vec<Value> = view["waves"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                let c = &w["counts"];
                json!({
                    "wave": w["name"], "status": w["status"], "devices": w["gate"]["size"],
                    "updated": c["updated"], "failed": c["failed"], "flagged": c["flagged"],
                    "rolled_back": c["rolled_back"], "rolling_back": c["rolling_back"],
                    "skipped": c["skipped"],
                })
            })
            .collect();
        let rollback_complete = waves.iter().any(|w| {
            w["wave"] == BAD_CITY && w["status"] == "rolled_back" && w["rolling_back"] == 0
        });
        Ok(Summary {
            status: text(&view["status"]),
            at: now,
            waves,
            cities,
            tripped,
            rollback_complete,
            fleet,
            elsewhere,
        })
    }

    /// Gate tripped in Boston and nowhere else, rollback complete, at least 99 % of the rest
    /// of the fleet on 2.1.0.
    pub fn story_told(&self) -> bool {
        self.tripped == [BAD_CITY]
            && self.rollback_complete
            && self.elsewhere.1 > 0
            && self.elsewhere.0 * 100 >= self.elsewhere.1 * 99
    }

    /// The summary as one JSON object.
    pub fn json(&self, cost: &Cost) -> Value {
        json!({
            "rollout": ID,
            "status": self.status,
            "simulated_end": DateTime::<Utc>::from(self.at),
            "real_seconds": tenths(cost.real.as_secs_f64()),
            "cpu_seconds": cost.json(),
            "fleet": {"devices": self.fleet.1, "on_2_1_0": self.fleet.0, "compliance_percent": pct(self.fleet.0, self.fleet.1)},
            "outside_boston": {"devices": self.elsewhere.1, "on_2_1_0": self.elsewhere.0, "compliance_percent": pct(self.elsewhere.0, self.elsewhere.1)},
            "gates_tripped": self.tripped,
            "rollback_complete": self.rollback_complete,
            "waves": self.waves,
            "cities": self.cities,
            "story_told": self.story_told(),
        })
    }

    /// The summary for people.
    pub fn text(&self, cost: &Cost) -> String {
        let mut out = format!(
            "\nThe morning after ({} New York, {:.0}s real): rollout {ID} {}\n",
            super::local(self.at),
            cost.real.as_secs_f64(),
            self.status
        );
        out.push_str(&format!(
            "fleet: {} of {} sensors on 2.1.0 ({}%); outside Boston {} of {} ({}%)\n\n",
            self.fleet.0,
            self.fleet.1,
            pct(self.fleet.0, self.fleet.1),
            self.elsewhere.0,
            self.elsewhere.1,
            pct(self.elsewhere.0, self.elsewhere.1)
        ));
        out.push_str(&columns(
            &[
                "wave",
                "status",
                "devices",
                "updated",
                "failed",
                "flagged",
                "rolled_back",
                "skipped",
            ],
            &self.waves,
            |w, n| text(&w[n]),
        ));
        out.push('\n');
        out.push_str(&columns(
            &[
                "city",
                "devices",
                "on_2_1_0",
                "updated",
                "flagged",
                "rolled_back",
                "failure_reasons",
            ],
            &self.cities,
            |c, n| match n {
                "city" => text(&c[n]),
                "failure_reasons" => short(&text(&c[n])),
                _ => c[n].as_u64().unwrap_or(0).to_string(),
            },
        ));
        let tripped = if self.tripped.is_empty() {
            "none".to_string()
        } else {
            self.tripped.join(", ")
        };
        out.push_str(&format!(
            "\ngates tripped: {tripped}; Boston's rollback complete: {}; story told: {}\n",
            yes(self.rollback_complete),
            yes(self.story_told())
        ));
        out.push_str(&cost.text());
        out
    }
}

/// A reason cut to fit a table cell.
fn short(s: &str) -> String {
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn bump(row: &mut Map<String, Value>, key: &str) {
    let n = row.get(key).and_then(Value::as_u64).unwrap_or(0);
    row.insert(key.to_string(), json!(n + 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(tripped: &[&str], rollback_complete: bool, elsewhere: (u64, u64)) -> Summary {
        Summary {
            status: "completed".into(),
            at: SystemTime::UNIX_EPOCH,
            waves: Vec::new(),
            cities: Vec::new(),
            tripped: tripped.iter().map(|s| s.to_string()).collect(),
            rollback_complete,
            fleet: (elsewhere.0, elsewhere.1 + 200),
            elsewhere,
        }
    }

    #[test]
    fn the_story_is_told_only_as_the_issue_tells_it() {
        assert!(summary(&["boston"], true, (2297, 2300)).story_told());
        assert!(
            summary(&["boston"], true, (2277, 2300)).story_told(),
            "99.0 % exactly"
        );
        assert!(!summary(&["boston"], true, (2276, 2300)).story_told());
        assert!(!summary(&["boston", "rest"], true, (2297, 2300)).story_told());
        assert!(!summary(&[], true, (2297, 2300)).story_told());
        assert!(!summary(&["boston"], false, (2297, 2300)).story_told());
        let cost = Cost {
            real: Duration::from_secs(100),
            cpu: None,
        };
        let json = summary(&["boston"], true, (2297, 2300)).json(&cost);
        assert_eq!(json["outside_boston"]["compliance_percent"], 99.9);
        assert_eq!(json["story_told"], true);
    }

    #[test]
    fn the_hub_cpu_is_reported_apart_from_the_devices() {
        let cost = Cost {
            real: Duration::from_secs(100),
            cpu: Some(HubCpu {
                process: 24.34,
                runtime: 4.06,
                store: 5.04,
                store_threads: 2,
            }),
        };
        let s = summary(&["boston"], true, (2297, 2300));
        let json = s.json(&cost);
        assert_eq!(
            json["cpu_seconds"],
            json!({"process": 24.3, "hub": 9.1, "hub_store_threads": 5.0, "devices_and_operator": 15.2})
        );
        let text = s.text(&cost);
        assert!(
            text.contains("hub 9.1 s (store threads 5.0 s), simulated devices and operator 15.2 s; whole process 24.3 s, 0.24 cores"),
            "{text}"
        );
    }
}
