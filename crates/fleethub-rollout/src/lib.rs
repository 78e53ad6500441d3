//! The rollout engine's model: a rollout is an artifact, a target and ordered waves, each with a
//! success gate and a failure threshold; devices are pushed inside maintenance windows and
//! batches, soak on the new version, time out, retry with backoff and are flagged; a tripped
//! gate pauses and can roll back. This crate is the pure state machine (no I/O, no clock of its
//! own): the hub feeds it observations and the time, persists what it returns, and makes the
//! pushes. docs/rollouts.md describes the model for users.

pub mod cron;
pub mod device;
pub mod event;
pub mod machine;
pub mod rehearsal;
pub mod spec;
pub mod window;

pub use device::{bucket, Compliance, Counts, DeviceFacts, DeviceRecord, DeviceState};
pub use event::{Event, EventKind, Push, Step};
pub use machine::{
    Command, CommandError, Observation, Rollout, RolloutState, Snapshot, Status, WaveRecord,
    WaveStatus,
};
pub use spec::{
    Artifact, BatchSpec, RetrySpec, RolloutSpec, Selector, SpecError, Threshold, TripAction,
    WaveSpec,
};
pub use window::{Position, Window, WindowSpec, Zone};
