//! The store: FleetHub's only source of truth.
//!
//! The SQLite backend funnels every write through one writer thread that commits queued writes
//! together (group commit, each write in its own savepoint) and answers reads from a pool of
//! connections. A write resolves only after the transaction holding it has committed, so the hub
//! can acknowledge and push side effects from committed state (DESIGN.md, invariant 2).

#![warn(missing_docs)]

mod config;
mod error;
mod rows;
mod sqlite;

pub use config::{Presence, SplitScans, StoreConfig};
pub use error::StoreError;
pub use rows::{
    C2dRow, DeviceCounts, DeviceEntryRow, DeviceRow, DeviceStamp, EncodedDeviceRow, EventRow,
    FirmwareCount, HeldTwin, SectionParts, TelemetryRow, TwinSections,
};
pub use sqlite::{
    ConfigurationCounts, ConfigurationReads, ConfigurationRow, ConfiguredDesired, DeviceJobStatus,
    DeviceRolloutRow, Effect, FirmwareReads, FirmwareReferences, FirmwareRow, JobDeviceCounts,
    JobDeviceRow, JobDeviceUpdate, JobFilter, JobReads, JobRow, JobSnapshot, JobStatus,
    JobTwinTarget, NewJobDevice, NewJobDevices, QueryRow, QueryRows, ReadTx, Reads,
    RolloutEventRow, RolloutPushRow, RolloutReads, RolloutRow, Store, StoredJson, WriteTx,
};
