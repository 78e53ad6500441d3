//! What the machine hands back: pushes to make and audit events to record, in the order they
//! happened. The hub writes both in one transaction with the state they came from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Set `desired.firmware` on a device. `(rollout, device, attempt)` is its idempotency key: a
/// replay after a crash makes the same push again with the same key, never a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    pub device: String,
    pub attempt: u32,
    /// The version to install: the rollout's, or for a rollback the one the device ran before.
    pub version: String,
    pub rollback: bool,
}

/// One transition in a rollout's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A sentence for the operator.
    pub message: String,
}

/// The kinds of transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RolloutEventKind)]
pub enum EventKind {
    Created,
    WaveStarted,
    GatePassed,
    GateTripped,
    DeviceFailed,
    DeviceFlagged,
    DeviceRefused,
    RollbackStarted,
    Paused,
    Resumed,
    Retried,
    Aborted,
    Superseded,
    Completed,
}

/// The outcome of one call into the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    pub pushes: Vec<Push>,
    pub events: Vec<Event>,
}

impl Step {
    pub fn is_empty(&self) -> bool {
        self.pushes.is_empty() && self.events.is_empty()
    }

    /// The events of one kind, for tests and summaries.
    pub fn events_of(&self, kind: EventKind) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |e| e.kind == kind)
    }
}
