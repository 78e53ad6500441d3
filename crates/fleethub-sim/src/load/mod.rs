//! Many devices at once, for `fleethub bench`: request load (reported patches or telemetry),
//! held connections that count or answer what the hub pushes, and idle connections for the
//! connection-memory benchmark. Every device is a real [`DeviceClient`](crate::DeviceClient)
//! over the network.

mod connect;
mod devices;
mod drive;
mod idle;
mod methods;
mod stats;

pub use connect::{spread_local_addr, ConnectTemplate, DeviceSessions, CONNECT_CONCURRENCY};
pub use devices::{EventTasks, LoadDevices, LoadKind};
pub use drive::{run_report_load, LoadShape, ReportLoad};
pub use idle::{connect_idle, IdleConnections};
pub use methods::run_method_responder;
pub use stats::{percentile, LoadReport};
