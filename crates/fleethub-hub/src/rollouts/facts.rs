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
use std::collections::BTreeMap;

/// Devices read per page while resolving a target.
const PAGE: usize = 1000;

/// A rollout's target and wave queries, parsed once: what decides whether a changed twin
/// joins or leaves it.
pub(crate) struct Targeting {
    pub target: Condition,
    pub waves: WaveQueries,
}

impl Targeting {
    pub(crate) fn parse(spec: &RolloutSpec) -> HubResult<Targeting> {
        Ok(Targeting {
            target: super::parse_condition("target", &spec.target)?,
            waves: WaveQueries::parse(spec)?,
        })
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
