//! Counting the devices a condition selects (a configuration's `targetedCount` and custom
//! metrics) without scanning every twin on every read.
//!
//! The first read of a condition scans once and keeps the ids it selects, with the change
//! feed's position in the same snapshot. A later read takes the events committed since, and
//! evaluates only the devices they name (the in-process evaluator, which agrees with the SQL
//! the scan ran), so repeated reads cost nothing and a twin's change costs one evaluation of
//! that twin. Every read moves the entry to its own snapshot, so a read that follows a write
//! sees it (read-your-writes).
//!
//! Only conditions over what the change feed records are kept this way: tags, properties,
//! `deviceId` and `status`. A condition that reads the connection state, the last activity
//! time, the twin's `$version` or other configurations' statuses (which change without an
//! event) is counted by its query every time, as before.

use super::apply::changed_devices;
use crate::twin::TwinState;
use fleethub_query::{Condition, SqlFragment};
use fleethub_store::{Reads, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// The most device ids all entries hold together (about 50 bytes each): a condition that
/// selects more is counted by its query.
const MEMBER_BUDGET: usize = 1_000_000;
/// The most events a read folds into an entry; after a longer gap, a fresh scan is cheaper.
const MAX_EVENTS: usize = 20_000;
/// Roots (first segments) whose changes the change feed records.
const FOLLOWED_ROOTS: &[&str] = &["deviceId", "status", "tags", "properties"];

/// One condition's selected devices as of a change-feed position.
struct Entry {
    /// The last event seen: `members` is the selection after it.
    seq: i64,
    members: HashSet<Box<str>>,
    /// Whether twin writes by configurations matter (the condition reads desired properties).
    reads_desired: bool,
    /// When it was last read, for eviction (a counter, not a time).
    used: u64,
}

/// Selected devices per condition (its canonical text), shared by every metrics read.
#[derive(Default)]
pub(crate) struct CountCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
pub(crate) struct Entries {
    map: HashMap<String, Entry>,
    clock: u64,
}

/// Whether a condition's selection can be followed through the change feed.
fn followable(condition: &Condition) -> bool {
    condition.paths().iter().all(|p| {
        p.first()
            .is_some_and(|root| FOLLOWED_ROOTS.contains(&root.as_str()))
    })
}

impl CountCache {
    /// Locks the cache for one read's counts: taken before the read's first statement, so
    /// entries only ever move forward (a read holding it sees every commit an earlier holder
    /// saw).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Entries {
    /// How many devices `condition` (compiled as `sql`) selects in the snapshot of `r`.
    pub(crate) fn count(
        &mut self,
        r: &impl Reads,
        condition: &Condition,
        sql: &SqlFragment,
    ) -> Result<u64, StoreError> {
        if !followable(condition) {
            return r.count_matching(sql);
        }
        let key = condition.to_string();
        let last = r.last_event_seq()?;
        self.clock += 1;
        let used = self.clock;
        if let Some(entry) = self.map.get_mut(&key) {
            if catch_up(r, condition, entry, last)? {
                entry.used = used;
                return Ok(entry.members.len() as u64);
            }
            self.map.remove(&key);
        }
        let ids = r.devices_matching(sql, None, usize::MAX)?;
        let count = ids.len() as u64;
        if ids.len() <= MEMBER_BUDGET {
            self.make_room(ids.len());
            let reads_desired = condition.paths().iter().any(|p| {
                p.first().is_some_and(|r| r == "properties")
                    && p.get(1).is_none_or(|s| s == "desired")
            });
            let entry = Entry {
                seq: last,
                members: ids.into_iter().map(String::into_boxed_str).collect(),
                reads_desired,
                used,
            };
            self.map.insert(key, entry);
        }
        Ok(count)
    }

    /// Evicts the least recently read entries until `wanted` more ids fit the budget.
    fn make_room(&mut self, wanted: usize) {
        loop {
            let held: usize = self.map.values().map(|e| e.members.len()).sum();
            if held + wanted <= MEMBER_BUDGET {
                return;
            }
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.map.remove(&oldest);
        }
    }

    /// Forgets every entry (for tests that compare against a fresh scan).
    #[cfg(test)]
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}

/// Brings `entry` to the change feed's position `last` by evaluating the devices the events
/// after its own name. `false` when it cannot (too many events, some pruned, or the snapshot
/// is older than the entry): the caller scans instead.
fn catch_up(
    r: &impl Reads,
    condition: &Condition,
    entry: &mut Entry,
    last: i64,
) -> Result<bool, StoreError> {
    if entry.seq == last {
        return Ok(true);
    }
    if entry.seq > last {
        return Ok(false);
    }
    let events = r.events_after(entry.seq, MAX_EVENTS + 1)?;
    let complete = events.len() <= MAX_EVENTS
        && events.first().is_some_and(|e| e.seq == entry.seq + 1)
        && events.last().is_some_and(|e| e.seq == last);
    if !complete {
        return Ok(false);
    }
    let extra: &[&str] = if entry.reads_desired {
        &["twin.configured", "twins.configured", "device.deleted"]
    } else {
        &["device.deleted"]
    };
    let ids = changed_devices(r, &events, extra)
        .map_err(|e| StoreError::Other(format!("reading the change feed: {}", e.message)))?;
    for id in ids {
        let selected = match r.get_device(&id)? {
            None => false,
            Some(row) => {
                let twin = TwinState::from_row(&row).map_err(|e| StoreError::Other(e.message))?;
                condition.matches(&twin.evaluation_document(false))
            }
        };
        if selected {
            entry.members.insert(id.into_boxed_str());
        } else {
            entry.members.remove(id.as_str());
        }
    }
    entry.seq = last;
    Ok(true)
}
