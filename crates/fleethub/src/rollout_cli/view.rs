//! How a rollout reads for people: tables for `list`, `show` and `events`, and the per-wave
//! progress bars `watch` and `fleethub demo` redraw. Everything reads the hub's JSON, so the CLI
//! shows what any REST client sees.

use crate::cli::table::{columns, text};
use serde_json::Value;

/// A counter of a `counts` object (0 when absent).
pub fn n(counts: &Value, key: &str) -> u64 {
    counts[key].as_u64().unwrap_or(0)
}

/// Members of a wave or rollout, from its counts (everyone but the unassigned).
fn members(c: &Value) -> u64 {
    [
        "waiting",
        "in_progress",
        "updated",
        "failed",
        "flagged",
        "refused",
        "left",
        "skipped",
        "rolling_back",
        "rolled_back",
    ]
    .iter()
    .map(|k| n(c, k))
    .sum()
}

/// `[####~~!!rr......]`: updated, in progress, failed or flagged, rolled back (or rolling
/// back), then what waits, each in proportion.
pub fn bar(c: &Value, width: usize) -> String {
    let total = members(c).max(1);
    let parts = [
        ('#', n(c, "updated")),
        ('~', n(c, "in_progress")),
        ('!', n(c, "failed") + n(c, "flagged")),
        ('r', n(c, "rolled_back") + n(c, "rolling_back")),
    ];
    let mut out = String::with_capacity(width + 2);
    out.push('[');
    let mut used = 0;
    for (ch, count) in parts {
        let cells = ((count as f64 / total as f64) * width as f64).round() as usize;
        let cells = cells.min(width - used);
        if count > 0 {
            let cells = cells.max(1).min(width - used);
            out.extend(std::iter::repeat_n(ch, cells));
            used += cells;
        }
    }
    out.extend(std::iter::repeat_n('.', width - used));
    out.push(']');
    out
}

/// One line per wave: name, status, bar, and the counts that matter.
pub fn progress(view: &Value) -> String {
    let waves = view["waves"].as_array().cloned().unwrap_or_default();
    let name_w = waves
        .iter()
        .map(|w| text(&w["name"]).chars().count())
        .max()
        .unwrap_or(4);
    let mut out = String::new();
    for w in &waves {
        let c = &w["counts"];
        let mut notes = vec![format!("{}/{} updated", n(c, "updated"), members(c))];
        for (key, label) in [
            ("in_progress", "in progress"),
            ("failed", "failed"),
            ("flagged", "flagged"),
            ("rolling_back", "rolling back"),
            ("rolled_back", "rolled back"),
            ("skipped", "skipped"),
            ("refused", "refused"),
        ] {
            if n(c, key) > 0 {
                notes.push(format!("{} {label}", n(c, key)));
            }
        }
        out.push_str(&format!(
            "  {:<name_w$}  {:<11}  {}  {}\n",
            text(&w["name"]),
            text(&w["status"]),
            bar(c, 30),
            notes.join(", ")
        ));
    }
    out
}

/// The waves' statuses in one cell: `canary passed, boston rolled_back, rest running`.
fn waves_cell(view: &Value) -> String {
    view["waves"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| format!("{} {}", text(&w["name"]), text(&w["status"])))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// One line per rollout.
pub fn list_table(views: &[Value]) -> String {
    let names = [
        "id",
        "status",
        "version",
        "targeted",
        "updated",
        "failed",
        "flagged",
        "rolledBack",
        "pending",
        "waves",
    ];
    columns(&names, views, |v, name| match name {
        "version" => text(&v["spec"]["artifact"]["version"]),
        "waves" => waves_cell(v),
        "rolledBack" => text(&v["compliance"]["rolled_back"]),
        "targeted" | "updated" | "failed" | "flagged" | "pending" => text(&v["compliance"][name]),
        other => text(&v[other]),
    })
}

/// One rollout: its fields, the compliance view, and a line per wave with its gate.
pub fn details(v: &Value) -> String {
    let mut out = String::new();
    let spec = &v["spec"];
    let fields = [
        ("id", text(&v["id"])),
        ("status", text(&v["status"])),
        ("reason", text(&v["reason"])),
        ("version", text(&spec["artifact"]["version"])),
        ("artifact", text(&spec["artifact"]["sha256"])),
        ("target", text(&spec["target"])),
        ("created", text(&v["created"])),
        ("updated", text(&v["updated"])),
        ("next wake", text(&v["next_wake"])),
    ];
    for (k, val) in fields {
        if !val.is_empty() {
            out.push_str(&format!("{k:<12}{val}\n"));
        }
    }
    let c = &v["compliance"];
    out.push_str(&format!(
        "compliance  {} targeted: {} updated, {} failed, {} rolled back, {} pending, {} flagged, {} refused\n\n",
        n(c, "targeted"),
        n(c, "updated"),
        n(c, "failed"),
        n(c, "rolled_back"),
        n(c, "pending"),
        n(c, "flagged"),
        n(c, "refused")
    ));
    let waves = v["waves"].as_array().cloned().unwrap_or_default();
    out.push_str(&columns(
        &[
            "wave",
            "status",
            "started",
            "devices",
            "updated",
            "failed",
            "flagged",
            "rolledBack",
            "success",
            "failure",
        ],
        &waves,
        |w, name| {
            let g = &w["gate"];
            match name {
                "wave" => text(&w["name"]),
                "started" => text(&w["started_at"]),
                "devices" => text(&g["size"]),
                "updated" | "failed" | "flagged" => text(&w["counts"][name]),
                "rolledBack" => text(&w["counts"]["rolled_back"]),
                "success" => format!(
                    "{}{}",
                    text(&g["success_text"]),
                    if g["success_reached"] == true {
                        " (reached)"
                    } else {
                        ""
                    }
                ),
                "failure" => format!(
                    "{} ({} now{})",
                    text(&g["failure_text"]),
                    text(&g["failures"]),
                    if g["failure_exceeded"] == true {
                        ", exceeded"
                    } else {
                        ""
                    }
                ),
                other => text(&w[other]),
            }
        },
    ));
    out
}

/// The audit trail as a table.
pub fn events_table(events: &[Value]) -> String {
    columns(
        &["seq", "at", "kind", "wave", "device", "message"],
        events,
        |e, name| text(&e[name]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bar_shows_each_part_in_proportion_and_never_overflows() {
        let c = json!({"updated": 50, "in_progress": 25, "waiting": 25});
        assert_eq!(bar(&c, 8), "[####~~..]");
        let tiny = json!({"updated": 1, "failed": 1, "waiting": 998});
        let b = bar(&tiny, 10);
        assert_eq!(b.chars().count(), 12, "{b}");
        assert!(
            b.starts_with("[#!"),
            "a part that exists is never invisible: {b}"
        );
        let full = json!({"updated": 3, "rolled_back": 3, "flagged": 3});
        assert_eq!(bar(&full, 9).chars().count(), 11);
        assert_eq!(bar(&json!({}), 4), "[....]");
    }
}
