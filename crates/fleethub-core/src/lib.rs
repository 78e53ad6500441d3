//! FleetHub's core vocabulary: ids and their validation, the twin document with merge-patch,
//! `$version` and `$metadata`, IoT Hub's size/depth/key limits, SAS tokens, connection strings,
//! semantic versions, the firmware contract, the change feed's vocabulary, the error table and the
//! clock. This crate does no I/O.

pub mod clock;
pub mod configuration;
pub mod connection_string;
pub mod error;
pub mod events;
pub mod firmware;
pub mod ids;
pub mod jobs;
pub mod sas;
pub mod semver;
pub mod stored_entry;
pub mod time;
pub mod twin;

pub use clock::{Clock, ManualClock, ScaledClock, SystemClock};
pub use error::{ErrorCode, HubError, HubResult};
pub use ids::DeviceId;
