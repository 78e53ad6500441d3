//! The store's tables as the compiler sees them: which table a source reads, the columns
//! `SELECT *` returns, and the keys pages follow. The store's schema must match (its tests check).

use crate::ast::Source;

/// The columns `SELECT *` returns on devices, in this order.
pub const DEVICE_COLUMNS: &[&str] = &[
    "device_id",
    "status",
    "identity",
    "tags",
    "desired",
    "reported",
    "twin_version",
    "twin_etag",
    "revision",
];

/// The columns `SELECT *` returns on devices.jobs, in this order.
pub const JOB_COLUMNS: &[&str] = &[
    "job_id",
    "device_id",
    "job_type",
    "status",
    "created_time",
    "start_time",
    "end_time",
    "updated_time",
    "outcome",
    "error",
];

/// The table a source reads.
pub(crate) fn table(source: Source) -> &'static str {
    match source {
        Source::Devices => "devices",
        Source::DeviceJobs => "job_devices",
    }
}

/// The paging key columns, in order.
pub(crate) fn key_columns(source: Source) -> &'static [&'static str] {
    match source {
        Source::Devices => &["device_id"],
        Source::DeviceJobs => &["job_id", "device_id"],
    }
}
