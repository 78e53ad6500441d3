//! [`SimulationStats`]: counters every device updates on each state change, and the per-device
//! [`StatsHandle`] that remembers what this device contributes, so a change moves counts
//! instead of recounting the fleet.

use fleethub_core::firmware::UpdateStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters shared by every device of a run; cheap to update, read by the live view and the
/// scenario runner.
#[derive(Debug, Default)]
pub struct SimulationStats {
    devices: AtomicU64,
    connected: AtomicU64,
    reporting: AtomicU64,
    updating: AtomicU64,
    failed: AtomicU64,
    rolled_back: AtomicU64,
    telemetry_sent: AtomicU64,
    reconnects: AtomicU64,
    power_losses: AtomicU64,
    /// Group → running version → devices.
    versions: Mutex<BTreeMap<Arc<str>, BTreeMap<String, u64>>>,
}

/// A point-in-time copy of [`SimulationStats`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsSnapshot {
    pub devices: u64,
    pub connected: u64,
    /// Devices that reported at least once since their last connect.
    pub reporting: u64,
    /// Devices in an OTA (downloading … rebooting).
    pub updating: u64,
    /// Devices whose last OTA ended failed or rolled_back.
    pub failed: u64,
    pub rolled_back: u64,
    pub telemetry_sent: u64,
    pub reconnects: u64,
    pub power_losses: u64,
    /// Running version → device count.
    pub versions: BTreeMap<String, u64>,
    /// Group → running version → device count.
    pub group_versions: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Version counts in semantic-version order (`2.9.1` before `2.10.0`), for people to read.
pub fn in_version_order(counts: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    let mut list: Vec<(&str, u64)> = counts.iter().map(|(v, n)| (v.as_str(), *n)).collect();
    list.sort_by(|a, b| fleethub_core::semver::compare(a.0, b.0));
    list
}

impl SimulationStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let groups = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let mut versions = BTreeMap::new();
        let mut group_versions = BTreeMap::new();
        for (group, counts) in groups.iter() {
            for (version, n) in counts {
                *versions.entry(version.clone()).or_insert(0) += n;
            }
            group_versions.insert(group.to_string(), counts.clone());
        }
        StatsSnapshot {
            devices: load(&self.devices),
            connected: load(&self.connected),
            reporting: load(&self.reporting),
            updating: load(&self.updating),
            failed: load(&self.failed),
            rolled_back: load(&self.rolled_back),
            telemetry_sent: load(&self.telemetry_sent),
            reconnects: load(&self.reconnects),
            power_losses: load(&self.power_losses),
            versions,
            group_versions,
        }
    }

    fn move_version(&self, group: &Arc<str>, from: Option<&str>, to: Option<&str>) {
        let mut groups = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let counts = groups.entry(group.clone()).or_default();
        if let Some(from) = from {
            if let Some(n) = counts.get_mut(from) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(from);
                }
            }
        }
        if let Some(to) = to {
            *counts.entry(to.to_string()).or_insert(0) += 1;
        }
    }
}

/// The outcome class of a device's last OTA, as the counters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Settled,
    Updating,
    Failed,
    RolledBack,
}

impl Phase {
    fn of(status: UpdateStatus) -> Phase {
        match status {
            UpdateStatus::Failed => Phase::Failed,
            UpdateStatus::RolledBack => Phase::RolledBack,
            s if s.is_updating() => Phase::Updating,
            _ => Phase::Settled,
        }
    }
}

/// One device's share of the counters.
#[derive(Debug)]
pub(crate) struct StatsHandle {
    stats: Arc<SimulationStats>,
    group: Arc<str>,
    connected: bool,
    reporting: bool,
    phase: Phase,
    version: Option<String>,
}

fn add(c: &AtomicU64, on: bool) {
    if on {
        c.fetch_add(1, Ordering::Relaxed);
    } else {
        c.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StatsHandle {
    pub(crate) fn new(stats: Arc<SimulationStats>, group: &str) -> StatsHandle {
        stats.devices.fetch_add(1, Ordering::Relaxed);
        StatsHandle {
            stats,
            group: group.into(),
            connected: false,
            reporting: false,
            phase: Phase::Settled,
            version: None,
        }
    }

    pub(crate) fn set_connected(&mut self, on: bool) {
        if self.connected != on {
            self.connected = on;
            add(&self.stats.connected, on);
        }
        if !on {
            self.set_reporting(false);
        }
    }

    pub(crate) fn set_reporting(&mut self, on: bool) {
        if self.reporting != on {
            self.reporting = on;
            add(&self.stats.reporting, on);
        }
    }

    pub(crate) fn set_status(&mut self, status: UpdateStatus) {
        let phase = Phase::of(status);
        if phase == self.phase {
            return;
        }
        for (p, on) in [(self.phase, false), (phase, true)] {
            match p {
                Phase::Settled => {}
                Phase::Updating => add(&self.stats.updating, on),
                Phase::Failed => add(&self.stats.failed, on),
                Phase::RolledBack => add(&self.stats.rolled_back, on),
            }
        }
        self.phase = phase;
    }

    pub(crate) fn set_version(&mut self, version: &str) {
        if self.version.as_deref() == Some(version) {
            return;
        }
        self.stats
            .move_version(&self.group, self.version.as_deref(), Some(version));
        self.version = Some(version.to_string());
    }

    pub(crate) fn telemetry_sent(&self) {
        self.stats.telemetry_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reconnected(&self) {
        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn power_lost(&self) {
        self.stats.power_losses.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for StatsHandle {
    /// A stopped device is no longer connected nor updating; its version and last outcome
    /// stay counted, so a snapshot after the run still shows where the fleet ended.
    fn drop(&mut self) {
        self.set_connected(false);
        if self.phase == Phase::Updating {
            self.set_status(UpdateStatus::Idle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_move_with_each_device_and_survive_its_end() {
        let stats = Arc::new(SimulationStats::default());
        let mut a = StatsHandle::new(stats.clone(), "canary");
        let mut b = StatsHandle::new(stats.clone(), "rest");
        a.set_version("1.0.0");
        b.set_version("1.0.0");
        a.set_connected(true);
        a.set_reporting(true);
        a.set_status(UpdateStatus::Downloading);
        a.set_status(UpdateStatus::Applying);
        let s = stats.snapshot();
        assert_eq!(
            (s.devices, s.connected, s.reporting, s.updating),
            (2, 1, 1, 1)
        );
        a.set_version("2.0.0");
        a.set_status(UpdateStatus::RolledBack);
        a.set_version("1.0.0");
        b.set_status(UpdateStatus::Failed);
        drop(a);
        let s = stats.snapshot();
        assert_eq!((s.connected, s.reporting, s.updating), (0, 0, 0));
        assert_eq!((s.failed, s.rolled_back), (1, 1));
        assert_eq!(s.versions, BTreeMap::from([("1.0.0".to_string(), 2)]));
        assert_eq!(s.group_versions["canary"]["1.0.0"], 1);
    }

    #[test]
    fn versions_read_in_semver_order() {
        let counts = BTreeMap::from([
            ("2.10.0".to_string(), 1),
            ("2.9.1".to_string(), 2),
            ("10.0.0".to_string(), 3),
        ]);
        assert_eq!(
            in_version_order(&counts),
            [("2.9.1", 2), ("2.10.0", 1), ("10.0.0", 3)]
        );
    }
}
