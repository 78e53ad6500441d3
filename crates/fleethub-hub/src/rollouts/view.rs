//! What the rollout API answers with: typed values, written as JSON by `fleethub-api` and the
//! CLI. Nothing here is stored.

use chrono::{DateTime, Utc};
use fleethub_rollout::{
    Compliance, Counts, EventKind, Rollout, RolloutSpec, RolloutState, Status, Threshold,
    WaveStatus,
};
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
