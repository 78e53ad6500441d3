//! What a rollout machine needs to know of a device, read from its twin: its reported firmware,
//! its zone (the window's device-zone path), and which query waves' conditions it matches.

use crate::twin::TwinState;
use crate::Hub;
use fleethub_core::firmware::ReportedFirmware;
use fleethub_core::HubResult;
use fleethub_query::Condition;
use fleethub_rollout::{DeviceFacts, RolloutSpec, Selector};
use fleethub_store::{Reads, StoreError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Devices read per page while resolving a target.
const PAGE: usize = 1000;

/// A rollout's target and wave queries, parsed once: what decides whether a changed twin
/// joins or leaves it.
pub(crate) struct Targeting {
    pub target: Condition,
    pub waves: WaveQueries,
    /// What of a reported patch the target reads.
    pub reported: ReportedReads,
}

impl Targeting {
    pub(crate) fn parse(spec: &RolloutSpec) -> HubResult<Targeting> {
        let target = super::parse_condition("target", &spec.target)?;
        Ok(Targeting {
            reported: ReportedReads::of(&target),
            target,
            waves: WaveQueries::parse(spec)?,
        })
    }
}

/// Which top-level reported properties a target reads. A reported patch that touches none of
/// them leaves the target's answer as it was, so membership is not judged again for it and the
/// twin is not read: under a fleet's steady reports (sensor values, telemetry in the twin) a
/// target on tags and firmware costs a report nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReportedReads {
    /// These properties of `properties.reported` (none for a target on tags or ids).
    Keys(BTreeSet<String>),
    /// Something every reported patch moves: the section as a whole, its `$version` or
    /// `$metadata`, the twin's `$version`, or a root the hub may restamp with it.
    Everything,
}

impl ReportedReads {
    pub(crate) fn of(target: &Condition) -> ReportedReads {
        let mut keys = BTreeSet::new();
        for path in target.paths() {
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            match segments.as_slice() {
                ["properties", "reported", key, ..] if !key.starts_with('$') => {
                    keys.insert(key.to_string());
                }
                ["properties", "desired", ..]
                | ["deviceId" | "status" | "connectionState" | "tags", ..] => {}
                _ => return ReportedReads::Everything,
            }
        }
        ReportedReads::Keys(keys)
    }

    /// Whether a reported patch with these top-level properties may change the answer.
    pub(crate) fn touched_by(&self, patched: &[String]) -> bool {
        match self {
            ReportedReads::Everything => true,
            ReportedReads::Keys(keys) => patched.iter().any(|k| keys.contains(k)),
        }
    }

    /// What either reads: a patch touches the union when it touches one of them.
    pub(crate) fn widen(&mut self, other: &ReportedReads) {
        match (&mut *self, other) {
            (ReportedReads::Everything, _) => {}
            (_, ReportedReads::Everything) => *self = ReportedReads::Everything,
            (ReportedReads::Keys(mine), ReportedReads::Keys(theirs)) => {
                mine.extend(theirs.iter().cloned())
            }
        }
    }
}

impl Default for ReportedReads {
    /// Reads nothing reported (no target yet).
    fn default() -> Self {
        ReportedReads::Keys(BTreeSet::new())
    }
}

/// The query waves' conditions, by wave index.
pub(crate) struct WaveQueries {
    waves: Vec<(usize, Condition)>,
    /// The twin path of each device's zone (`tags.tz`), as segments.
    zone_path: Option<Vec<String>>,
}

impl WaveQueries {
    /// Parses every query wave's condition; a bad one is 400 naming the wave.
    pub(crate) fn parse(spec: &RolloutSpec) -> HubResult<WaveQueries> {
        let mut waves = Vec::new();
        for (i, w) in spec.waves.iter().enumerate() {
            if let Selector::Query(q) = &w.select {
                let what = format!("waves[{i}].select.query");
                waves.push((i, super::parse_condition(&what, q)?));
            }
        }
        let zone_path = spec
            .window
            .as_ref()
            .and_then(|w| w.device_zone.as_ref())
            .map(|p| p.split('.').map(str::to_string).collect());
        Ok(WaveQueries { waves, zone_path })
    }

    /// The facts of one twin (in the query language's shape).
    pub(crate) fn facts(&self, id: &str, doc: &Value) -> DeviceFacts {
        let firmware = ReportedFirmware::from_twin(doc);
        let zone = self.zone_path.as_ref().and_then(|path| {
            let mut v = doc;
            for seg in path {
                v = v.get(seg)?;
            }
            v.as_str().map(str::to_string)
        });
        DeviceFacts {
            id: id.to_string(),
            version: firmware
                .as_ref()
                .map(|f| f.current_version.clone())
                .or_else(|| {
                    doc.pointer("/properties/reported/firmware/current_version")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                }),
            status: firmware.map(|f| f.status),
            zone,
            matches: self
                .waves
                .iter()
                .filter(|(_, c)| c.matches(doc))
                .map(|(i, _)| *i)
                .collect(),
        }
    }
}

impl Hub {
    /// The facts of every device `target` selects now, in id order.
    pub(crate) async fn target_facts(
        &self,
        target: Condition,
        waves: WaveQueries,
        _spec: &RolloutSpec,
    ) -> HubResult<Vec<DeviceFacts>> {
        let fragment = target.to_sql(self.store().dialect());
        let hub = self.clone();
        self.store()
            .read(move |r| {
                let mut out = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let ids = r.devices_matching(&fragment, after.as_deref(), PAGE)?;
                    for id in &ids {
                        if let Some(doc) = evaluation_doc(&hub, r, id)? {
                            out.push(waves.facts(id, &doc));
                        }
                    }
                    if ids.len() < PAGE {
                        return Ok(out);
                    }
                    after = ids.last().cloned();
                }
            })
            .await
            .map_err(Into::into)
    }

    /// The twins of `ids` as conditions read them; `None` for a device that no longer exists.
    pub(crate) async fn twin_docs(
        &self,
        ids: Vec<String>,
    ) -> HubResult<BTreeMap<String, Option<Value>>> {
        let hub = self.clone();
        self.store()
            .read(move |r| {
                let mut out = BTreeMap::new();
                for id in ids {
                    let doc = evaluation_doc(&hub, r, &id)?;
                    out.insert(id, doc);
                }
                Ok(out)
            })
            .await
            .map_err(Into::into)
    }

    /// Which of `ids` have twins that `condition` matches now.
    pub(crate) async fn matching_twins(
        &self,
        condition: Condition,
        ids: Vec<String>,
    ) -> HubResult<Vec<String>> {
        let hub = self.clone();
        self.store()
            .read(move |r| {
                let mut out = Vec::new();
                for id in ids {
                    if let Some(doc) = evaluation_doc(&hub, r, &id)? {
                        if condition.matches(&doc) {
                            out.push(id);
                        }
                    }
                }
                Ok(out)
            })
            .await
            .map_err(Into::into)
    }
}

/// A device's twin as conditions read it; `None` if it no longer exists.
fn evaluation_doc(hub: &Hub, r: &impl Reads, id: &str) -> Result<Option<Value>, StoreError> {
    let Some(row) = r.get_device(id)? else {
        return Ok(None);
    };
    let twin = TwinState::from_row(&row).map_err(|e| StoreError::Other(e.message))?;
    Ok(Some(
        twin.evaluation_document(hub.connections().is_connected(id)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(target: &str) -> ReportedReads {
        ReportedReads::of(&Condition::parse(target).unwrap())
    }

    fn keys(names: &[&str]) -> ReportedReads {
        ReportedReads::Keys(names.iter().map(|k| k.to_string()).collect())
    }

    #[test]
    fn a_target_reads_the_reported_properties_its_paths_name() {
        assert_eq!(reads("tags.product = 'aq' AND deviceId != 'x'"), keys(&[]));
        assert_eq!(reads("*"), keys(&[]));
        assert_eq!(
            reads("SEMVER(properties.reported.firmware.current_version) < '2.1.0' AND properties.desired.x = 1"),
            keys(&["firmware"])
        );
        assert_eq!(
            reads("Properties.Reported.a = 1 OR IS_DEFINED(properties.reported.b.c)"),
            keys(&["a", "b"])
        );
    }

    #[test]
    fn reads_widened_by_another_target_are_touched_by_what_touches_either() {
        let mut union = ReportedReads::default();
        assert!(!union.touched_by(&["firmware".into()]));
        union.widen(&keys(&["firmware"]));
        union.widen(&keys(&["sensors"]));
        assert_eq!(union, keys(&["firmware", "sensors"]));
        assert!(union.touched_by(&["sensors".into()]));
        assert!(!union.touched_by(&["battery".into()]));
        union.widen(&ReportedReads::Everything);
        union.widen(&keys(&["x"]));
        assert_eq!(union, ReportedReads::Everything);
    }

    #[test]
    fn a_target_on_what_every_reported_patch_moves_reads_everything() {
        for target in [
            "IS_DEFINED(properties.reported)",
            "IS_OBJECT(properties)",
            "properties.reported.$version > 3",
            "IS_DEFINED(properties.reported.$metadata.firmware)",
            "$version > 3",
            "lastActivityTime > '2026-01-01'",
            "configurations.c1.status = 'Applied'",
        ] {
            assert_eq!(reads(target), ReportedReads::Everything, "{target}");
        }
    }

    #[test]
    fn a_patch_matters_when_it_touches_a_key_the_target_reads() {
        let fw = keys(&["firmware"]);
        assert!(fw.touched_by(&["sensors".into(), "firmware".into()]));
        assert!(!fw.touched_by(&["sensors".into()]));
        assert!(!keys(&[]).touched_by(&["firmware".into()]));
        assert!(ReportedReads::Everything.touched_by(&["sensors".into()]));
    }
}
