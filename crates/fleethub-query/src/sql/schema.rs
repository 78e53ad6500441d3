//! The store's tables as the compiler sees them: which table a source reads, the columns
//! `SELECT *` returns, and the keys pages follow. The store's schema must match (its tests check).

use crate::ast::Source;

/// What `SELECT *` returns on devices, in this order, as SQL over the `devices` table: the
/// registry columns, the tags as JSON text, and each property section as the store's API shows
/// it (`{"values":…,"metadata":…,"version":N}`, [`stored_section`]), rebuilt from the JSONB
/// values, the section's version column and its metadata row in `twin_metadata` (stored packed,
/// rebuilt whole by `fh_metadata`, [`crate::runtime::metadata`]). `identity` is the registry
/// entry as stored, packed ([`REGISTRY_ENTRY`]); the store fills it in as it decodes the row.
pub const DEVICE_COLUMNS: &[&str] = &[
    "device_id",
    "status",
    "identity",
    "json(tags)",
    "json_object('values', json(desired), 'metadata', json(fh_metadata(json(desired), (SELECT desired \
     FROM twin_metadata WHERE twin_metadata.row = devices.row))), 'version', desired_version)",
    "json_object('values', json(reported), 'metadata', json(fh_metadata(json(reported), (SELECT reported \
     FROM twin_metadata WHERE twin_metadata.row = devices.row))), 'version', reported_version)",
    "twin_version",
    "twin_etag",
    "revision",
];

/// A device's whole registry entry as JSON text: `identity` keeps it packed (only what differs
/// from a new device's entry and the row's id and status, `fleethub_core::stored_entry`), and
/// `fh_entry` ([`crate::runtime::entry`]) fills the rest back in, so a registry field such as
/// `lastActivityTime` reads as the hub shows it. `SELECT *`'s `identity` column is the stored
/// text: the store fills it in as it decodes the row.
pub const REGISTRY_ENTRY: &str = "fh_entry(identity, device_id, status)";

/// A property section (`desired` or `reported`) as the store's API shows it, as JSON text:
/// the values (JSONB in the `devices` row), the metadata (text in `twin_metadata`, same `row`)
/// and the version (`{section}_version`). It is what [`DEVICE_COLUMNS`] selects.
pub(crate) fn stored_section(section: &str) -> String {
    format!(
        "json_object('values', json({section}), 'metadata', json(fh_metadata(json({section}), \
         (SELECT {section} FROM twin_metadata WHERE twin_metadata.row = devices.row))), \
         'version', {section}_version)"
    )
}

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

/// The `devices` table's row key (its `INTEGER PRIMARY KEY`): a split scan gives each part a
/// range of it.
pub(crate) const DEVICE_ROW_KEY: &str = "row";

/// The paging key columns, in order.
pub(crate) fn key_columns(source: Source) -> &'static [&'static str] {
    match source {
        Source::Devices => &["device_id"],
        Source::DeviceJobs => &["job_id", "device_id"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_star_rebuilds_the_sections_as_stored_section_does() {
        assert_eq!(DEVICE_COLUMNS[4], stored_section("desired"));
        assert_eq!(DEVICE_COLUMNS[5], stored_section("reported"));
    }
}
