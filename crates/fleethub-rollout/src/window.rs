//! Maintenance windows: when a device may be pushed. A window opens at each wall-clock time its
//! cron expression matches, in a time zone, and closes `duration` later on the same wall clock,
//! so `0 2 * * *` for 2h is 02:00–04:00 local every night, 22:00 for 4h runs across midnight to
//! 02:00, and on the night clocks change the window keeps its wall-clock edges (an hour shorter
//! in spring, an hour longer in autumn). A start that falls in a spring-forward gap opens at the
//! first instant after the gap; an ambiguous autumn time means its first occurrence.
//!
//! The zone is fixed (`zone = "America/New_York"`) or read per device from a tag such as
//! `tags.tz`, with a fallback for devices whose tag is missing or names no known zone.

use crate::cron::Cron;
use chrono::{DateTime, Utc};
use jiff::civil::DateTime as CivilDateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest window accepted: a week.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// How far ahead a window's next opening is looked for: a cron such as `0 2 29 2 *` (leap days)
/// opens within four years.
const LOOKAHEAD_DAYS: u32 = 4 * 366 + 1;

/// A maintenance window as a rollout spec states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// When the window opens, five cron fields in local time, e.g. `0 2 * * *`.
    pub cron: String,
    /// How long it stays open, in seconds of wall-clock time.
    pub duration_secs: u64,
    /// The zone it is read in: an IANA name (`Europe/Paris`, `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// A twin path holding each device's own zone, e.g. `tags.tz`; `zone` (or UTC) is the
    /// fallback for devices without a usable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_zone: Option<String>,
}

/// A checked window: its cron parsed and its fallback zone found.
#[derive(Debug, Clone)]
pub struct Window {
    cron: Cron,
    duration: Duration,
    fallback: Zone,
    device_zone: Option<String>,
}

/// A time zone with its name, as windows are evaluated in.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    tz: TimeZone,
}

impl Zone {
    /// The zone named `name` in the bundled tz database, or an error saying so.
    pub fn named(name: &str) -> Result<Zone, String> {
        TimeZone::get(name)
            .map(|tz| Zone {
                name: name.to_string(),
                tz,
            })
            .map_err(|_| format!("'{name}' is not a known time zone; write an IANA name such as \"America/New_York\" or \"UTC\""))
    }

    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    fn instant(&self, civil: CivilDateTime) -> Option<Timestamp> {
        self.tz.to_ambiguous_timestamp(civil).compatible().ok()
    }
}

/// Where an instant falls relative to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Inside a window that closes at `until`.
    Open { until: DateTime<Utc> },
    /// Outside; the next window opens at `opens` (`None`: never within four years).
    Closed { opens: Option<DateTime<Utc>> },
}

impl Window {
    /// Checks a spec: the cron parses, the duration is 1 minute to a week, the zone exists, and
    /// the window opens at least once in four years.
    pub fn new(spec: &WindowSpec) -> Result<Window, String> {
        let cron = Cron::parse(&spec.cron)?;
        let duration = Duration::from_secs(spec.duration_secs);
        if duration < Duration::from_secs(60) || duration > MAX_WINDOW {
            return Err(format!(
                "window duration {}s is outside 60s..={}s (a minute to a week)",
                spec.duration_secs,
                MAX_WINDOW.as_secs()
            ));
        }
        let fallback = match &spec.zone {
            Some(name) => Zone::named(name)?,
            None => Zone::utc(),
        };
        if let Some(path) = &spec.device_zone {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(format!(
                    "device_zone '{path}' is not a twin path such as \"tags.tz\""
                ));
            }
        }
        let window = Window {
            cron,
            duration,
            fallback,
            device_zone: spec.device_zone.clone(),
        };
        let epoch = DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default();
        if let Position::Closed { opens: None } = window.position(&window.fallback, epoch) {
            return Err(format!(
                "window cron '{}' never matches a date",
                window.cron
            ));
        }
        Ok(window)
    }

    /// The twin path devices carry their own zone in, if the window is device-local.
    pub fn device_zone_path(&self) -> Option<&str> {
        self.device_zone.as_deref()
    }

    /// The zone a device's window is read in: its own (from the tag) when the window is
    /// device-local and the tag names a known zone, else the fallback.
    pub fn zone_for(&self, device_zone: Option<&str>) -> Zone {
        match (self.device_zone.is_some(), device_zone) {
            (true, Some(name)) => Zone::named(name).unwrap_or_else(|_| self.fallback.clone()),
            _ => self.fallback.clone(),
        }
    }

    /// Where `now` falls in `zone`: open until when, or when it next opens.
    pub fn position(&self, zone: &Zone, now: DateTime<Utc>) -> Position {
        let Some(now_ts) = Timestamp::from_millisecond(now.timestamp_millis()).ok() else {
            return Position::Closed { opens: None };
        };
        // A window that opened up to `duration` (plus a day for the clock change) ago may still
        // be open: start the walk that many days back.
        let back_days = self.duration.as_secs() / 86_400 + 2;
        let mut day = zone.tz.to_datetime(now_ts).date();
        for _ in 0..back_days {
            match day.yesterday() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        for _ in 0..LOOKAHEAD_DAYS {
            if self.cron.matches_day(day) {
                for (hour, minute) in self.cron.times_of_day() {
                    let start_civil = day.at(hour, minute, 0, 0);
                    let Some(start) = zone.instant(start_civil) else {
                        continue;
                    };
                    let Some(end) = start_civil
                        .checked_add(self.duration)
                        .ok()
                        .and_then(|c| zone.instant(c))
                    else {
                        continue;
                    };
                    if end <= start || end <= now_ts {
                        continue;
                    }
                    if start <= now_ts {
                        return Position::Open {
                            until: to_chrono(end),
                        };
                    }
                    return Position::Closed {
                        opens: Some(to_chrono(start)),
                    };
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        Position::Closed { opens: None }
    }
}

fn to_chrono(ts: Timestamp) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ts.as_millisecond()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
