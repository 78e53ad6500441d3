//! What the rollout API answers with: typed values, written as JSON by `fleethub-api` and the
//! CLI. Nothing here is stored.

use chrono::{DateTime, Utc};
use fleethub_core::{HubError, HubResult};
use fleethub_rollout::{
    Compliance, Counts, DeviceRecord, DeviceState, EventKind, Rollout, RolloutSpec, RolloutState,
    Status, Threshold, WaveStatus,
};
use fleethub_store::DeviceRolloutRow;
use serde::Serialize;

/// A rollout to create.
#[derive(Debug, Clone)]
pub struct CreateRollout {
    /// 1–48 ASCII letters, digits and `-` (its pushes' operation ids are derived from it).
    pub id: String,
    pub spec: RolloutSpec,
    /// An unfinished (or completed) rollout this one takes over, in the same commit: it pushes
    /// nothing more. Refused when this one installs an older version, unless the spec allows
    /// downgrades.
    pub supersedes: Option<String>,
}

/// An operator's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutCommand {
    /// Stop pushing; nothing is undone.
    Pause,
    /// Go on; a tripped wave is armed again.
    Resume,
    /// Nothing more is pushed; devices not pushed yet are skipped. Final.
    Abort,
    /// Send one wave's devices (or, with `None`, every device the rollout changed) back to the
    /// versions they ran; pauses the rollout.
    Rollback { wave: Option<String> },
    /// Push failed and flagged devices again with fresh retries: these ids, or all.
    Retry { devices: Option<Vec<String>> },
    /// Retry the failed and flagged devices whose twins match a query condition (`tags.city =
    /// 'boston'`) and resume the rollout if it is paused.
    ResumeFor { query: String },
    /// Another rollout takes over: nothing more is pushed. Final.
    Supersede { by: String },
}

/// A wave's gate, as an operator reads it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GateView {
    /// The success threshold as given, and as a sentence (`98%`, `20 devices`, `2% or 5 devices`).
    pub success: Threshold,
    pub success_text: String,
    pub failure: Threshold,
    pub failure_text: String,
    /// Devices the gate counts (members but those that left or were refused).
    pub size: u32,
    pub updated: u32,
    /// Failures the failure threshold counts now (since the wave was last resumed).
    pub failures: u32,
    /// Whether the success threshold holds now.
    pub success_reached: bool,
    /// Whether failures are past the failure threshold now.
    pub failure_exceeded: bool,
}

/// One wave's progress.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WaveView {
    pub name: String,
    pub status: WaveStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub counts: Counts,
    pub gate: GateView,
}

/// A rollout: its spec, where it is, each wave with its gate, and the compliance view.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RolloutView {
    pub id: String,
    pub spec: RolloutSpec,
    pub status: Status,
    /// Why it is paused, aborted or superseded.
    pub reason: Option<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub waves: Vec<WaveView>,
    /// Devices per state, over the whole rollout.
    pub totals: Counts,
    /// Targeted, updated, failed, rolled back, pending, flagged, refused.
    pub compliance: Compliance,
    /// When the engine looks at it next without being told anything (a timer, a window or
    /// batch opening); `None` when only a report can move it.
    pub next_wake: Option<DateTime<Utc>>,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RolloutEvent {
    /// Its place in the trail: read on with `after = seq`.
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub wave: Option<String>,
    pub device: Option<String>,
    pub message: String,
}

/// A page of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RolloutEventsPage {
    pub events: Vec<RolloutEvent>,
    /// The cursor to ask for the next page with; `None` when this page reached the end.
    pub next: Option<i64>,
}

/// One device's attempt in one rollout, as the device page's firmware history shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeviceRolloutView {
    /// The rollout's id (its name).
    pub rollout: String,
    pub rollout_status: Status,
    pub rollout_created: DateTime<Utc>,
    /// The wave that took the device, if one did.
    pub wave: Option<String>,
    /// Where the device is in the rollout (`waiting`, `in_flight`, `updated`, `flagged`, …).
    #[serde(flatten)]
    pub state: DeviceState,
    /// Pushes the rollout made to the device (its version and rollbacks).
    pub attempt: u32,
    /// What the device ran before the rollout first pushed it; `None` until then.
    pub from_version: Option<String>,
    /// The version the rollout installs.
    pub to_version: String,
    /// The device's last reported `current_version` and update error, as the rollout saw them.
    pub reported_version: Option<String>,
    pub error: Option<String>,
    /// Why its last attempt failed, if it did.
    pub failure: Option<String>,
    /// When the rollout first pushed the device; `None` if it never did.
    pub started: Option<DateTime<Utc>>,
    /// When the current push was made.
    pub last_push: Option<DateTime<Utc>>,
    /// When the attempt ended (updated, flagged, refused, left, skipped, rolled back); `None`
    /// while it goes on, and for a record stored before the hub kept the time.
    pub finished: Option<DateTime<Utc>>,
}

impl DeviceRolloutView {
    /// The view of a stored row; a row that does not decode is a server error naming it.
    pub(crate) fn of_row(row: &DeviceRolloutRow) -> HubResult<DeviceRolloutView> {
        let corrupt = |what: &str, e: serde_json::Error| {
            HubError::server(format!("stored rollout {}: {what}: {e}", row.rollout_id))
        };
        let spec: RolloutSpec = serde_json::from_str(&row.spec).map_err(|e| corrupt("spec", e))?;
        let record: DeviceRecord =
            serde_json::from_str(&row.record).map_err(|e| corrupt("device record", e))?;
        let rollout_status = serde_json::from_value(serde_json::Value::String(row.status.clone()))
            .map_err(|e| corrupt("status", e))?;
        let ended = matches!(
            record.state,
            DeviceState::Updated
                | DeviceState::Flagged
                | DeviceState::Refused
                | DeviceState::Left
                | DeviceState::Skipped
                | DeviceState::RolledBack
        );
        Ok(DeviceRolloutView {
            rollout: row.rollout_id.clone(),
            rollout_status,
            rollout_created: ms_time(row.created_ms),
            wave: record
                .wave
                .and_then(|w| spec.waves.get(w))
                .map(|w| w.name.clone()),
            state: record.state,
            attempt: record.attempt,
            from_version: record.from_version,
            to_version: spec.artifact.version,
            reported_version: record.version,
            error: record.error,
            failure: record.failure,
            started: row.first_push_ms.map(ms_time),
            last_push: record.pushed_at,
            finished: row.updated_ms.filter(|_| ended).map(ms_time),
        })
    }
}

fn ms_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl RolloutView {
    /// The view of a machine (exact counters).
    pub(crate) fn of(rollout: &Rollout, created_ms: i64, updated_ms: i64) -> RolloutView {
        let mut view = RolloutView::of_state(
            rollout.id(),
            rollout.spec(),
            &rollout.state(),
            created_ms,
            updated_ms,
        );
        view.totals = rollout.totals();
        view.compliance = rollout.compliance();
        view.next_wake = rollout.next_wake();
        view
    }

    /// The view of a stored state (wave counters as of its last step; totals as stored, or
    /// summed from the waves for a state stored before totals were kept).
    pub(crate) fn of_state(
        id: &str,
        spec: &RolloutSpec,
        state: &RolloutState,
        created_ms: i64,
        updated_ms: i64,
    ) -> RolloutView {
        let plan = spec.plan(id).ok();
        let mut totals = Counts::default();
        let waves = state
            .waves
            .iter()
            .enumerate()
            .map(|(w, record)| {
                let c = record.counts;
                add_counts(&mut totals, &c);
                let wave_spec = spec.waves.get(w);
                let gates = plan.as_ref().and_then(|p| p.waves.get(w));
                let size = c.gate_size();
                let failures = c.failures().saturating_sub(record.failure_base);
                GateView {
                    success: wave_spec.map(|s| s.success).unwrap_or_default(),
                    success_text: gates.map(|g| g.success.to_string()).unwrap_or_default(),
                    failure: wave_spec.map(|s| s.failure).unwrap_or_default(),
                    failure_text: gates.map(|g| g.failure.to_string()).unwrap_or_default(),
                    size,
                    updated: c.updated,
                    failures,
                    success_reached: gates.is_some_and(|g| g.success.reached(c.updated, size)),
                    failure_exceeded: gates.is_some_and(|g| g.failure.exceeded(failures, size)),
                }
                .into_wave(record)
            })
            .collect();
        let totals = state.totals.unwrap_or(totals);
        RolloutView {
            id: id.to_string(),
            spec: spec.clone(),
            status: state.status,
            reason: state.reason.clone(),
            created: ms_time(created_ms),
            updated: ms_time(updated_ms),
            waves,
            totals,
            compliance: totals.compliance(),
            next_wake: None,
        }
    }
}

impl GateView {
    fn into_wave(self, record: &fleethub_rollout::WaveRecord) -> WaveView {
        WaveView {
            name: record.name.clone(),
            status: record.status,
            started_at: record.started_at,
            counts: record.counts,
            gate: self,
        }
    }
}

fn add_counts(total: &mut Counts, c: &Counts) {
    total.unassigned += c.unassigned;
    total.waiting += c.waiting;
    total.in_progress += c.in_progress;
    total.updated += c.updated;
    total.failed += c.failed;
    total.flagged += c.flagged;
    total.refused += c.refused;
    total.left += c.left;
    total.skipped += c.skipped;
    total.rolling_back += c.rolling_back;
    total.rolled_back += c.rolled_back;
}

impl RolloutEvent {
    pub(crate) fn from_row(row: fleethub_store::RolloutEventRow) -> Option<RolloutEvent> {
        let kind = serde_json::from_value(serde_json::Value::String(row.kind)).ok()?;
        Some(RolloutEvent {
            seq: row.seq,
            at: ms_time(row.at_ms),
            kind,
            wave: row.wave,
            device: row.device_id,
            message: row.message,
        })
    }
}
