//! `fleethub rollout plan` and `rehearse`: a rollout played out on simulated time against a
//! model of the devices it targets (`fleethub_rollout::rehearsal`), printed for people or as
//! JSON. `plan` assumes every device healthy and answers which wave takes each device and when
//! its window and batch let it be pushed; `rehearse` adds the failure rates the operator
//! expects and answers what the waves and gates would do, and when.

use crate::cli::table::columns;
use chrono::{DateTime, Utc};
use fleethub_rollout::rehearsal::Rehearsal;
use fleethub_rollout::DeviceState;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `2026-12-03 07:00 UTC`.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `+14h20m` after `start`.
pub fn offset(start: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let mins = (t - start).num_minutes().max(0);
    match (mins / 60, mins % 60) {
        (0, m) => format!("+{m}m"),
        (h, 0) => format!("+{h}h"),
        (h, m) => format!("+{h}h{m:02}m"),
    }
}

/// Per wave: devices, first and last push, and the zones they are pushed in.
fn wave_rows(r: &Rehearsal) -> Vec<Value> {
    let mut rows: Vec<Value> = Vec::new();
    let names: Vec<String> = r.waves.iter().map(|w| w.name.clone()).collect();
    for name in &names {
        let members: Vec<_> = r
            .devices
            .iter()
            .filter(|d| d.wave.as_deref() == Some(name.as_str()))
            .collect();
        let pushes: Vec<DateTime<Utc>> = members.iter().filter_map(|d| d.first_push).collect();
        let mut zones: BTreeMap<String, usize> = BTreeMap::new();
        for d in &members {
            *zones.entry(d.zone.clone().unwrap_or_default()).or_default() += 1;
        }
        let status = r.waves.iter().find(|w| &w.name == name).map(|w| w.status);
        rows.push(json!({
            "wave": name,
            "status": status,
            "devices": members.len(),
            "pushed": pushes.len(),
            "first_push": pushes.iter().min(),
            "last_push": pushes.iter().max(),
            "zones": zones,
        }));
    }
    rows
}

fn count(r: &Rehearsal, state: fn(&DeviceState) -> bool) -> usize {
    r.devices.iter().filter(|d| state(&d.state)).count()
}

/// The plan as JSON: waves, and every device with its wave and first push.
pub fn plan_json(r: &Rehearsal) -> Value {
    json!({
        "started_at": r.started_at,
        "completes_at": (r.status == fleethub_rollout::Status::Completed).then_some(r.ended_at),
        "waves": wave_rows(r),
        "devices": r.devices.iter().map(|d| json!({
            "id": d.id, "wave": d.wave, "zone": d.zone, "push_at": d.first_push, "state": d.state,
        })).collect::<Vec<_>>(),
    })
}

/// The plan for people: per wave, when its devices are pushed; with `devices`, each device.
pub fn plan_text(r: &Rehearsal, devices: bool) -> String {
    let start = r.started_at;
    let rows = wave_rows(r);
    let mut out = format!(
        "plan from {} with every device healthy: {} devices targeted\n\n",
        when(start),
        r.devices.len()
    );
    let time = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<DateTime<Utc>>().ok())
            .map(|t| format!("{} ({})", when(t), offset(start, t)))
            .unwrap_or_else(|| "-".into())
    };
    out.push_str(&columns(
        &["wave", "devices", "first push", "last push", "zones"],
        &rows,
        |row, name| match name {
            "wave" => crate::cli::table::text(&row["wave"]),
            "devices" => row["devices"].to_string(),
            "first push" => time(&row["first_push"]),
            "last push" => time(&row["last_push"]),
            _ => row["zones"]
                .as_object()
                .map(|z| {
                    z.iter()
                        .map(|(zone, n)| format!("{zone} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        },
    ));
    let unassigned = count(r, |s| *s == DeviceState::Unassigned);
    let refused = count(r, |s| *s == DeviceState::Refused);
    if unassigned + refused > 0 {
        out.push_str(&format!(
            "\nnot pushed: {unassigned} unassigned (no wave takes them), {refused} refused (they run a newer version)\n"
        ));
    }
    match r.status {
        fleethub_rollout::Status::Completed => out.push_str(&format!(
            "\ncompletes {} ({})\n",
            when(r.ended_at),
            offset(start, r.ended_at)
        )),
        _ => out.push_str(&format!(
            "\nnot complete by {} ({})\n",
            when(r.ended_at),
            offset(start, r.ended_at)
        )),
    }
    if devices {
        let mut items: Vec<Value> = r
            .devices
            .iter()
            .map(|d| json!({"id": d.id, "wave": d.wave, "zone": d.zone, "push": d.first_push.map(when)}))
            .collect();
        items.sort_by_key(|v| {
            (
                v["push"].as_str().unwrap_or("~").to_string(),
                v["id"].as_str().unwrap_or_default().to_string(),
            )
        });
        out.push('\n');
        out.push_str(&columns(&["id", "wave", "zone", "push"], &items, |v, n| {
            crate::cli::table::text(&v[n])
        }));
    }
    out
}

/// Per wave: how its devices ended.
fn outcome_rows(r: &Rehearsal) -> Vec<Value> {
    r.waves
        .iter()
        .map(|w| {
            let c = w.counts;
            json!({
                "wave": w.name, "status": w.status, "devices": c.gate_size() + c.refused,
                "updated": c.updated, "failed": c.failed, "flagged": c.flagged,
                "rolled_back": c.rolled_back, "skipped": c.skipped,
                "pending": c.waiting + c.in_progress + c.rolling_back,
                "started_at": w.started_at,
            })
        })
        .collect()
}

/// The rehearsal as JSON: milestones, waves, and the devices that failed.
pub fn rehearse_json(r: &Rehearsal) -> Value {
    json!({
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "status": r.status,
        "milestones": r.milestones().collect::<Vec<_>>(),
        "waves": outcome_rows(r),
        "failed_devices": r.devices.iter().filter(|d| d.failure.is_some()).collect::<Vec<_>>(),
    })
}

/// The rehearsal for people: what happens when, then how each wave ends.
pub fn rehearse_text(r: &Rehearsal) -> String {
    let start = r.started_at;
    let mut out = format!(
        "rehearsal from {} over {} devices\n\n",
        when(start),
        r.devices.len()
    );
    for e in r.milestones() {
        out.push_str(&format!(
            "{:>9}  {}  {}\n",
            offset(start, e.at),
            when(e.at),
            e.message
        ));
    }
    let failures: usize = r
        .events
        .iter()
        .filter(|e| e.kind == fleethub_rollout::EventKind::DeviceFailed)
        .count();
    out.push_str(&format!("\n{failures} failed attempts in all\n\n"));
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
            "pending",
        ],
        &outcome_rows(r),
        |v, n| crate::cli::table::text(&v[n]),
    ));
    let ended = match r.status {
        fleethub_rollout::Status::Completed => "completed",
        fleethub_rollout::Status::Paused => "paused (an operator must act)",
        fleethub_rollout::Status::Running => "still running at the horizon",
        fleethub_rollout::Status::Aborted => "aborted",
        fleethub_rollout::Status::Superseded => "superseded",
    };
    out.push_str(&format!(
        "\n{ended} at {} ({})\n",
        when(r.ended_at),
        offset(start, r.ended_at)
    ));
    out
}
