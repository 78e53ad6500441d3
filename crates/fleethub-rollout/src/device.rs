//! A device as a rollout sees it: what it was told to do, what it said, and which counter it
//! adds to.

use chrono::{DateTime, Utc};
use fleethub_core::firmware::UpdateStatus;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Buckets per rollout: a percentage wave of `p` % takes the buckets below `p * 100`.
pub const BUCKETS: u32 = 10_000;

/// The bucket of `device` under `seed`: the same for the life of a rollout (and for any rollout
/// with the same seed), uniform over the fleet, and independent of who else is targeted.
pub fn bucket(seed: &str, device: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(seed.as_bytes())
        .chain_update([0u8])
        .chain_update(device.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

/// What the hub knows of a device when it enters the rollout: from its twin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    pub id: String,
    /// `reported.firmware.current_version`, if reported.
    pub version: Option<String>,
    /// `reported.firmware.status`, if reported.
    pub status: Option<UpdateStatus>,
    /// The zone from the window's device-zone path (`tags.tz`), if the twin has one.
    pub zone: Option<String>,
    /// Indexes of the query waves whose condition the twin matches.
    pub matches: Vec<usize>,
}

/// Where a device is in the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
#[schema(as = RolloutDeviceState)]
pub enum DeviceState {
    /// Targeted, but no wave takes it.
    Unassigned,
    /// In a wave, not pushed yet (wave not started, window closed, batch used up, paused).
    Waiting,
    /// An attempt failed; it is pushed again at `until`.
    Backoff { until: DateTime<Utc> },
    /// Pushed; fails unless it reports progress by `deadline`.
    InFlight { deadline: DateTime<Utc> },
    /// Runs the new version; counts as updated at `until` if it stayed healthy, and fails if
    /// silent past `silent_at`.
    Soaking {
        until: DateTime<Utc>,
        silent_at: DateTime<Utc>,
    },
    /// Healthy on the new version through the soak.
    Updated,
    /// Failed every attempt: left for an operator.
    Flagged,
    /// Not pushed: it runs a newer version and downgrades were not asked for.
    Refused,
    /// Left the target before it was pushed.
    Left,
    /// Never pushed: its wave was rolled back, or the rollout aborted or superseded.
    Skipped,
    /// Sent back to its previous version; flagged unless it gets there by `deadline`.
    RollingBack { deadline: DateTime<Utc> },
    /// Back on its previous version.
    RolledBack,
}

impl DeviceState {
    /// The counter this state adds to.
    pub fn category(self) -> Category {
        match self {
            DeviceState::Unassigned => Category::Unassigned,
            DeviceState::Waiting => Category::Waiting,
            DeviceState::Backoff { .. } => Category::Failed,
            DeviceState::InFlight { .. } | DeviceState::Soaking { .. } => Category::InProgress,
            DeviceState::Updated => Category::Updated,
            DeviceState::Flagged => Category::Flagged,
            DeviceState::Refused => Category::Refused,
            DeviceState::Left => Category::Left,
            DeviceState::Skipped => Category::Skipped,
            DeviceState::RollingBack { .. } => Category::RollingBack,
            DeviceState::RolledBack => Category::RolledBack,
        }
    }

    /// When the machine must look at the device again by itself.
    pub fn timer(self) -> Option<DateTime<Utc>> {
        match self {
            DeviceState::Backoff { until } => Some(until),
            DeviceState::InFlight { deadline } | DeviceState::RollingBack { deadline } => {
                Some(deadline)
            }
            DeviceState::Soaking { until, silent_at } => Some(until.min(silent_at)),
            _ => None,
        }
    }

    /// Whether a push of the rollout's version has reached the device (its desired names it).
    pub fn was_pushed(self) -> bool {
        matches!(
            self,
            DeviceState::Backoff { .. }
                | DeviceState::InFlight { .. }
                | DeviceState::Soaking { .. }
                | DeviceState::Updated
                | DeviceState::Flagged
        )
    }
}

/// The counters a rollout and each wave keep, one per device state group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Unassigned,
    Waiting,
    InProgress,
    Updated,
    Failed,
    Flagged,
    Refused,
    Left,
    Skipped,
    RollingBack,
    RolledBack,
}

/// Devices per state group: kept on every transition, so gates and views read them in O(1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = RolloutCounts)]
pub struct Counts {
    pub unassigned: u32,
    pub waiting: u32,
    pub in_progress: u32,
    pub updated: u32,
    /// Failed an attempt, waiting to be pushed again.
    pub failed: u32,
    pub flagged: u32,
    pub refused: u32,
    pub left: u32,
    pub skipped: u32,
    pub rolling_back: u32,
    pub rolled_back: u32,
}

impl Counts {
    fn slot(&mut self, c: Category) -> &mut u32 {
        match c {
            Category::Unassigned => &mut self.unassigned,
            Category::Waiting => &mut self.waiting,
            Category::InProgress => &mut self.in_progress,
            Category::Updated => &mut self.updated,
            Category::Failed => &mut self.failed,
            Category::Flagged => &mut self.flagged,
            Category::Refused => &mut self.refused,
            Category::Left => &mut self.left,
            Category::Skipped => &mut self.skipped,
            Category::RollingBack => &mut self.rolling_back,
            Category::RolledBack => &mut self.rolled_back,
        }
    }

    pub(crate) fn add(&mut self, c: Category) {
        *self.slot(c) += 1;
    }

    pub(crate) fn remove(&mut self, c: Category) {
        let n = self.slot(c);
        *n = n.saturating_sub(1);
    }

    /// Devices a gate counts: every member but those that left or were refused.
    pub fn gate_size(&self) -> u32 {
        self.unassigned
            + self.waiting
            + self.in_progress
            + self.updated
            + self.failed
            + self.flagged
            + self.skipped
            + self.rolling_back
            + self.rolled_back
    }

    /// Failures a gate counts: devices whose attempt failed, retrying or flagged.
    pub fn failures(&self) -> u32 {
        self.failed + self.flagged
    }

    /// Devices the rollout still has work for.
    pub fn active(&self) -> u32 {
        self.waiting + self.in_progress + self.failed + self.rolling_back
    }

    /// The configuration-style view: targeted, updated, failed, rolled back, pending, flagged.
    pub fn compliance(&self) -> Compliance {
        Compliance {
            targeted: self.gate_size() + self.refused,
            updated: self.updated,
            failed: self.failed,
            rolled_back: self.rolled_back,
            pending: self.unassigned + self.waiting + self.in_progress + self.rolling_back,
            flagged: self.flagged,
            refused: self.refused,
        }
    }
}

/// A rollout's compliance, as an operator reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = RolloutCompliance)]
pub struct Compliance {
    pub targeted: u32,
    pub updated: u32,
    pub failed: u32,
    pub rolled_back: u32,
    pub pending: u32,
    pub flagged: u32,
    pub refused: u32,
}

/// Everything the machine keeps about one device; what the store persists per device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = RolloutDevice)]
pub struct DeviceRecord {
    pub id: String,
    pub bucket: u32,
    /// The zone its window is read in (a name), when the rollout has a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The wave that took it (index into the spec's waves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
    #[serde(flatten)]
    pub state: DeviceState,
    /// Pushes made so far (the rollout's version and rollbacks): the idempotency key of the
    /// next push is `attempt + 1`.
    pub attempt: u32,
    /// Tries of the rollout's version since the last operator retry: its pushes, and the
    /// soaks that stood for a push when it already ran the version.
    pub tries: u32,
    /// What it ran before the rollout first pushed it: where a rollback sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// The last reported `current_version`, `status` and `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UpdateStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why its last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// When the current push was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_at: Option<DateTime<Utc>>,
    /// It reported firmware since the current push.
    #[serde(default)]
    pub status_seen: bool,
    /// It connected again after the current push (rebooted into the image).
    #[serde(default)]
    pub reconnected: bool,
    /// It sent telemetry since its soak began.
    #[serde(default)]
    pub telemetry_seen: bool,
}

impl DeviceRecord {
    pub(crate) fn new(facts: &DeviceFacts, seed: &str) -> DeviceRecord {
        DeviceRecord {
            id: facts.id.clone(),
            bucket: bucket(seed, &facts.id),
            zone: None,
            wave: None,
            state: DeviceState::Unassigned,
            attempt: 0,
            tries: 0,
            from_version: None,
            version: facts.version.clone(),
            status: facts.status,
            error: None,
            failure: None,
            pushed_at: None,
            status_seen: false,
            reconnected: false,
            telemetry_seen: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_uniform_and_seeded() {
        assert_eq!(bucket("r1", "dev-1"), bucket("r1", "dev-1"));
        assert_ne!(
            (0..20)
                .map(|i| bucket("r1", &format!("d{i}")))
                .collect::<Vec<_>>(),
            (0..20)
                .map(|i| bucket("r2", &format!("d{i}")))
                .collect::<Vec<_>>()
        );
        let n = 20_000;
        let below_10pct = (0..n)
            .filter(|i| bucket("seed", &format!("device-{i}")) < BUCKETS / 10)
            .count();
        // 10 % of 20,000 is 2,000; a binomial's sd here is ~42.
        assert!((1_850..=2_150).contains(&below_10pct), "{below_10pct}");
    }
}
