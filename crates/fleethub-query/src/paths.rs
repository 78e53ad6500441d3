//! The property paths each source offers, and how a written path is validated.

use crate::ast::{Path, Source};

/// Roots of `FROM devices` paths.
pub(crate) const DEVICE_ROOTS: &[&str] = &[
    "deviceId",
    "status",
    "connectionState",
    "lastActivityTime",
    "$version",
    "tags",
    "properties",
    "configurations",
];

/// Roots of `FROM devices.jobs` paths.
pub(crate) const JOB_ROOTS: &[&str] = &[
    "deviceId",
    "jobId",
    "jobType",
    "status",
    "startTimeUtc",
    "endTimeUtc",
    "createdDateTimeUtc",
    "lastUpdatedDateTimeUtc",
    "outcome",
    "error",
];

pub(crate) fn roots(source: Source) -> &'static [&'static str] {
    match source {
        Source::Devices => DEVICE_ROOTS,
        Source::DeviceJobs => JOB_ROOTS,
    }
}

/// Why a path was refused: the index of the bad segment and a message.
pub(crate) struct PathError {
    pub segment: usize,
    pub expected: String,
    pub message: String,
}

/// Validates `segments` (as written) for `source` and spells roots canonically. Root names
/// (and `desired`/`reported`) match case-insensitively; property names below them do not.
pub(crate) fn resolve(source: Source, mut segments: Vec<String>) -> Result<Path, PathError> {
    if source == Source::DeviceJobs
        && segments.len() > 2
        && segments[0].eq_ignore_ascii_case("devices")
        && segments[1].eq_ignore_ascii_case("jobs")
    {
        segments.drain(..2);
    }
    let valid = roots(source);
    let first = segments.first().cloned().unwrap_or_default();
    let Some(root) = valid.iter().find(|r| r.eq_ignore_ascii_case(&first)) else {
        let from = match source {
            Source::Devices => "devices",
            Source::DeviceJobs => "devices.jobs",
        };
        return Err(PathError {
            segment: 0,
            expected: format!("one of {}", valid.join(", ")),
            message: format!(
                "unknown property '{first}' in {from}; valid roots are {}",
                valid.join(", ")
            ),
        });
    };
    segments[0] = root.to_string();
    if source == Source::Devices && *root == "properties" {
        if let Some(section) = segments.get_mut(1) {
            match section.to_ascii_lowercase().as_str() {
                "desired" => *section = "desired".into(),
                "reported" => *section = "reported".into(),
                _ => {
                    return Err(PathError {
                        segment: 1,
                        expected: "desired or reported".into(),
                        message: format!(
                            "unknown section 'properties.{section}'; expected \
                             properties.desired or properties.reported"
                        ),
                    })
                }
            }
        }
    }
    Ok(Path { segments })
}
