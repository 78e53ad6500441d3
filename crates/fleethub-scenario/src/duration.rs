//! Simulated durations as people write them in scenario files and flags: `90s`, `5m`, `1h30m`,
//! `2d`, `250ms`.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A span of simulated time, parsed from `5m`-style text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct SimDuration(pub Duration);

impl SimDuration {
    /// Zero simulated time: the start of a run.
    pub const ZERO: SimDuration = SimDuration(Duration::ZERO);

    pub fn from_secs(secs: u64) -> SimDuration {
        SimDuration(Duration::from_secs(secs))
    }

    /// To the nearest whole second: what reports show.
    pub fn whole_secs(d: std::time::Duration) -> SimDuration {
        SimDuration(Duration::from_secs(d.as_secs_f64().round() as u64))
    }

    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }

    /// Parses one or more `<number><unit>` parts (units `ms`, `s`, `m`, `h`, `d`), e.g. `1h30m`.
    pub fn parse(text: &str) -> Result<SimDuration, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty duration; write e.g. \"90s\", \"5m\", \"1h30m\"".into());
        }
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(digits);
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_len);
            let value: f64 = number.parse().map_err(|_| bad(text))?;
            let seconds_per_unit = match unit.trim() {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86_400.0,
                _ => return Err(bad(text)),
            };
            total += Duration::from_secs_f64(value * seconds_per_unit);
            rest = next.trim_start();
        }
        Ok(SimDuration(total))
    }
}

fn bad(text: &str) -> String {
    format!(
        "'{text}' is not a duration; write a number and a unit (ms, s, m, h, d), e.g. \"90s\", \"5m\", \"1h30m\""
    )
}

impl fmt::Display for SimDuration {
    /// The shortest exact form: `0s`, `250ms`, `90s` → `1m30s`, `3600s` → `1h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            return if ms < 60_000 {
                write!(f, "{:.1}s", ms as f64 / 1000.0)
            } else {
                write!(f, "{}m{:.1}s", ms / 60_000, (ms % 60_000) as f64 / 1000.0)
            };
        }
        let mut secs = ms / 1000;
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for SimDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SimDuration::parse(s)
    }
}

impl<'de> Deserialize<'de> for SimDuration {
    /// Accepts `"5m"`-style strings, and bare numbers as seconds.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Secs(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => SimDuration::parse(&t).map_err(serde::de::Error::custom),
            Raw::Secs(s) if s >= 0.0 && s.is_finite() => {
                Ok(SimDuration(Duration::from_secs_f64(s)))
            }
            Raw::Secs(s) => Err(serde::de::Error::custom(format!(
                "{s} is not a duration; durations are zero or more seconds"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: &str) -> f64 {
        SimDuration::parse(t).unwrap().as_secs_f64()
    }

    #[test]
    fn units_and_compound_forms_parse() {
        assert_eq!(secs("90s"), 90.0);
        assert_eq!(secs("5m"), 300.0);
        assert_eq!(secs("1h30m"), 5400.0);
        assert_eq!(secs("2d"), 172_800.0);
        assert_eq!(secs("250ms"), 0.25);
        assert_eq!(secs("1.5h"), 5400.0);
        assert_eq!(secs(" 1h 5s "), 3605.0);
        assert_eq!(secs("0s"), 0.0);
    }

    #[test]
    fn bad_durations_say_what_would_be_right() {
        for t in ["", "5", "m", "5x", "5 minutes", "-5m", "1h-3m"] {
            let err = SimDuration::parse(t).unwrap_err();
            assert!(err.contains("e.g."), "{t:?}: {err}");
        }
    }

    #[test]
    fn display_is_the_shortest_exact_form() {
        let show = |t: &str| SimDuration::parse(t).unwrap().to_string();
        assert_eq!(show("90s"), "1m30s");
        assert_eq!(show("3600s"), "1h");
        assert_eq!(show("1d2h"), "1d2h");
        assert_eq!(show("0m"), "0s");
        assert_eq!(show("1500ms"), "1.5s");
        assert_eq!(show("61.5s"), "1m1.5s");
    }

    #[test]
    fn toml_accepts_text_and_seconds() {
        #[derive(Deserialize)]
        struct T {
            a: SimDuration,
            b: SimDuration,
        }
        let t: T = toml::from_str("a = \"10m\"\nb = 30").unwrap();
        assert_eq!(t.a.as_secs_f64(), 600.0);
        assert_eq!(t.b.as_secs_f64(), 30.0);
        let err = toml::from_str::<T>("a = \"ten\"\nb = 1").err().unwrap();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
