//! Who is in the fleet: every device's id, key, group and seed, derived from the run's seed and
//! the device's index, so every process (and every rerun) agrees without being told.

use crate::scenario::Scenario;
use base64::Engine;
use fleethub_client::{ClientError, HubClient, BULK_LIMIT};
use fleethub_sim::esp32::{Behavior, DeviceSpec};
use fleethub_sim::FirmwareKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::sync::Arc;

/// One group's slice of the fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RosterGroup {
    pub name: String,
    /// Index of its first device in the fleet.
    pub first: usize,
    pub count: usize,
    /// What comes between the prefix and the number in its device ids (`boston-`, or nothing).
    pub stem: String,
    pub factory_version: String,
    pub tags: Map<String, Value>,
    pub behavior: Arc<Behavior>,
}

/// The whole fleet, in index order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Roster {
    pub seed: u64,
    pub prefix: String,
    pub groups: Vec<RosterGroup>,
}

impl Roster {
    /// Creates (or updates) every device of the roster with its derived key and its group's
    /// tags, a bulk call per [`BULK_LIMIT`] devices, four calls in flight.
    pub async fn register(&self, client: &HubClient) -> Result<(), ClientError> {
        let chunks = self.groups.iter().flat_map(|g| {
            let ids: Vec<String> = (g.first..g.first + g.count)
                .map(|i| self.device_id(i))
                .collect();
            ids.chunks(BULK_LIMIT)
                .map(|chunk| {
                    chunk
                        .iter()
                        .map(|id| {
                            let key = self.key(id);
                            json!({
                                "id": id,
                                "importMode": "createOrUpdate",
                                "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
                                "tags": g.tags,
                            })
                        })
                        .collect::<Vec<Value>>()
                })
                .collect::<Vec<_>>()
        });
        client.bulk_each(chunks, 4).await
    }

    /// Lays the groups out one after another; with one group and `bare_ids` the ids are
    /// `{prefix}{n}` (the flag-driven fleet), otherwise `{prefix}{group}-{n}`.
    pub fn new(scenario: &Scenario, bare_ids: bool) -> Roster {
        let mut first = 0;
        let groups = scenario
            .groups
            .iter()
            .map(|g| {
                let group = RosterGroup {
                    name: g.name.clone(),
                    first,
                    count: g.count,
                    stem: if bare_ids && scenario.groups.len() == 1 {
                        String::new()
                    } else {
                        format!("{}-", g.name)
                    },
                    factory_version: g.firmware.clone(),
                    tags: g.tags.clone(),
                    behavior: Arc::new(g.behavior.clone()),
                };
                first += g.count;
                group
            })
            .collect();
        Roster {
            seed: scenario.simulation.seed,
            prefix: scenario.simulation.prefix.clone(),
            groups,
        }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.groups.last().map_or(0, |g| g.first + g.count)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn group_at(&self, index: usize) -> &RosterGroup {
        self.groups
            .iter()
            .find(|g| (g.first..g.first + g.count).contains(&index))
            .expect("index inside the roster")
    }

    /// The id of the device at `index`.
    pub fn device_id(&self, index: usize) -> String {
        let g = self.group_at(index);
        format!("{}{}{}", self.prefix, g.stem, index - g.first)
    }

    /// Every device id of a group, in index order.
    pub fn group_ids(&self, name: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|g| g.name == name)
            .flat_map(|g| g.first..g.first + g.count)
            .map(|i| self.device_id(i))
            .collect()
    }

    /// Every device id, in index order.
    pub fn all_ids(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.device_id(i)).collect()
    }

    /// The device's symmetric key: derived from the seed and id, so a rerun with the same seed
    /// and prefix connects devices that an earlier `--register` created.
    pub fn key(&self, device_id: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"fleethub-simulate-key/1\0");
        h.update(self.seed.to_le_bytes());
        h.update(device_id.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(h.finalize())
    }

    /// The device's fault seed (the device library's own derivation from run seed and index).
    pub fn device_seed(&self, index: usize) -> u64 {
        fleethub_sim::esp32::device_seed(self.seed, index)
    }

    /// Specs of the devices in `range`, pinning `firmware_key` if given.
    pub fn specs(
        &self,
        range: Range<usize>,
        firmware_key: Option<Arc<FirmwareKey>>,
    ) -> Vec<DeviceSpec> {
        range
            .map(|index| {
                let g = self.group_at(index);
                let device_id = self.device_id(index);
                DeviceSpec {
                    key: self.key(&device_id),
                    device_id,
                    group: g.name.clone(),
                    factory_version: g.factory_version.clone(),
                    behavior: g.behavior.clone(),
                    seed: self.device_seed(index),
                    index,
                    firmware_key: firmware_key.clone(),
                }
            })
            .collect()
    }

    /// Splits the fleet into `parts` contiguous index ranges (empty ones left out).
    pub fn split(&self, parts: usize) -> Vec<Range<usize>> {
        let per = self.len().div_ceil(parts.max(1)).max(1);
        (0..self.len())
            .step_by(per)
            .map(|start| start..(start + per).min(self.len()))
            .collect()
    }
}

/// SplitMix64: a tiny, well-mixed and stable generator step; stable across releases, unlike
/// `rand`'s generators, which is what keeps runs repeatable under a seed.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster(src: &str, bare: bool) -> Roster {
        Roster::new(&Scenario::parse(src).unwrap(), bare)
    }

    const TWO: &str = "[simulation]\nseed = 7\n[[group]]\nname = \"hq\"\ncount = 2\n[[group]]\nname = \"beta\"\ncount = 3\nfirmware = \"2.0.0\"\n";

    #[test]
    fn ids_follow_groups_in_index_order() {
        let r = roster(TWO, false);
        assert_eq!(r.len(), 5);
        assert_eq!(
            r.all_ids(),
            [
                "sim-hq-0",
                "sim-hq-1",
                "sim-beta-0",
                "sim-beta-1",
                "sim-beta-2"
            ]
        );
        assert_eq!(
            r.group_ids("beta"),
            ["sim-beta-0", "sim-beta-1", "sim-beta-2"]
        );
        let specs = r.specs(1..3, None);
        assert_eq!(specs[1].device_id, "sim-beta-0");
        assert_eq!(specs[1].index, 2);
        assert_eq!(specs[1].group, "beta");
        assert_eq!(specs[1].factory_version, "2.0.0");
        let one = roster("[[group]]\nname = \"fleet\"\ncount = 2\n", true);
        assert_eq!(one.all_ids(), ["sim-0", "sim-1"]);
    }

    #[test]
    fn keys_and_seeds_depend_on_the_run_seed_only() {
        let (a, b) = (roster(TWO, false), roster(TWO, false));
        assert_eq!(a.key("sim-hq-0"), b.key("sim-hq-0"));
        assert_ne!(a.key("sim-hq-0"), a.key("sim-hq-1"));
        assert_eq!(a.specs(0..5, None)[4].seed, b.specs(0..5, None)[4].seed);
        let other = roster(&TWO.replace("seed = 7", "seed = 8"), false);
        assert_ne!(a.key("sim-hq-0"), other.key("sim-hq-0"));
        assert_ne!(a.device_seed(0), other.device_seed(0));
        // A SAS key is 32 bytes of base64.
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.key("x"))
            .unwrap();
        assert_eq!(raw.len(), 32);
        // Pinned: changing the derivation would orphan devices registered by earlier runs.
        assert_eq!(a.key("sim-hq-0"), roster(TWO, false).key("sim-hq-0"));
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn split_covers_every_device_once() {
        let r = roster(TWO, false);
        assert_eq!(r.split(2), [0..3, 3..5]);
        assert_eq!(r.split(1), vec![0..5]);
        assert_eq!(r.split(9), [0..1, 1..2, 2..3, 3..4, 4..5]);
    }
}
