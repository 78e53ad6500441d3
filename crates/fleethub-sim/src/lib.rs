//! Virtual devices that use only the public protocols (MQTT over TLS, HTTPS), for the fleet
//! simulator and the benchmarks. Nothing here knows the hub's internals: a device is exactly
//! what the Azure IoT device SDK would be on the wire.
//!
//! [`device`] is one device's MQTT client; [`load`] drives many of them for `fleethub bench`.

pub mod device;
pub mod esp32;
pub mod firmware_key;
pub mod load;

pub use device::{
    tls_config_trusting, ClientError, ConnectOptions, DeviceAuth, DeviceClient, DeviceEvent,
    DeviceEvents, TOKEN_LIFETIME_SECS,
};
pub use firmware_key::FirmwareKey;
pub use load::{
    connect_idle, run_method_responder, run_report_load, ConnectTemplate, DeviceSessions,
    EventTasks, IdleConnections, LoadDevices, LoadKind, LoadReport, LoadShape, ReportLoad,
};
