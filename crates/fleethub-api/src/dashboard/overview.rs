//! `GET /dashboard/overview`: the fleet in one answer — device counts, firmware versions in
//! semantic-version order, firmware update statuses, configurations' and rollouts' compliance,
//! devices flagged by rollouts, and the newest events. Each figure is a count the store keeps
//! (devices by status and reported firmware, kept in the transaction of every change; rollout
//! and configuration counters), never a scan of the devices, so the answer costs the same with a
//! million devices as with ten; it is kept for a moment so that many open dashboards, each
//! refreshing when the change feed moves, cost one computation.

use crate::auth::{Authorized, RegistryRead};
use crate::extract::HubQuery;
use crate::routes::events::PageBody;
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::Json;
use fleethub_hub::{FirmwareCount, Hub};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long one computed overview is served to everyone.
const FRESH_FOR: Duration = Duration::from_secs(2);
/// Events the overview lists.
const RECENT_EVENTS: usize = 15;
/// Rollouts the overview lists, newest first; devices flagged are summed over them.
const ROLLOUTS: usize = 20;
/// Configurations the overview lists (IoT Hub allows 100).
const CONFIGURATIONS: u64 = 100;

/// The last overview computed: when, and the newest event it reflects.
#[derive(Default)]
pub struct Cache(Mutex<Option<Cached>>);

struct Cached {
    at: Instant,
    /// Every change up to this event is counted in `body`.
    seq: i64,
    body: Value,
}

#[derive(Deserialize)]
pub struct OverviewQuery {
    /// The newest event the page has seen: an answer must count it.
    seen: Option<i64>,
}

/// The overview, computed at most every 2 s for everyone, except that a page which saw a newer
/// event than the last computation gets a fresh one (so a live update never shows the figures
/// from before the event that triggered it).
pub async fn overview(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    HubQuery(query): HubQuery<OverviewQuery>,
) -> Result<Json<Value>, ApiError> {
    let seen = query.seen.unwrap_or(0);
    if let Some(cached) = state.dashboard.overview.0.lock().as_ref() {
        if cached.at.elapsed() < FRESH_FOR && cached.seq >= seen {
            return Ok(Json(cached.body.clone()));
        }
    }
    let seq = state.hub.last_event_seq().await?;
    let body = compute(&state.hub).await?;
    *state.dashboard.overview.0.lock() = Some(Cached {
        at: Instant::now(),
        seq,
        body: body.clone(),
    });
    Ok(Json(body))
}

async fn compute(hub: &Hub) -> Result<Value, ApiError> {
    let counts = hub.device_statistics().await?;
    let firmware = hub.firmware_counts().await?;
    let versions = sum_by(&firmware, |c| &c.version);
    let statuses = sum_by(&firmware, |c| &c.status);
    let configurations = hub.list_configurations(Some(CONFIGURATIONS)).await?;
    let events = hub.latest_events(RECENT_EVENTS).await?;
    let rollouts = hub.list_rollouts(ROLLOUTS).await?;
    let flagged: u64 = rollouts
        .iter()
        .map(|r| u64::from(r.compliance.flagged))
        .sum();
    Ok(json!({
        "devices": {
            "total": counts.total,
            "enabled": counts.enabled,
            "disabled": counts.disabled,
            "connected": hub.connected_device_count(),
        },
        "firmware": {
            "versions": in_semver_order(versions),
            "statuses": statuses
                .into_iter()
                .map(|(status, devices)| json!({ "status": status, "devices": devices }))
                .collect::<Vec<_>>(),
        },
        "configurations": configurations
            .iter()
            .map(|c| json!({
                "id": c.id,
                "priority": c.priority,
                "targetCondition": c.target_condition,
                "targeted": c.system_metrics.results.get("targetedCount").copied().unwrap_or(0),
                "applied": c.system_metrics.results.get("appliedCount").copied().unwrap_or(0),
            }))
            .collect::<Vec<_>>(),
        "rollouts": rollouts
            .iter()
            .map(|r| json!({
                "id": r.id,
                "status": r.status,
                "targeted": r.compliance.targeted,
                "updated": r.compliance.updated,
                "failed": r.compliance.failed,
                "rolledBack": r.compliance.rolled_back,
                "flagged": r.compliance.flagged,
            }))
            .collect::<Vec<_>>(),
        "flagged": flagged,
        "events": PageBody::from(events),
    }))
}

/// Devices per value of one firmware field, summed over the other; devices without it count
/// under `None`. In the order the store gives (the field's JSON text).
fn sum_by(
    counts: &[FirmwareCount],
    field: impl Fn(&FirmwareCount) -> &Option<Value>,
) -> Vec<(Option<Value>, u64)> {
    let mut out: Vec<(Option<Value>, u64)> = Vec::new();
    for count in counts {
        let value = field(count);
        match out.iter_mut().find(|(v, _)| v == value) {
            Some((_, devices)) => *devices += count.devices,
            None => out.push((value.clone(), count.devices)),
        }
    }
    out
}

/// Firmware versions oldest to newest by semantic version (`1.10.0` after `1.9.0`), then the
/// values that are not versions, then the devices that report none.
fn in_semver_order(groups: Vec<(Option<Value>, u64)>) -> Vec<Value> {
    let mut named: Vec<(String, u64)> = Vec::new();
    let mut unreported = 0;
    for (value, devices) in groups {
        match value {
            Some(Value::String(version)) => named.push((version, devices)),
            Some(other) => named.push((other.to_string(), devices)),
            None => unreported += devices,
        }
    }
    named.sort_by(|(a, _), (b, _)| fleethub_core::semver::compare(a, b));
    let mut out: Vec<Value> = named
        .into_iter()
        .map(|(version, devices)| json!({ "version": version, "devices": devices }))
        .collect();
    if unreported > 0 {
        out.push(json!({ "version": null, "devices": unreported }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_semver_then_other_values_then_unreported() {
        let groups = vec![
            (Some(json!("1.10.0")), 1),
            (None, 4),
            (Some(json!("custom")), 2),
            (Some(json!("1.9.0")), 3),
            (Some(json!("1.10.0-rc.1")), 5),
            (Some(json!("0.9.12")), 6),
        ];
        let order: Vec<Value> = in_semver_order(groups)
            .into_iter()
            .map(|v| v["version"].clone())
            .collect();
        assert_eq!(
            order,
            vec![
                json!("0.9.12"),
                json!("1.9.0"),
                json!("1.10.0-rc.1"),
                json!("1.10.0"),
                json!("custom"),
                Value::Null
            ]
        );
    }
}
