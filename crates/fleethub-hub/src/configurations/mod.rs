//! Configurations: IoT Hub's automatic device management. A configuration sets twin paths under
//! `properties.desired.` on every device its target condition selects; per path the highest
//! priority wins, ties to the newest. Each targeted twin carries
//! `configurations.{id}.status` (Targeted or Applied).
//!
//! `request.rs` reads and checks what a client sends (IoT Hub's shape; unknown keys refused,
//! read-only keys ignored), this module stores configurations and answers with their metrics
//! counted when asked (read-your-writes), and `apply.rs` brings twins in line: through a device
//! operation after a configuration changes, and by following the change feed after a twin
//! changes.

pub(crate) mod apply;
mod counts;
mod request;

use crate::device::{etag_for, etag_matches};
use crate::jobs::{DeviceAction, DeviceSet, JobId, OperationSpec, Pace};
use crate::Hub;
use chrono::{DateTime, Utc};
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_query::Condition;
use fleethub_store::{ConfigurationReads, ConfigurationRow};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

use request::{Checked, Stored};
pub use request::{ConfigurationContent, QueryTestResult};

/// The most configurations a hub holds (IoT Hub's standard tier).
pub const MAX_CONFIGURATIONS: u64 = 100;
/// The most custom metrics a configuration has.
pub const MAX_METRICS: usize = 5;

/// A configuration as IoT Hub shows it (`GET /configurations/{id}`), its metrics counted when
/// it was read; `fleethub-api` writes it in IoT Hub's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Configuration {
    pub id: String,
    pub schema_version: String,
    pub labels: BTreeMap<String, String>,
    pub content: ConfigurationContent,
    pub target_condition: String,
    pub created_time_utc: DateTime<Utc>,
    pub last_updated_time_utc: DateTime<Utc>,
    pub priority: u32,
    pub system_metrics: Metrics,
    pub metrics: Metrics,
    pub etag: String,
}

/// Metric queries and their current results (row counts).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub results: BTreeMap<String, u64>,
    pub queries: BTreeMap<String, String>,
}

/// What `PUT /configurations/{id}` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Updated,
}

/// The query of a configuration's applied count.
fn applied_query(id: &str) -> String {
    format!("SELECT deviceId FROM devices WHERE configurations.[[{id}]].status = 'Applied'")
}

/// The query of a configuration's targeted count.
fn targeted_query(condition: &str) -> String {
    if condition.trim().is_empty() {
        return String::new();
    }
    format!("SELECT deviceId FROM devices WHERE {condition}")
}

fn not_found(id: &str) -> HubError {
    HubError::new(
        ErrorCode::ConfigurationNotFound,
        format!("configuration '{id}' does not exist"),
    )
}

fn stale_etag(id: &str, current: &str) -> HubError {
    HubError::new(
        ErrorCode::PreconditionFailed,
        format!(
            "configuration '{id}' has etag \"{current}\", not the one in If-Match; read it \
             again and retry"
        ),
    )
}

/// The operation that applies a changed configuration: every device its condition selects,
/// plus every device whose twin still carries it (those may be leaving).
fn apply_spec(
    id: &str,
    condition: Option<&str>,
    held: bool,
    rate: Option<u32>,
) -> HubResult<OperationSpec> {
    let holders = format!("IS_DEFINED(configurations.[[{id}]])");
    let set = match (condition.map(str::trim).filter(|c| !c.is_empty()), held) {
        (Some("*"), _) => "*".to_string(),
        (Some(c), true) => format!("({c}) OR {holders}"),
        (Some(c), false) => c.to_string(),
        (None, _) => holders,
    };
    let job = JobId::parse(&format!("configuration-{}", uuid::Uuid::new_v4()))?;
    let mut spec = OperationSpec::new(
        job,
        DeviceSet::Query(set),
        DeviceAction::ApplyConfigurations,
    );
    spec.max_execution = Duration::from_secs(crate::jobs::MAX_EXECUTION_SECS_LIMIT);
    spec.pace = rate.map(Pace::per_second).transpose()?;
    Ok(spec)
}

impl Hub {
    /// `PUT /configurations/{id}`: creates (no If-Match; a taken id is 409) or updates (If-Match
    /// an etag, quoted or not, or `*`; a stale one is 412, an absent configuration 404). Only
    /// labels, metrics, priority and the target condition may change. Devices follow through a
    /// device operation created in the same commit.
    pub async fn put_configuration(
        &self,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> HubResult<(Configuration, PutOutcome)> {
        fleethub_core::configuration::validate_id(id)?;
        let checked = request::check(id, body)?;
        let if_match = if_match.map(|s| s.trim().trim_matches('"').to_string());
        let (hub, key, now_ms) = (self.clone(), id.to_string(), self.now_ms());
        let (row, outcome) = self
            .store()
            .write(move |tx| match if_match {
                None => hub.create_in(tx, &key, checked, now_ms),
                Some(tag) => hub.update_in(tx, &key, checked, &tag, now_ms),
            })
            .await?;
        Ok((self.with_metrics(row).await?, outcome))
    }

    fn create_in(
        &self,
        tx: &mut fleethub_store::WriteTx<'_>,
        id: &str,
        checked: Checked,
        now_ms: i64,
    ) -> HubResult<(ConfigurationRow, PutOutcome)> {
        if let Some(existing) = tx.get_configuration(id)? {
            let message = if existing.deleted {
                format!(
                    "configuration '{id}' was deleted and is still being removed from its \
                     devices; try again shortly"
                )
            } else {
                format!(
                    "configuration '{id}' already exists; to change it, send its etag in If-Match"
                )
            };
            return Err(HubError::new(
                ErrorCode::ConfigurationAlreadyExists,
                message,
            ));
        }
        if tx.live_configuration_count()? >= MAX_CONFIGURATIONS {
            return Err(HubError::new(
                ErrorCode::IotHubQuotaExceeded,
                format!(
                    "the hub already holds {MAX_CONFIGURATIONS} configurations, its limit; \
                     delete one first"
                ),
            ));
        }
        apply::skip_backlog_if_first_in(tx)?;
        let stored = checked.stored(1);
        let row = ConfigurationRow {
            id: id.to_string(),
            body: stored.to_value(),
            priority: i64::from(checked.priority),
            created_ms: now_ms,
            updated_ms: now_ms,
            etag: etag_for(1),
            deleted: false,
        };
        tx.insert_configuration(&row)?;
        self.after_change_in(tx, &row, Some(&stored.target_condition), false)?;
        Ok((row, PutOutcome::Created))
    }

    fn update_in(
        &self,
        tx: &mut fleethub_store::WriteTx<'_>,
        id: &str,
        checked: Checked,
        if_match: &str,
        now_ms: i64,
    ) -> HubResult<(ConfigurationRow, PutOutcome)> {
        let mut row = tx
            .get_configuration(id)?
            .filter(|r| !r.deleted)
            .ok_or_else(|| not_found(id))?;
        if !etag_matches(Some(if_match), &row.etag) {
            return Err(stale_etag(id, &row.etag));
        }
        let old = Stored::from_row(&row)?;
        if let Some(content) = &checked.content {
            if *content != old.content {
                return Err(HubError::invalid(format!(
                    "content of configuration '{id}' cannot change after it is created; create \
                     a new configuration with the new content (only labels, metrics, priority \
                     and targetCondition may change)"
                )));
            }
        }
        let stored = checked.updated(old.clone());
        let condition_changed = stored.target_condition != old.target_condition;
        let priority_changed = i64::from(checked.priority) != row.priority;
        row.body = stored.to_value();
        row.priority = i64::from(checked.priority);
        row.updated_ms = now_ms;
        row.etag = etag_for(stored.version);
        tx.update_configuration(&row)?;
        if condition_changed || priority_changed {
            self.after_change_in(tx, &row, Some(&stored.target_condition), true)?;
        }
        Ok((row, PutOutcome::Updated))
    }

    /// Records what every configuration change needs in its own commit: the operation that
    /// applies it, and the change-feed follower's wake-up.
    fn after_change_in(
        &self,
        tx: &mut fleethub_store::WriteTx<'_>,
        row: &ConfigurationRow,
        condition: Option<&str>,
        held: bool,
    ) -> HubResult<()> {
        let spec = apply_spec(&row.id, condition, held, self.config().configuration_rate)?;
        let prepared = self.prepare_operation(spec)?;
        if !self.insert_operation_in(tx, prepared)? {
            return Err(HubError::server("a configuration's operation id was taken"));
        }
        self.configurations_state().mark_active(tx);
        Ok(())
    }

    /// `GET /configurations/{id}`, with its metrics counted now.
    pub async fn get_configuration(&self, id: &str) -> HubResult<Configuration> {
        let key = id.to_string();
        let row = self
            .store()
            .read(move |r| r.get_configuration(&key))
            .await?
            .filter(|r| !r.deleted)
            .ok_or_else(|| not_found(id))?;
        self.with_metrics(row).await
    }

    /// `GET /configurations[?top=N]`: up to `top` (default and at most 100) configurations in id
    /// order, with their metrics.
    pub async fn list_configurations(&self, top: Option<u64>) -> HubResult<Vec<Configuration>> {
        let limit = top.unwrap_or(MAX_CONFIGURATIONS).min(MAX_CONFIGURATIONS) as usize;
        let rows = self
            .store()
            .read(|r| r.list_configurations(MAX_CONFIGURATIONS as usize * 2))
            .await?;
        let mut out = Vec::new();
        for row in rows.into_iter().filter(|r| !r.deleted).take(limit) {
            out.push(self.with_metrics(row).await?);
        }
        Ok(out)
    }

    /// `DELETE /configurations/{id}`: If-Match optional (an etag, quoted or not, or `*`). The
    /// devices that carry it lose its settings and get the next configuration's, through a
    /// device operation created in the same commit.
    pub async fn delete_configuration(&self, id: &str, if_match: Option<&str>) -> HubResult<()> {
        let (hub, key, now_ms) = (self.clone(), id.to_string(), self.now_ms());
        let if_match = if_match.map(str::to_string);
        self.store()
            .write(move |tx| {
                let mut row = tx
                    .get_configuration(&key)?
                    .filter(|r| !r.deleted)
                    .ok_or_else(|| not_found(&key))?;
                if !etag_matches(if_match.as_deref(), &row.etag) {
                    return Err(stale_etag(&key, &row.etag));
                }
                if tx.configuration_counts(&key)?.targeted == 0 {
                    tx.purge_configuration(&key)?;
                    return Ok(());
                }
                row.deleted = true;
                row.updated_ms = now_ms;
                tx.update_configuration(&row)?;
                hub.after_change_in(tx, &row, None, true)
            })
            .await
    }

    /// `POST /configurations/testQueries`: whether a target condition and custom metric queries
    /// parse, each error naming its line and column.
    pub fn test_configuration_queries(&self, test: &Value) -> HubResult<QueryTestResult> {
        request::test_queries(test)
    }

    /// `POST /devices/{id}/applyConfigurationContent`: sets a configuration content's
    /// `deviceContent` on one device's desired properties at once, as a desired patch.
    pub async fn apply_configuration_content(
        &self,
        device_id: &str,
        body: &Value,
    ) -> HubResult<()> {
        let content = request::check_content(body, "the request")?;
        let patch = apply::content_patch(&content);
        let body = serde_json::json!({ "properties": { "desired": Value::Object(patch) } });
        self.update_twin(device_id, body, None).await.map(drop)
    }

    /// A stored row as IoT Hub shows it, its counts as of now: targeted and custom metrics by
    /// their conditions (kept current from the change feed, see `counts.rs`), applied from the
    /// twins' statuses once the change-feed follower has caught up with every change committed
    /// before this call.
    async fn with_metrics(&self, row: ConfigurationRow) -> HubResult<Configuration> {
        self.configurations_caught_up().await;
        let stored = Stored::from_row(&row)?;
        let dialect = self.store().dialect();
        let target = match stored.target_condition.trim() {
            "" => None,
            text => {
                let c = Condition::parse(text)
                    .map_err(|e| HubError::server(format!("stored targetCondition: {e}")))?;
                let sql = c.to_sql(dialect);
                Some((c, sql))
            }
        };
        let mut custom = Vec::new();
        for (name, query) in &stored.metrics {
            let condition = request::metric_condition(name, query)?;
            let sql = condition.to_sql(dialect);
            custom.push((name.clone(), condition, sql));
        }
        let id = row.id.clone();
        let state = self.configurations_state().clone();
        let (targeted, applied, results) = self
            .store()
            .read(move |r| {
                let mut counts = state.counts.lock();
                let targeted = match &target {
                    Some((c, sql)) => counts.count(r, c, sql)?,
                    None => 0,
                };
                let applied = r.configuration_counts(&id)?.applied;
                let mut results = BTreeMap::new();
                for (name, condition, sql) in &custom {
                    results.insert(name.clone(), counts.count(r, condition, sql)?);
                }
                Ok::<_, fleethub_store::StoreError>((targeted, applied, results))
            })
            .await?;
        let system_metrics = Metrics {
            results: BTreeMap::from([
                ("targetedCount".to_string(), targeted),
                ("appliedCount".to_string(), applied),
            ]),
            queries: BTreeMap::from([
                (
                    "targetedCount".to_string(),
                    targeted_query(&stored.target_condition),
                ),
                ("appliedCount".to_string(), applied_query(&row.id)),
            ]),
        };
        let time = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        Ok(Configuration {
            id: row.id,
            schema_version: stored.schema_version,
            labels: stored.labels,
            content: stored.content,
            target_condition: stored.target_condition,
            created_time_utc: time(row.created_ms),
            last_updated_time_utc: time(row.updated_ms),
            priority: u32::try_from(row.priority).unwrap_or(0),
            system_metrics,
            metrics: Metrics {
                results,
                queries: stored.metrics,
            },
            etag: row.etag,
        })
    }
}

/// A `Map` from `(path under properties.desired, value)` pairs.
pub(crate) type DeviceContent = Map<String, Value>;

#[cfg(test)]
mod tests;
