//! What an operator asks for: a rollout spec, checked once into a [`Plan`] the state machine
//! runs. Durations are whole seconds; percentages are numbers 0–100 with at most two decimals
//! (held as basis points, so a gate is integer arithmetic on counters).

use crate::window::{Window, WindowSpec};
use fleethub_core::semver;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The most waves a rollout may have.
pub const MAX_WAVES: usize = 32;
/// The most attempts a device gets (the first push and its retries).
pub const MAX_RETRIES: u32 = 10;

/// The image a rollout installs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RolloutArtifact)]
pub struct Artifact {
    pub version: String,
    /// Its SHA-256, naming it in the firmware store.
    pub sha256: String,
}

/// A rollout as created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub artifact: Artifact,
    /// The devices it is for, in the query language (`tags.product = 'aq-sensor' AND …`); the
    /// hub evaluates it, the machine is told who matches.
    pub target: String,
    /// Ordered waves; each starts when the one before it passes its gate.
    pub waves: Vec<WaveSpec>,
    /// How long a device must stay healthy on the new version before it counts as updated.
    pub soak_secs: u64,
    /// Silence tolerated while soaking: a device that sends no telemetry for this long fails.
    pub max_silence_secs: u64,
    /// A pushed device that reports no progress for this long fails.
    pub device_timeout_secs: u64,
    #[serde(default)]
    pub retry: RetrySpec,
    /// When devices may be pushed; `None`: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
    #[serde(default)]
    pub on_trip: TripAction,
    /// Allow devices running a newer version to be moved to this one.
    #[serde(default)]
    pub allow_downgrade: bool,
    /// What percentage buckets are derived from; the rollout id when absent. Two rollouts with
    /// the same seed put every device in the same bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaveSpec {
    pub name: String,
    pub select: Selector,
    /// Push at most `size` devices per `interval_secs`; `None`: all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,
    /// The wave passes when this many of its devices are updated (both parts when both given).
    pub success: Threshold,
    /// The wave trips when failures pass this (either part when both given).
    pub failure: Threshold,
}

/// Which devices a wave takes, from the target devices no earlier wave took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = WaveSelector)]
pub enum Selector {
    /// The devices matching a query condition (rings: `tags.ring = 'canary'`).
    Query(String),
    /// This share of the whole target, by deterministic bucket: cumulative, so waves of 5, 25
    /// and 100 take 5 %, then 20 % more, then the rest; raising a percentage only adds devices.
    Percent(f64),
    /// This many devices, lowest buckets first.
    Count(u32),
}

/// A paced wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    pub size: u32,
    pub interval_secs: u64,
}

/// A share of a wave's devices: a percentage, a count, or both.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// Retries of a failed device: up to `retries` more pushes, the n-th after
/// `backoff_secs * factor^(n-1)` (at most `max_backoff_secs`); then the device is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    pub retries: u32,
    pub backoff_secs: u64,
    pub factor: u32,
    pub max_backoff_secs: u64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            retries: 2,
            backoff_secs: 600,
            factor: 2,
            max_backoff_secs: 6 * 3600,
        }
    }
}

/// What a tripped gate does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TripAction {
    /// Pause the rollout; nothing is undone.
    #[default]
    Pause,
    /// Pause, and send the tripped wave's devices back to the version they ran.
    PauseAndRollbackWave,
    /// Pause, and send every device the rollout changed back.
    PauseAndRollbackAll,
    /// Send the tripped wave back and go on with the next wave (one bad city does not stop
    /// the others).
    RollbackWaveAndContinue,
}

/// A spec that cannot run; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// A checked spec, as the machine runs it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub spec: RolloutSpec,
    pub seed: String,
    pub waves: Vec<WavePlan>,
    pub soak: Duration,
    pub max_silence: Duration,
    pub device_timeout: Duration,
    pub window: Option<Window>,
}

/// A checked wave.
#[derive(Debug, Clone)]
pub struct WavePlan {
    pub name: String,
    pub select: WaveSelect,
    pub batch: Option<(u32, Duration)>,
    pub success: Gate,
    pub failure: Gate,
}

/// A checked selector: percentages in basis points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaveSelect {
    Query(String),
    Percent(u32),
    Count(u32),
}

/// A checked threshold: basis points (0–10,000) and a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    pub basis_points: Option<u32>,
    pub count: Option<u32>,
}

impl Gate {
    /// Success: `done` of `size` reach every part given (a wave of 0 devices passes).
    pub fn reached(&self, done: u32, size: u32) -> bool {
        let by_share = self
            .basis_points
            .is_none_or(|bp| u64::from(done) * 10_000 >= u64::from(bp) * u64::from(size));
        let by_count = self.count.is_none_or(|n| done >= n.min(size));
        by_share && by_count
    }

    /// Failure: `failed` of `size` passes (is more than) any part given.
    pub fn exceeded(&self, failed: u32, size: u32) -> bool {
        let by_share = self
            .basis_points
            .is_some_and(|bp| u64::from(failed) * 10_000 > u64::from(bp) * u64::from(size));
        let by_count = self.count.is_some_and(|n| failed > n);
        by_share || by_count
    }
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = self.basis_points.map(|bp| {
            let whole = bp / 100;
            match bp % 100 {
                0 => format!("{whole}%"),
                frac => format!("{whole}.{frac:02}%"),
            }
        });
        match (pct, self.count) {
            (Some(p), Some(n)) => write!(f, "{p} or {n} devices"),
            (Some(p), None) => f.write_str(&p),
            (None, Some(n)) => write!(f, "{n} devices"),
            (None, None) => f.write_str("none"),
        }
    }
}

fn basis_points(what: &str, percent: f64) -> Result<u32, SpecError> {
    let bp = percent * 100.0;
    if !(0.0..=10_000.0).contains(&bp) || (bp - bp.round()).abs() > 1e-6 {
        return Err(SpecError(format!(
            "{what} {percent} is not a percentage 0–100 with at most two decimals"
        )));
    }
    Ok(bp.round() as u32)
}

fn gate(what: &str, t: &Threshold, required: bool) -> Result<Gate, SpecError> {
    if required && t.percent.is_none() && t.count.is_none() {
        return Err(SpecError(format!(
            "{what} needs a percent, a count or both"
        )));
    }
    Ok(Gate {
        basis_points: t
            .percent
            .map(|p| basis_points(&format!("{what}.percent"), p))
            .transpose()?,
        count: t.count,
    })
}

fn positive(what: &str, secs: u64) -> Result<Duration, SpecError> {
    if secs == 0 {
        return Err(SpecError(format!("{what} must be at least 1 second")));
    }
    Ok(Duration::from_secs(secs))
}

impl RolloutSpec {
    /// Checks the spec for a rollout named `id`; the error names the first bad field.
    pub fn plan(&self, id: &str) -> Result<Plan, SpecError> {
        if semver::parse(&self.artifact.version).is_none() {
            return Err(SpecError(format!(
                "artifact.version '{}' is not a semantic version such as \"2.1.0\"",
                self.artifact.version
            )));
        }
        if self.target.trim().is_empty() {
            return Err(SpecError(
                "target is empty; write a query condition such as \"tags.product = 'aq-sensor'\""
                    .into(),
            ));
        }
        if self.waves.is_empty() || self.waves.len() > MAX_WAVES {
            return Err(SpecError(format!(
                "a rollout has 1 to {MAX_WAVES} waves; this one has {}",
                self.waves.len()
            )));
        }
        let r = &self.retry;
        if r.retries > MAX_RETRIES || r.factor == 0 || r.backoff_secs == 0 {
            return Err(SpecError(format!(
                "retry needs retries 0–{MAX_RETRIES}, backoff_secs ≥ 1 and factor ≥ 1"
            )));
        }
        let mut waves = Vec::with_capacity(self.waves.len());
        let mut last_percent = 0;
        for (i, w) in self.waves.iter().enumerate() {
            let what = format!("waves[{i}]");
            if w.name.trim().is_empty() || self.waves[..i].iter().any(|o| o.name == w.name) {
                return Err(SpecError(format!(
                    "{what}.name '{}' is empty or used by an earlier wave",
                    w.name
                )));
            }
            let select = match &w.select {
                Selector::Query(q) if q.trim().is_empty() => {
                    return Err(SpecError(format!("{what}.select.query is empty")))
                }
                Selector::Query(q) => WaveSelect::Query(q.clone()),
                Selector::Count(n) => WaveSelect::Count(*n),
                Selector::Percent(p) => {
                    let bp = basis_points(&format!("{what}.select.percent"), *p)?;
                    if bp < last_percent {
                        return Err(SpecError(format!(
                            "{what}.select.percent {p} is below an earlier wave's: percentages are cumulative shares of the target"
                        )));
                    }
                    last_percent = bp;
                    WaveSelect::Percent(bp)
                }
            };
            let batch = match w.batch {
                None => None,
                Some(b) if b.size == 0 => {
                    return Err(SpecError(format!("{what}.batch.size must be at least 1")))
                }
                Some(b) => Some((
                    b.size,
                    positive(&format!("{what}.batch.interval_secs"), b.interval_secs)?,
                )),
            };
            waves.push(WavePlan {
                name: w.name.clone(),
                select,
                batch,
                success: gate(&format!("{what}.success"), &w.success, true)?,
                failure: gate(&format!("{what}.failure"), &w.failure, false)?,
            });
        }
        let window = self
            .window
            .as_ref()
            .map(Window::new)
            .transpose()
            .map_err(|e| SpecError(format!("window: {e}")))?;
        Ok(Plan {
            spec: self.clone(),
            seed: self.seed.clone().unwrap_or_else(|| id.to_string()),
            waves,
            soak: Duration::from_secs(self.soak_secs),
            max_silence: positive("max_silence_secs", self.max_silence_secs)?,
            device_timeout: positive("device_timeout_secs", self.device_timeout_secs)?,
            window,
        })
    }
}

impl RetrySpec {
    /// The wait before attempt `attempt` (2 is the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(2).min(32);
        let secs = u64::from(self.factor)
            .checked_pow(exponent)
            .and_then(|f| f.checked_mul(self.backoff_secs))
            .unwrap_or(u64::MAX)
            .min(self.max_backoff_secs.max(self.backoff_secs));
        Duration::from_secs(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_by_percentage_and_count() {
        let pct = Gate {
            basis_points: Some(9800),
            count: None,
        };
        assert!(pct.reached(196, 200));
        assert!(!pct.reached(195, 200));
        assert!(pct.reached(0, 0), "an empty wave passes");
        let both = Gate {
            basis_points: Some(200),
            count: Some(5),
        };
        // "Trips when failures pass 2 % or 5 devices, whichever comes first".
        assert!(!both.exceeded(4, 200));
        assert!(both.exceeded(6, 200), "6 > 5");
        assert!(
            !both.exceeded(5, 1000),
            "5 is not past 5, and 0.5 % not past 2 %"
        );
        assert!(both.exceeded(3, 100), "3 % > 2 %");
        assert!(!both.exceeded(2, 100), "2 % is not past 2 %");
        let count = Gate {
            basis_points: None,
            count: Some(20),
        };
        assert!(count.reached(20, 25));
        assert!(
            count.reached(3, 3),
            "a wave smaller than the count passes when all are done"
        );
        assert_eq!(both.to_string(), "2% or 5 devices");
        assert_eq!(
            Gate {
                basis_points: Some(9950),
                count: None
            }
            .to_string(),
            "99.50%"
        );
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let r = RetrySpec {
            retries: 5,
            backoff_secs: 60,
            factor: 3,
            max_backoff_secs: 1000,
        };
        let secs: Vec<u64> = (2..=6).map(|a| r.backoff(a).as_secs()).collect();
        assert_eq!(secs, vec![60, 180, 540, 1000, 1000]);
    }
}
