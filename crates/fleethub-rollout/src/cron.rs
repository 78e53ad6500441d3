//! The five-field cron expressions that open maintenance windows: `minute hour day-of-month
//! month day-of-week`, each `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a list of
//! those separated by commas. Day-of-week counts 0–6 from Sunday (7 is Sunday too). As in Vixie
//! cron, when both day fields are restricted a day matches if either does.

use jiff::civil::Date;
use std::fmt;

/// A parsed cron expression; it matches civil (wall-clock) times, never instants.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    any_day_of_month: bool,
    any_day_of_week: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

impl Cron {
    /// Parses `text`; the error names the field and what it accepts.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "cron '{text}' has {} fields; write five: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"",
                parts.len()
            ));
        }
        let mut masks = [0u64; 5];
        for (i, (part, (name, lo, hi))) in parts.iter().zip(FIELDS).enumerate() {
            masks[i] = field(part, lo, hi).map_err(|why| {
                format!("cron '{text}': {name} field '{part}' {why} (allowed {lo}-{hi})")
            })?;
        }
        let mut days_of_week = masks[4] as u8 & 0x7f;
        if masks[4] & (1 << 7) != 0 {
            days_of_week |= 1;
        }
        Ok(Cron {
            text: parts.join(" "),
            minutes: masks[0],
            hours: masks[1] as u32,
            days_of_month: masks[2] as u32,
            months: masks[3] as u16,
            days_of_week,
            any_day_of_month: parts[2] == "*",
            any_day_of_week: parts[4] == "*",
        })
    }

    /// The expression as written (fields separated by one space).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the expression fires on some minute of `date`.
    pub fn matches_day(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let by_month_day = self.days_of_month & (1 << date.day()) != 0;
        let by_week_day = self.days_of_week & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (true, false) => by_week_day,
            (false, true) => by_month_day,
            (false, false) => by_month_day || by_week_day,
        }
    }

    /// The (hour, minute) pairs the expression fires at on a matching day, earliest first.
    pub fn times_of_day(&self) -> impl Iterator<Item = (i8, i8)> + '_ {
        (0..24i8)
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(move |h| {
                (0..60i8)
                    .filter(move |m| self.minutes & (1 << m) != 0)
                    .map(move |m| (h, m))
            })
    }
}

/// One field as a bit mask of the values it allows.
fn field(text: &str, lo: u32, hi: u32) -> Result<u64, String> {
    let mut mask = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, number(step)?),
            None => (item, 1),
        };
        if step == 0 {
            return Err("has a step of 0".into());
        }
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a)?, number(b)?)
        } else {
            let n = number(range)?;
            // `5/15` means from 5 to the end, every 15.
            (n, if item.contains('/') { hi } else { n })
        };
        if from < lo || to > hi || from > to {
            return Err(format!("has {from}-{to} out of range"));
        }
        for v in (from..=to).step_by(step as usize) {
            mask |= 1 << v;
        }
    }
    Ok(mask)
}

fn number(text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 4 {
        return Err("is not a number, range, step or list".into());
    }
    text.parse()
        .map_err(|_| "is not a number, range, step or list".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn fields_lists_ranges_and_steps() {
        let c = Cron::parse("0,30 2-4 * * *").unwrap();
        let times: Vec<_> = c.times_of_day().collect();
        assert_eq!(
            times,
            vec![(2, 0), (2, 30), (3, 0), (3, 30), (4, 0), (4, 30)]
        );
        let c = Cron::parse("*/20 */12 * * *").unwrap();
        let times: Vec<_> = c.times_of_day().collect();
        assert_eq!(
            times,
            vec![(0, 0), (0, 20), (0, 40), (12, 0), (12, 20), (12, 40)]
        );
        let c = Cron::parse("5/30 1 * * *").unwrap();
        assert_eq!(c.times_of_day().collect::<Vec<_>>(), vec![(1, 5), (1, 35)]);
    }

    #[test]
    fn day_fields_are_ored_when_both_are_restricted() {
        // 2026-12-01 is a Tuesday.
        let c = Cron::parse("0 2 1 * 0").unwrap();
        assert!(c.matches_day(date(2026, 12, 1)), "the 1st");
        assert!(c.matches_day(date(2026, 12, 6)), "a Sunday");
        assert!(!c.matches_day(date(2026, 12, 2)));
        let weekdays = Cron::parse("0 2 * * 1-5").unwrap();
        assert!(weekdays.matches_day(date(2026, 12, 4)), "Friday");
        assert!(!weekdays.matches_day(date(2026, 12, 5)), "Saturday");
        let sunday_as_7 = Cron::parse("0 2 * * 7").unwrap();
        assert!(sunday_as_7.matches_day(date(2026, 12, 6)));
        let june = Cron::parse("0 2 * 6 *").unwrap();
        assert!(!june.matches_day(date(2026, 12, 6)));
        assert!(june.matches_day(date(2026, 6, 6)));
    }

    #[test]
    fn bad_expressions_name_the_field() {
        let err = Cron::parse("0 25 * * *").unwrap_err();
        assert!(err.contains("hour field '25'"), "{err}");
        assert!(err.contains("allowed 0-23"), "{err}");
        let err = Cron::parse("0 2 * *").unwrap_err();
        assert!(err.contains("has 4 fields"), "{err}");
        let err = Cron::parse("x 2 * * *").unwrap_err();
        assert!(err.contains("minute field 'x'"), "{err}");
        assert!(Cron::parse("*/0 2 * * *").is_err());
        assert!(Cron::parse("0 5-2 * * *").is_err());
    }
}
