//! The operator's timeline: each step runs at its simulated time as REST calls, and
//! expectations are judged against the twins the hub serves.

use crate::duration::SimDuration;
use crate::expect::{decides_early, describe, satisfied, Measure};
use crate::firmware::Artifact;
use crate::roster::Roster;
use crate::scenario::{Action, Expectation, Step, Target};
use anyhow::{anyhow, Result};
use fleethub_client::HubClient;
use fleethub_client::Method;
use fleethub_sim::esp32::SimClock;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the timeline acts with.
pub struct Operator {
    pub rest: HubClient,
    pub roster: Arc<Roster>,
    pub artifacts: Vec<Artifact>,
    pub clock: SimClock,
    /// When the run started in real time.
    pub started: Instant,
}

/// How one step went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub name: String,
    /// What it did, in one line.
    pub summary: String,
    pub scheduled: SimDuration,
    /// Simulated time when it started.
    pub ran_at: SimDuration,
    /// Real seconds since the start of the run when it started.
    pub real_s: f64,
    pub took_ms: u64,
    pub targets: usize,
    pub ok: usize,
    pub failed: usize,
    pub first_error: Option<String>,
}

/// How one expectation went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub name: String,
    pub description: String,
    pub passed: bool,
    pub measured: Measure,
    /// Simulated time of the verdict.
    pub decided_at: SimDuration,
    pub real_s: f64,
    pub note: Option<String>,
}

/// One line saying what a step does.
pub fn summarize(step: &Step) -> String {
    let who = match &step.target {
        Target::All => "all devices".to_string(),
        Target::Groups(g) => format!("group {}", g.join("+")),
        Target::Devices(d) if d.len() <= 3 => d.join(", "),
        Target::Devices(d) => format!("{} devices", d.len()),
        Target::Query(q) => format!("query \"{q}\""),
    };
    match &step.action {
        Action::SetFirmware(v) => format!("set_firmware {v} → {who}"),
        Action::TwinPatch(_) => format!("twin_patch → {who}"),
        Action::Method(m) => format!("method {} → {who}", m.name),
        Action::Http(h) => format!("http {} {}", h.method, h.path),
    }
}

/// The version a `"${firmware:VERSION}"` placeholder names.
fn placeholder_version(text: &str) -> Option<&str> {
    text.strip_prefix("${firmware:")?.strip_suffix('}')
}

/// Whether a step places an artifact in an `http` body (`"${firmware:VERSION}"`): such a body
/// goes to many devices at once, so it cannot carry a URL minted for one.
pub fn places_artifacts(step: &Step) -> bool {
    fn any(value: &Value) -> bool {
        match value {
            Value::String(text) => placeholder_version(text).is_some(),
            Value::Array(items) => items.iter().any(any),
            Value::Object(map) => map.values().any(any),
            _ => false,
        }
    }
    matches!(&step.action, Action::Http(h) if h.body.as_ref().is_some_and(any))
}

impl Operator {
    fn real_s(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0
    }

    /// The device ids a target names now.
    pub async fn resolve(&self, target: &Target) -> Result<Vec<String>> {
        Ok(match target {
            Target::All => self.roster.all_ids(),
            Target::Groups(gs) => gs.iter().flat_map(|g| self.roster.group_ids(g)).collect(),
            Target::Devices(ds) => ds.clone(),
            Target::Query(q) => self.rest.query_ids(q).await?,
        })
    }

    /// Runs every step at its time, in order, publishing each step's start time (for
    /// expectations anchored `after` it) and record.
    pub async fn run_steps(
        &self,
        steps: &[Step],
        ran: &watch::Sender<BTreeMap<String, SimDuration>>,
        records: &watch::Sender<Vec<StepRecord>>,
    ) {
        for step in steps {
            let now = self.clock.elapsed();
            if step.at.0 > now {
                self.clock.sleep(step.at.0 - now).await;
            }
            let ran_at = SimDuration::whole_secs(self.clock.elapsed());
            ran.send_modify(|m| {
                m.insert(step.name.clone(), ran_at);
            });
            let record = self.run_step(step, ran_at).await;
            records.send_modify(|r| r.push(record));
        }
    }

    async fn run_step(&self, step: &Step, ran_at: SimDuration) -> StepRecord {
        let (real_s, began) = (self.real_s(), Instant::now());
        let mut record = StepRecord {
            name: step.name.clone(),
            summary: summarize(step),
            scheduled: step.at,
            ran_at,
            real_s,
            took_ms: 0,
            targets: 0,
            ok: 0,
            failed: 0,
            first_error: None,
        };
        let results: Vec<Result<()>> = match self.calls(step).await {
            Ok(r) => r,
            Err(e) => vec![Err(e)],
        };
        record.targets = results.len();
        for r in results {
            match r {
                Ok(()) => record.ok += 1,
                Err(e) => {
                    record.failed += 1;
                    record.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        record.took_ms = began.elapsed().as_millis() as u64;
        record
    }

    async fn calls(&self, step: &Step) -> Result<Vec<Result<()>>> {
        if let Action::Http(h) = &step.action {
            let method = Method::from_bytes(h.method.as_bytes())?;
            let body = h.body.clone().map(|b| self.with_artifacts(b));
            let reply = self.rest.call(method, &h.path, body.as_ref()).await;
            let what = format!("{} {}", h.method, h.path);
            return Ok(vec![reply
                .and_then(|r| r.ok(&what))
                .map(|_| ())
                .map_err(Into::into)]);
        }
        let ids = self.resolve(&step.target).await?;
        let results = futures_util::stream::iter(ids)
            .map(|id| async move { self.per_device(&step.action, &id).await })
            .buffer_unordered(fleethub_client::FAN_OUT)
            .collect()
            .await;
        Ok(results)
    }

    /// Replaces every string `"${firmware:VERSION}"` in an `http` body with that artifact's
    /// `desired.firmware` (version, url, sha256, size, and the hub's signature and models for a
    /// generated image), so a step can hand the simulator's own firmware to a job (or, later, a
    /// rollout) without knowing the server's port.
    fn with_artifacts(&self, body: Value) -> Value {
        match body {
            Value::String(text) => {
                let artifact = placeholder_version(&text)
                    .and_then(|v| self.artifacts.iter().find(|a| a.desired.version == v));
                match artifact {
                    Some(a) => serde_json::to_value(&a.desired).unwrap_or(Value::String(text)),
                    None => Value::String(text),
                }
            }
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.with_artifacts(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, self.with_artifacts(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    async fn per_device(&self, action: &Action, id: &str) -> Result<()> {
        let (method, path, body) = match action {
            Action::SetFirmware(v) => {
                let a = self
                    .artifacts
                    .iter()
                    .find(|a| &a.desired.version == v)
                    .ok_or_else(|| anyhow!("no artifact for {v}"))?;
                (
                    Method::PATCH,
                    format!("/twins/{id}"),
                    a.twin_patch(&self.rest, id).await?,
                )
            }
            Action::TwinPatch(p) => (Method::PATCH, format!("/twins/{id}"), p.clone()),
            Action::Method(m) => (
                Method::POST,
                format!("/twins/{id}/methods"),
                json!({"methodName": m.name, "payload": m.payload, "responseTimeoutInSeconds": m.timeout_s}),
            ),
            Action::Http(_) => unreachable!("http steps make one call"),
        };
        let what = format!("{method} {path}");
        self.rest
            .call(method, &path, Some(&body))
            .await?
            .ok(&what)?;
        Ok(())
    }

    /// Judges one expectation: polls the hub's twins until it is met or its simulated deadline
    /// passes; `ended` cuts the wait short (the verdict is then taken from one last look).
    pub async fn judge(
        &self,
        e: &Expectation,
        mut ran: watch::Receiver<BTreeMap<String, SimDuration>>,
        mut ended: watch::Receiver<bool>,
    ) -> Outcome {
        let description = describe(e);
        let anchor = match &e.after {
            None => Some(SimDuration::ZERO),
            Some(step) => tokio::select! {
                r = ran.wait_for(|m| m.contains_key(step)) => r.ok().and_then(|m| m.get(step).copied()),
                _ = ended.wait_for(|e| *e) => None,
            },
        };
        let Some(anchor) = anchor else {
            return self.verdict(
                e,
                description,
                false,
                Measure::default(),
                Some(format!(
                    "step {} never ran",
                    e.after.as_deref().unwrap_or("?")
                )),
            );
        };
        let deadline = anchor.0 + e.within.0;
        let poll = Duration::from_millis(250).mul_f64(self.clock.scale());
        loop {
            let past_deadline = self.clock.elapsed() >= deadline;
            let run_over = *ended.borrow();
            if decides_early(e.quantity) || past_deadline || run_over {
                let m = self.measure(e).await;
                let ok = satisfied(e.quantity, m);
                if ok && decides_early(e.quantity) {
                    return self.verdict(e, description, true, m, None);
                }
                if past_deadline || self.clock.elapsed() >= deadline {
                    return self.verdict(e, description, ok, m, None);
                }
                if run_over {
                    let note = format!(
                        "the run ended before the deadline ({})",
                        SimDuration::whole_secs(deadline)
                    );
                    return self.verdict(e, description, ok, m, Some(note));
                }
            }
            let left = deadline.saturating_sub(self.clock.elapsed());
            tokio::select! {
                _ = self.clock.sleep(left.min(poll)) => {}
                _ = ended.wait_for(|e| *e) => {}
            }
        }
    }

    async fn measure(&self, e: &Expectation) -> Measure {
        let ids = match self.resolve(&e.target).await {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!("expectation {}: {err:#}", e.name);
                return Measure::default();
            }
        };
        let twins = self.rest.twins(&ids).await;
        Measure::over(&e.matcher, twins.iter().map(Option::as_ref))
    }

    fn verdict(
        &self,
        e: &Expectation,
        description: String,
        passed: bool,
        measured: Measure,
        note: Option<String>,
    ) -> Outcome {
        Outcome {
            name: e.name.clone(),
            description,
            passed,
            measured,
            decided_at: SimDuration::whole_secs(self.clock.elapsed()),
            real_s: self.real_s(),
            note,
        }
    }
}

/// Serializes as its display form (`"5m"`) in JSON reports.
impl Serialize for SimDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    #[test]
    fn only_an_http_body_with_a_firmware_placeholder_places_artifacts() {
        let s = Scenario::parse(
            "[[group]]\nname = \"g\"\ncount = 1\n[[firmware]]\nversion = \"2\"\ngenerate = { size = 1 }\n\
             [[step]]\nat = 1\nhttp = { method = \"PUT\", path = \"/jobs/v2/j\", body = { a = [{ fw = \"${firmware:2}\" }] } }\n\
             [[step]]\nat = 2\nhttp = { method = \"PUT\", path = \"/jobs/v2/k\", body = { fw = \"firmware:2\" } }\n\
             [[step]]\nat = 3\nset_firmware = \"2\"\n",
        )
        .unwrap();
        let placed: Vec<bool> = s.steps.iter().map(places_artifacts).collect();
        assert_eq!(placed, [true, false, false]);
    }

    #[test]
    fn steps_summarize_in_one_line() {
        let s = Scenario::parse(
            "[[group]]\nname = \"beta\"\ncount = 1\n[[firmware]]\nversion = \"2\"\ngenerate = { size = 1 }\n\
             [[step]]\nat = 1\ngroup = \"beta\"\nset_firmware = \"2\"\n\
             [[step]]\nat = 2\ndevices = [\"a\", \"b\"]\nmethod = { name = \"reboot\" }\n\
             [[step]]\nat = 3\nquery = \"SELECT * FROM devices\"\ntwin_patch = {}\n\
             [[step]]\nat = 4\nhttp = { method = \"POST\", path = \"/jobs\" }\n",
        )
        .unwrap();
        let lines: Vec<String> = s.steps.iter().map(summarize).collect();
        assert_eq!(
            lines,
            [
                "set_firmware 2 → group beta",
                "method reboot → a, b",
                "twin_patch → query \"SELECT * FROM devices\"",
                "http POST /jobs",
            ]
        );
    }
}
