//! Judging expectations against twins as the hub serves them (what an operator sees), not
//! against the simulator's own counters.

use crate::scenario::{Amount, Expectation, Matcher, Quantity, Target};
use fleethub_core::firmware::ReportedFirmware;
use serde::Serialize;
use serde_json::Value;

/// The value at a dotted path from the twin's root.
pub fn lookup<'a>(twin: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(twin, |v, key| v.get(key))
}

/// Whether one twin counts for the matcher.
pub fn matches(matcher: &Matcher, twin: &Value) -> bool {
    let reported = || ReportedFirmware::from_twin(twin);
    match matcher {
        Matcher::ReportedFirmware(v) => reported().is_some_and(|r| &r.current_version == v),
        Matcher::Status(s) => reported().is_some_and(|r| r.status == *s),
        Matcher::Connected(c) => {
            (lookup(twin, "connectionState").and_then(Value::as_str) == Some("Connected")) == *c
        }
        Matcher::Path { path, equals } => lookup(twin, path) == Some(equals),
    }
}

/// How many of the targeted twins matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Measure {
    pub matched: u64,
    /// Devices targeted (a twin the hub could not return counts as not matching).
    pub total: u64,
}

impl Measure {
    /// Counts matches over fetched twins; `None` is a twin the hub did not return.
    pub fn over<'a>(
        matcher: &Matcher,
        twins: impl IntoIterator<Item = Option<&'a Value>>,
    ) -> Measure {
        let mut m = Measure::default();
        for twin in twins {
            m.total += 1;
            if twin.is_some_and(|t| matches(matcher, t)) {
                m.matched += 1;
            }
        }
        m
    }

    /// Matched share in percent (0 when nothing was targeted).
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.matched as f64 * 100.0 / self.total as f64
        }
    }
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} ({:.1}%)",
            self.matched,
            self.total,
            self.percent()
        )
    }
}

/// Devices an amount stands for, out of `total`: a floor's share rounds up (at least 99% of
/// 250 is 248), a ceiling's rounds down (at most 1% of 250 is 2).
fn devices(amount: Amount, total: u64, floor: bool) -> u64 {
    match amount {
        Amount::Devices(n) => n,
        Amount::Percent(p) => {
            let exact = (p / 100.0) * total as f64;
            let rounded = if floor {
                (exact - 1e-9).ceil()
            } else {
                (exact + 1e-9).floor()
            };
            rounded.max(0.0) as u64
        }
    }
}

/// Whether the measure satisfies the quantity. An empty target satisfies nothing but a ceiling.
pub fn satisfied(quantity: Quantity, m: Measure) -> bool {
    match quantity {
        Quantity::AtLeast(a) => m.total > 0 && m.matched >= devices(a, m.total, true).max(1),
        Quantity::AtMost(a) => m.matched <= devices(a, m.total, false),
        Quantity::Exactly(n) => m.matched == n,
    }
}

/// Whether the verdict can be given before the deadline: floors and exact counts pass as soon
/// as they are met; a ceiling is judged at the deadline.
pub fn decides_early(quantity: Quantity) -> bool {
    !matches!(quantity, Quantity::AtMost(_))
}

/// One line saying what an expectation asks, for the report.
pub fn describe(e: &Expectation) -> String {
    let who = match &e.target {
        Target::All => "all devices".to_string(),
        Target::Groups(g) => format!("group {}", g.join("+")),
        Target::Devices(d) if d.len() <= 3 => d.join(", "),
        Target::Devices(d) => format!("{} devices", d.len()),
        Target::Query(q) => format!("query \"{q}\""),
    };
    let what = match &e.matcher {
        Matcher::ReportedFirmware(v) => format!("reported firmware {v}"),
        Matcher::Status(s) => format!("firmware status {s}"),
        Matcher::Connected(true) => "connected".into(),
        Matcher::Connected(false) => "disconnected".into(),
        Matcher::Path { path, equals } => format!("{path} = {equals}"),
    };
    let how = match e.quantity {
        Quantity::AtLeast(a) => format!("at least {a}"),
        Quantity::AtMost(a) => format!("at most {a}"),
        Quantity::Exactly(n) => format!("exactly {n}"),
    };
    let from = e
        .after
        .as_ref()
        .map_or("the start".to_string(), |s| format!("step {s}"));
    format!("{who}: {what}, {how}, within {} of {from}", e.within)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleethub_core::firmware::UpdateStatus;
    use serde_json::json;

    fn twin(version: &str, status: &str, state: &str) -> Value {
        json!({
            "deviceId": "d",
            "connectionState": state,
            "tags": {"city": "boston"},
            "properties": {
                "desired": {"firmware": {"version": "2.1.0"}},
                "reported": {"firmware": {"current_version": version, "status": status}}
            }
        })
    }

    fn fleet() -> Vec<Option<Value>> {
        vec![
            Some(twin("2.1.0", "success", "Connected")),
            Some(twin("2.1.0", "success", "Connected")),
            Some(twin("1.0.0", "rolled_back", "Disconnected")),
            Some(json!({"deviceId": "new", "properties": {"reported": {}}})),
            None,
        ]
    }

    fn measure(m: Matcher) -> Measure {
        let f = fleet();
        Measure::over(&m, f.iter().map(Option::as_ref))
    }

    #[test]
    fn matchers_read_the_twin_as_the_hub_serves_it() {
        assert_eq!(
            measure(Matcher::ReportedFirmware("2.1.0".into())),
            Measure {
                matched: 2,
                total: 5
            }
        );
        assert_eq!(
            measure(Matcher::Status(UpdateStatus::RolledBack)).matched,
            1
        );
        assert_eq!(measure(Matcher::Status(UpdateStatus::Success)).matched, 2);
        assert_eq!(measure(Matcher::Connected(true)).matched, 2);
        // A missing twin is neither connected nor disconnected as far as counting goes.
        assert_eq!(measure(Matcher::Connected(false)).matched, 2);
        let tag = Matcher::Path {
            path: "tags.city".into(),
            equals: json!("boston"),
        };
        assert_eq!(measure(tag).matched, 3);
        let nothing = Matcher::Path {
            path: "properties.reported.nope".into(),
            equals: json!(1),
        };
        assert_eq!(measure(nothing).matched, 0);
    }

    #[test]
    fn quantities_compare_counts_and_shares() {
        let m = |matched, total| Measure { matched, total };
        let pct = |p| Amount::Percent(p);
        assert!(satisfied(Quantity::AtLeast(pct(99.0)), m(248, 250)));
        assert!(!satisfied(Quantity::AtLeast(pct(99.0)), m(247, 250)));
        assert!(satisfied(Quantity::AtLeast(pct(100.0)), m(3, 3)));
        assert!(!satisfied(Quantity::AtLeast(pct(100.0)), m(0, 0)));
        assert!(
            !satisfied(Quantity::AtLeast(pct(0.0)), m(0, 4)),
            "at least 0% still needs one device"
        );
        assert!(satisfied(Quantity::AtLeast(Amount::Devices(2)), m(2, 50)));
        assert!(satisfied(Quantity::AtMost(pct(1.0)), m(2, 250)));
        assert!(!satisfied(Quantity::AtMost(pct(1.0)), m(3, 250)));
        assert!(satisfied(Quantity::AtMost(Amount::Devices(0)), m(0, 250)));
        assert!(satisfied(Quantity::AtMost(Amount::Devices(0)), m(0, 0)));
        assert!(satisfied(Quantity::Exactly(3), m(3, 9)));
        assert!(!satisfied(Quantity::Exactly(3), m(4, 9)));
        assert!(decides_early(Quantity::Exactly(3)));
        assert!(!decides_early(Quantity::AtMost(pct(1.0))));
    }

    #[test]
    fn the_measure_reads_as_count_and_share() {
        assert_eq!(
            Measure {
                matched: 2,
                total: 3
            }
            .to_string(),
            "2/3 (66.7%)"
        );
        assert_eq!(Measure::default().to_string(), "0/0 (0.0%)");
    }
}
