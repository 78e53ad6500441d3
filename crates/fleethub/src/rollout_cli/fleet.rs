//! The devices a rollout would take, as the registry has them now: what `plan` and `rehearse`
//! play the rollout against. The hub evaluates the queries (the target, and each query wave
//! within it); the twins give each device's version, update status and, for device-local
//! windows, its zone.

use anyhow::{Context, Result};
use fleethub_client::HubClient;
use fleethub_core::firmware::UpdateStatus;
use fleethub_rollout::{DeviceFacts, RolloutSpec, Selector};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Twins read per request.
const PAGE: usize = 1000;

/// Every device matching the spec's target, with what the rollout needs to know of it.
pub async fn targeted(rest: &HubClient, spec: &RolloutSpec) -> Result<Vec<DeviceFacts>> {
    let target = spec.target.trim();
    let twins = rest
        .query_all(&format!("SELECT * FROM devices WHERE {target}"), PAGE)
        .await
        .context("reading the target's devices")?;
    let mut matches: HashMap<String, Vec<usize>> = HashMap::new();
    for (w, wave) in spec.waves.iter().enumerate() {
        if let Selector::Query(q) = &wave.select {
            let query = format!("SELECT deviceId FROM devices WHERE ({target}) AND ({q})");
            let ids: HashSet<String> = rest
                .query_ids(&query)
                .await
                .with_context(|| format!("reading wave {}'s devices", wave.name))?
                .into_iter()
                .collect();
            for id in ids {
                matches.entry(id).or_default().push(w);
            }
        }
    }
    let zone_path = spec.window.as_ref().and_then(|w| w.device_zone.clone());
    Ok(twins
        .iter()
        .filter_map(|twin| {
            let id = twin["deviceId"].as_str()?.to_string();
            Some(facts(
                twin,
                matches.remove(&id).unwrap_or_default(),
                zone_path.as_deref(),
            ))
        })
        .collect())
}

/// One twin as the rollout sees it.
fn facts(twin: &Value, matches: Vec<usize>, zone_path: Option<&str>) -> DeviceFacts {
    let firmware = &twin["properties"]["reported"]["firmware"];
    DeviceFacts {
        id: twin["deviceId"].as_str().unwrap_or_default().to_string(),
        version: firmware["current_version"].as_str().map(str::to_string),
        status: serde_json::from_value::<UpdateStatus>(firmware["status"].clone()).ok(),
        zone: zone_path
            .and_then(|p| at_path(twin, p))
            .and_then(Value::as_str)
            .map(str::to_string),
        matches,
    }
}

/// The value at a dotted twin path (`tags.tz`, `properties.reported.tz`).
fn at_path<'a>(twin: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(twin, |v, key| v.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_twin_gives_its_version_status_and_zone() {
        let twin = json!({
            "deviceId": "boston-1",
            "tags": {"tz": "America/New_York"},
            "properties": {"reported": {"firmware": {"current_version": "1.0.0", "status": "idle"}}}
        });
        let f = facts(&twin, vec![1], Some("tags.tz"));
        assert_eq!(f.id, "boston-1");
        assert_eq!(f.version.as_deref(), Some("1.0.0"));
        assert_eq!(f.status, Some(UpdateStatus::Idle));
        assert_eq!(f.zone.as_deref(), Some("America/New_York"));
        assert_eq!(f.matches, vec![1]);
        let bare = facts(&json!({"deviceId": "x"}), vec![], Some("tags.tz"));
        assert_eq!((bare.version, bare.status, bare.zone), (None, None, None));
    }
}
