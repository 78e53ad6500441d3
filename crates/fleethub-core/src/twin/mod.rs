//! The twin document: merge-patch, IoT Hub's key/depth/size limits, and the desired/reported
//! property sections with their `$version` and `$metadata`.

pub mod limits;
pub mod patch;
pub mod properties;

pub use properties::{Section, TwinProperties};
