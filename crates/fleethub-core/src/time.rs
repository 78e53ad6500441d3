//! Timestamps in the form IoT Hub writes them: `2026-11-22T10:00:00.0000000Z`.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats a time as IoT Hub does in twins and registry entries (seven fractional digits).
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    // chrono has no seven-digit fraction specifier: write the 100 ns ticks ourselves.
    let ticks = t.timestamp_subsec_nanos() / 100;
    format!("{}.{ticks:07}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// Parses an RFC 3339 timestamp as the SDKs send it.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The zero time IoT Hub shows for "never": `0001-01-01T00:00:00Z`.
pub const NEVER: &str = "0001-01-01T00:00:00Z";

/// RFC 3339 with milliseconds, for logs and native APIs.
pub fn format_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_seven_fractional_digits_and_parse_back() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T10:00:00.1234567Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = format_timestamp(t);
        assert_eq!(s, "2026-11-22T10:00:00.1234567Z");
        assert_eq!(parse_timestamp(&s), Some(t));
    }
}
