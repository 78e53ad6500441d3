//! The twins the writer committed last, parsed, for the devices written most.
//!
//! A reported patch is merged into the section the store holds, and a desired patch into the
//! whole twin (its response is the twin). Reading that back for every patch (the sections
//! rendered from JSONB, their metadata joined from a second table, the text parsed) was a third
//! of the writer's work per report and a quarter per desired patch. The writer keeps what it
//! committed instead: after a write commits, the twin it wrote goes into this cache with the
//! twin version and twin epoch it was written at, and the device's next write takes it out
//! again. A report keeps only the reported section when that is all it read
//! ([`KeptTwin::rest`] is `None`); a desired patch needs, and keeps, the whole twin.
//!
//! The cache is not a record, and never answers on its own: the write made from a kept copy
//! carries the twin version (and, for the whole twin, the registry revision) it was made from,
//! and the store refuses it if the twin moved on (a write by another path, by another node);
//! the patch is then merged into the store's copy as before. The twin epoch
//! ([`fleethub_store::WriteTx::twin_epoch`]) covers what a version cannot tell: a device deleted
//! and created again, or another process writing the same file. Entries go in only once their
//! write has committed, so a rolled-back write never leaves one behind, and a copy is taken out
//! while it is used, so a failed write loses it rather than leaving a half-merged one.
//!
//! Memory is bounded by a byte budget over the twin's text sizes (times an allowance for the
//! parsed form); the entries put in longest ago go first. A restart starts empty.

use std::collections::{HashMap, VecDeque};

use fleethub_core::twin::TwinProperties;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::device::Device;

/// The default budget: 64 MiB, about 15,000 devices with sections of the `bench` fleet's size.
pub const DEFAULT_REPORTED_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Parsed JSON takes several times its text in memory (maps, strings, values); each entry is
/// weighed as this many times its text.
const PARSED_PER_TEXT_BYTE: usize = 4;

/// Kept twins by device id, within a byte budget.
pub(crate) struct TwinCache {
    budget: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Device ids in the order their entries went in, each with the stamp it went in with; an
    /// id whose entry has since been replaced or taken is skipped when it comes up.
    order: VecDeque<(String, u64)>,
    used: usize,
    stamp: u64,
}

struct Entry {
    twin_version: i64,
    epoch: u64,
    twin: KeptTwin,
    weight: usize,
    stamp: u64,
}

/// What the writer keeps of a device's twin after a write.
pub(crate) struct KeptTwin {
    /// The device's row key.
    pub row: i64,
    /// The reported section.
    pub reported: TwinProperties,
    /// The length of its text (values and metadata), for the budget.
    pub reported_len: usize,
    /// The rest of the twin, when the write that kept it had it (a desired write reads the whole
    /// twin; a report only its section).
    pub rest: Option<TwinRest>,
}

/// The twin apart from its reported section.
#[derive(Clone)]
pub(crate) struct TwinRest {
    /// The registry entry; its `revision` is the one the copy was taken at.
    pub device: Device,
    pub tags: Map<String, Value>,
    pub desired: TwinProperties,
    /// The length of the desired section's text (values and metadata), for the budget.
    pub desired_len: usize,
    /// The length of the registry entry's and the tags' texts, for the budget.
    pub other_len: usize,
}

impl KeptTwin {
    fn text_len(&self) -> usize {
        self.reported_len
            + self
                .rest
                .as_ref()
                .map_or(0, |r| r.desired_len + r.other_len)
    }
}

/// A device's twin as committed at `twin_version`.
pub(crate) struct CachedTwin {
    pub twin_version: i64,
    pub twin: KeptTwin,
}

impl TwinCache {
    pub(crate) fn new(budget: usize) -> TwinCache {
        TwinCache {
            budget,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes out the twin of `device` if the cache holds one written in `epoch`.
    pub(crate) fn take(&self, device: &str, epoch: u64) -> Option<CachedTwin> {
        let mut state = self.state.lock();
        let entry = state.entries.remove(device)?;
        state.used -= entry.weight;
        (entry.epoch == epoch).then_some(CachedTwin {
            twin_version: entry.twin_version,
            twin: entry.twin,
        })
    }

    /// Holds `twin`, committed at `twin_version` in `epoch`; the oldest entries go to make room.
    /// A twin larger than a quarter of the budget is not held.
    pub(crate) fn put(&self, device: String, twin_version: i64, epoch: u64, twin: KeptTwin) {
        let weight = twin.text_len().saturating_mul(PARSED_PER_TEXT_BYTE) + device.len();
        let mut state = self.state.lock();
        if let Some(old) = state.entries.remove(&device) {
            state.used -= old.weight;
        }
        if weight > self.budget / 4 {
            return;
        }
        state.stamp += 1;
        let stamp = state.stamp;
        state.order.push_back((device.clone(), stamp));
        state.used += weight;
        state.entries.insert(
            device,
            Entry {
                twin_version,
                epoch,
                twin,
                weight,
                stamp,
            },
        );
        while state.used > self.budget {
            let Some((oldest, stamp)) = state.order.pop_front() else {
                break;
            };
            if state.entries.get(&oldest).is_some_and(|e| e.stamp == stamp) {
                let gone = state.entries.remove(&oldest).map_or(0, |e| e.weight);
                state.used -= gone;
            }
        }
        // Ids whose entries were taken or replaced stay in `order` until they come up; keep the
        // queue within a small multiple of the entries.
        if state.order.len() > 2 * state.entries.len() + 1024 {
            let State { entries, order, .. } = &mut *state;
            order.retain(|(id, stamp)| entries.get(id).is_some_and(|e| e.stamp == *stamp));
        }
    }

    /// The twins held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kept reported section at version `n` whose text is `len` bytes.
    fn section(n: u64, len: usize) -> KeptTwin {
        KeptTwin {
            row: 1,
            reported: TwinProperties {
                version: n,
                ..TwinProperties::default()
            },
            reported_len: len,
            rest: None,
        }
    }

    #[test]
    fn a_section_is_taken_out_once_and_only_in_its_epoch() {
        let cache = TwinCache::new(1 << 20);
        cache.put("d".into(), 7, 1, section(3, 100));
        assert!(cache.take("d", 2).is_none(), "another epoch");
        assert!(cache.take("d", 1).is_none(), "a miss also drops the entry");
        cache.put("d".into(), 8, 1, section(4, 100));
        let got = cache.take("d", 1).expect("held");
        assert_eq!((got.twin_version, got.twin.reported.version), (8, 4));
        assert!(cache.take("d", 1).is_none(), "taken out while in use");
    }

    #[test]
    fn the_entries_put_in_longest_ago_go_first_within_the_budget() {
        // Each entry weighs 50 * 4 + 2 bytes: four fit in 850.
        let cache = TwinCache::new(850);
        for i in 0..4 {
            cache.put(format!("d{i}"), 1, 0, section(i, 50));
        }
        assert_eq!(cache.len(), 4);
        // d0 used again goes to the back of the line; d1 is now the oldest.
        let d0 = cache.take("d0", 0).unwrap();
        cache.put("d0".into(), 2, 0, d0.twin);
        cache.put("d4".into(), 1, 0, section(4, 50));
        assert_eq!(cache.len(), 4);
        assert!(cache.take("d1", 0).is_none(), "the oldest went");
        for id in ["d0", "d2", "d3", "d4"] {
            assert!(cache.take(id, 0).is_some(), "{id}");
        }
        assert_eq!(cache.state.lock().used, 0);
    }

    #[test]
    fn a_section_larger_than_a_quarter_of_the_budget_is_not_held() {
        let cache = TwinCache::new(4_000);
        cache.put("big".into(), 1, 0, section(1, 300));
        assert_eq!(cache.len(), 0);
        cache.put("small".into(), 1, 0, section(1, 200));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_order_queue_stays_bounded_when_the_same_device_reports_forever() {
        let cache = TwinCache::new(1 << 20);
        for i in 0..10_000 {
            let held = cache
                .take("d", 0)
                .map_or_else(|| section(0, 50), |c| c.twin);
            cache.put("d".into(), i, 0, held);
        }
        assert!(cache.state.lock().order.len() <= 2 + 1024);
    }
}
