//! What a client sends for a configuration, read and checked once: IoT Hub's keys (the SDKs
//! echo a whole GET object back, so read-only keys are accepted and ignored; any other key is
//! refused by name), content paths under `properties.desired.`, conditions and metric queries
//! that parse (an error names its line and column), a non-negative integer priority, at most
//! five metrics. Also the stored form of a configuration.

use super::{DeviceContent, MAX_METRICS};
use fleethub_core::configuration::{validate_label, ID_MAX};
use fleethub_core::twin::{limits, Section};
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_query::{Condition, Query, QueryError, Source};
use fleethub_store::ConfigurationRow;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Keys a configuration body may carry. The read-only ones (`etag`, times, `systemMetrics`,
/// `contentType` from the C# SDK) are ignored.
const KEYS: &[&str] = &[
    "id",
    "schemaVersion",
    "labels",
    "content",
    "contentType",
    "targetCondition",
    "createdTimeUtc",
    "lastUpdatedTimeUtc",
    "priority",
    "systemMetrics",
    "metrics",
    "etag",
];

/// The prefix every content path has.
const DESIRED: &str = "properties.desired.";

/// A configuration's content: twin paths under `properties.desired.` and their values.
/// FleetHub has no module twins, so `modulesContent` and `moduleContent` are always empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationContent {
    pub device_content: DeviceContent,
    #[serde(default)]
    pub modules_content: Map<String, Value>,
    #[serde(default)]
    pub module_content: Map<String, Value>,
}

/// A configuration as the store keeps it (`configurations.body`); the priority, times and etag
/// are columns of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stored {
    pub schema_version: String,
    pub labels: BTreeMap<String, String>,
    pub content: ConfigurationContent,
    pub target_condition: String,
    /// Custom metric queries by name.
    pub metrics: BTreeMap<String, String>,
    /// Bumped by every update; the etag is made from it.
    pub version: u64,
}

impl Stored {
    pub(crate) fn from_row(row: &ConfigurationRow) -> HubResult<Stored> {
        Stored::deserialize(&row.body).map_err(|e| {
            HubError::server(format!(
                "stored configuration '{}' is unreadable: {e}",
                row.id
            ))
        })
    }

    pub(crate) fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A checked request body.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub schema_version: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `None` when the body has none (allowed on update, which keeps the stored content).
    pub content: Option<ConfigurationContent>,
    pub target_condition: String,
    pub priority: u32,
    pub metrics: BTreeMap<String, String>,
}

impl Checked {
    /// The stored form of a new configuration.
    pub(crate) fn stored(&self, version: u64) -> Stored {
        Stored {
            schema_version: self.schema_version.clone().unwrap_or_else(|| "1.0".into()),
            labels: self.labels.clone(),
            content: self.content.clone().unwrap_or_default(),
            target_condition: self.target_condition.clone(),
            metrics: self.metrics.clone(),
            version,
        }
    }

    /// `old` with this request's changes: labels, metrics, priority (a column), target
    /// condition. The content and schema version stay.
    pub(crate) fn updated(&self, old: Stored) -> Stored {
        Stored {
            labels: self.labels.clone(),
            target_condition: self.target_condition.clone(),
            metrics: self.metrics.clone(),
            version: old.version + 1,
            ..old
        }
    }
}

fn invalid(message: String) -> HubError {
    HubError::invalid(message)
}

/// Checks a `PUT /configurations/{id}` body.
pub(crate) fn check(id: &str, body: &Value) -> HubResult<Checked> {
    let Value::Object(obj) = body else {
        return Err(HubError::format(
            "a configuration must be a JSON object with content, targetCondition and priority",
        ));
    };
    if let Some(key) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown configuration field '{key}'; known fields are {}",
            KEYS.join(", ")
        )));
    }
    match obj.get("id") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == id => {}
        Some(other) => {
            return Err(invalid(format!(
                "body id {other} differs from the id in the path, '{id}'"
            )))
        }
    }
    let schema_version = match obj.get("schemaVersion") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(invalid(format!(
                "schemaVersion must be a string, not {other}"
            )))
        }
    };
    let content = match obj.get("content") {
        None | Some(Value::Null) => None,
        Some(v) => Some(check_content(v, "content")?),
    };
    Ok(Checked {
        schema_version,
        labels: check_labels(obj.get("labels"))?,
        content,
        target_condition: check_condition(obj.get("targetCondition"))?,
        priority: check_priority(obj.get("priority"))?,
        metrics: check_metrics(obj.get("metrics"))?,
    })
}

fn check_labels(v: Option<&Value>) -> HubResult<BTreeMap<String, String>> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(o)) => o,
        Some(other) => {
            return Err(invalid(format!(
                "labels must be an object of string names to string values, not {other}"
            )))
        }
    };
    let mut labels = BTreeMap::new();
    for (name, value) in obj {
        validate_label("label name", name)?;
        let Value::String(value) = value else {
            return Err(invalid(format!(
                "label '{name}' must have a string value, not {value}"
            )));
        };
        validate_label(&format!("value of label '{name}'"), value)?;
        labels.insert(name.clone(), value.clone());
    }
    Ok(labels)
}

/// Checks a configuration's `content` (or `applyConfigurationContent`'s body): `deviceContent`
/// paths under `properties.desired.`, none inside another, values within the twin limits; no
/// module content.
pub(crate) fn check_content(v: &Value, what: &str) -> HubResult<ConfigurationContent> {
    let Value::Object(obj) = v else {
        return Err(invalid(format!(
            "{what} must be an object with deviceContent, not {v}"
        )));
    };
    for (key, value) in obj {
        match key.as_str() {
            "deviceContent" => {}
            "modulesContent" | "moduleContent" => {
                let empty = value.is_null() || value.as_object().is_some_and(Map::is_empty);
                if !empty {
                    return Err(invalid(format!(
                        "{what}.{key} is not supported: FleetHub has no module twins; use \
                         deviceContent"
                    )));
                }
            }
            other => {
                return Err(invalid(format!(
                    "unknown field '{other}' in {what}; expected deviceContent"
                )))
            }
        }
    }
    let device = match obj.get("deviceContent") {
        Some(Value::Object(o)) if !o.is_empty() => o,
        _ => {
            return Err(invalid(format!(
                "{what}.deviceContent must set at least one twin path, e.g. \
                 {{\"properties.desired.telemetryInterval\": 60}}"
            )))
        }
    };
    let mut paths: Vec<Vec<&str>> = Vec::new();
    for path in device.keys() {
        let rest = path.strip_prefix(DESIRED).filter(|r| !r.is_empty());
        let Some(rest) = rest else {
            return Err(invalid(format!(
                "{what}.deviceContent path '{path}' is not under '{DESIRED}'; a configuration \
                 sets desired properties only"
            )));
        };
        let segments: Vec<&str> = rest.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(invalid(format!(
                "{what}.deviceContent path '{path}' has an empty segment"
            )));
        }
        if let Some(other) = paths.iter().find(|p| overlaps(p, &segments)) {
            return Err(invalid(format!(
                "{what}.deviceContent paths '{path}' and '{DESIRED}{}' overlap; one lies inside \
                 the other",
                other.join(".")
            )));
        }
        paths.push(segments);
    }
    let patch = super::apply::content_patch_of(device);
    limits::validate_section(Section::Desired, &patch)?;
    Ok(ConfigurationContent {
        device_content: device.clone(),
        ..Default::default()
    })
}

/// Whether one path lies inside the other (or they are the same).
pub(crate) fn overlaps<S: AsRef<str>, T: AsRef<str>>(a: &[S], b: &[T]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.as_ref() == y.as_ref())
}

/// A parse error as one line naming its position.
fn positioned(what: &str, e: &QueryError) -> String {
    format!(
        "{what} does not parse: {} at line {}, column {}",
        e.message, e.line, e.column
    )
}

fn check_condition(v: Option<&Value>) -> HubResult<String> {
    let text = match v {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(invalid(format!(
                "targetCondition must be a string (a query condition, or '*'), not {other}"
            )))
        }
    };
    condition_error(text).map_or(Ok(text.clone()), |m| {
        Err(HubError::new(ErrorCode::InvalidQuery, m))
    })
}

/// Why a target condition does not parse, if it does not.
fn condition_error(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return None;
    }
    Condition::parse(text)
        .err()
        .map(|e| positioned("targetCondition", &e))
}

fn check_priority(v: Option<&Value>) -> HubResult<u32> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "priority {n} is not allowed; it must be a non-negative integer up to {}",
                    u32::MAX
                ))
            }),
        Some(other) => Err(invalid(format!(
            "priority must be a non-negative integer, not {other}"
        ))),
    }
}

fn check_metrics(v: Option<&Value>) -> HubResult<BTreeMap<String, String>> {
    let queries = match v {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(o)) => match o.get("queries") {
            None | Some(Value::Null) => return Ok(BTreeMap::new()),
            Some(Value::Object(q)) => q,
            Some(other) => {
                return Err(invalid(format!(
                    "metrics.queries must be an object of names to queries, not {other}"
                )))
            }
        },
        Some(other) => {
            return Err(invalid(format!(
                "metrics must be an object with queries, not {other}"
            )))
        }
    };
    if queries.len() > MAX_METRICS {
        return Err(invalid(format!(
            "{} custom metrics given; a configuration has at most {MAX_METRICS}",
            queries.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (name, query) in queries {
        if name.is_empty() || name.len() > ID_MAX {
            return Err(invalid(format!(
                "metric name '{name}' must be 1 to {ID_MAX} characters"
            )));
        }
        let Value::String(query) = query else {
            return Err(invalid(format!(
                "metric '{name}' must be a query string, not {query}"
            )));
        };
        metric_condition(name, query)?;
        out.insert(name.clone(), query.clone());
    }
    Ok(out)
}

/// A custom metric's query (`SELECT deviceId FROM devices WHERE …`) as the condition whose
/// matches it counts.
pub(crate) fn metric_condition(name: &str, query: &str) -> HubResult<Condition> {
    metric(name, query).map_err(|m| HubError::new(ErrorCode::InvalidQuery, m))
}

fn metric(name: &str, query: &str) -> Result<Condition, String> {
    let what = format!("metric '{name}'");
    let q = Query::parse(query).map_err(|e| positioned(&what, &e))?;
    if q.source() != Source::Devices || q.is_aggregate() {
        return Err(format!(
            "{what} must select device rows (SELECT deviceId FROM devices WHERE …); its \
             result is the number of rows"
        ));
    }
    q.condition()
        .ok_or_else(|| format!("{what} must read FROM devices"))
}

/// `POST /configurations/testQueries`'s body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryTest {
    #[serde(default)]
    target_condition: Option<String>,
    #[serde(default)]
    custom_metric_queries: Option<BTreeMap<String, String>>,
}

/// What `testQueries` answers: each error, or empty (`fleethub-api` writes it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryTestResult {
    pub target_condition_error: String,
    pub custom_metric_query_errors: BTreeMap<String, String>,
}

pub(crate) fn test_queries(body: &Value) -> HubResult<QueryTestResult> {
    let test = QueryTest::deserialize(body).map_err(|e| {
        HubError::format(format!(
            "testQueries expects {{targetCondition, customMetricQueries: {{name: query}}}}: {e}"
        ))
    })?;
    let target_condition_error = test
        .target_condition
        .as_deref()
        .and_then(condition_error)
        .unwrap_or_default();
    let custom_metric_query_errors = test
        .custom_metric_queries
        .unwrap_or_default()
        .iter()
        .filter_map(|(name, q)| metric(name, q).err().map(|e| (name.clone(), e)))
        .collect();
    Ok(QueryTestResult {
        target_condition_error,
        custom_metric_query_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(content: Value) -> Value {
        json!({"id": "c1", "content": {"deviceContent": content}, "targetCondition": "*", "priority": 1})
    }

    #[test]
    fn a_full_sdk_body_is_accepted_and_read_only_keys_ignored() {
        let b = json!({
            "id": "c1", "schemaVersion": "1.0", "labels": {"team": "ops"},
            "content": {"deviceContent": {"properties.desired.config.interval": 60},
                        "modulesContent": {}, "moduleContent": {}},
            "targetCondition": "tags.environment = 'prod'", "priority": 10,
            "metrics": {"queries": {"old": "SELECT deviceId FROM devices WHERE properties.reported.v < 2"},
                        "results": {"old": 3}},
            "systemMetrics": {"results": {"targetedCount": 1}, "queries": {}},
            "etag": "AAAAAAAAAAE=", "createdTimeUtc": "2026-01-01T00:00:00Z",
            "lastUpdatedTimeUtc": "2026-01-01T00:00:00Z", "contentType": "assignment"
        });
        let c = check("c1", &b).unwrap();
        assert_eq!(c.priority, 10);
        assert_eq!(c.labels["team"], "ops");
        assert_eq!(c.metrics.len(), 1);
    }

    #[test]
    fn bad_bodies_name_what_is_wrong() {
        let cases = [
            (
                json!({"id": "c1", "bogus": 1}),
                "unknown configuration field 'bogus'",
            ),
            (json!({"id": "other"}), "differs from the id in the path"),
            (
                body(json!({"properties.reported.x": 1})),
                "is not under 'properties.desired.'",
            ),
            (
                body(json!({"tags.x": 1})),
                "is not under 'properties.desired.'",
            ),
            (body(json!({})), "must set at least one twin path"),
            (
                body(json!({"properties.desired.a": 1, "properties.desired.a.b": 2})),
                "overlap",
            ),
            (json!({"priority": -1}), "priority -1 is not allowed"),
            (json!({"priority": 1.5}), "priority 1.5 is not allowed"),
            (
                json!({"priority": "1"}),
                "priority must be a non-negative integer",
            ),
            (json!({"targetCondition": "tags.x = "}), "at line 1, column"),
            (json!({"labels": {"$x": "y"}}), "'$' is reserved"),
            (
                json!({"metrics": {"queries": {"a": "x", "b": "x", "c": "x", "d": "x", "e": "x", "f": "x"}}}),
                "at most 5",
            ),
            (
                json!({"metrics": {"queries": {"m": "SELECT deviceId FROM devices WHERE\n  tags.x ="}}}),
                "metric 'm' does not parse",
            ),
            (
                json!({"content": {"modulesContent": {"m": {}}, "deviceContent": {"properties.desired.a": 1}}}),
                "no module twins",
            ),
        ];
        for (b, expected) in cases {
            let err = check("c1", &b).unwrap_err();
            assert!(err.message.contains(expected), "{b}: {}", err.message);
        }
        let err = check("c1", &json!({"targetCondition": "tags.x =\n AND"})).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidQuery);
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    #[test]
    fn test_queries_reports_each_error() {
        let r = test_queries(&json!({
            "targetCondition": "tags.a = 'x'",
            "customMetricQueries": {"ok": "SELECT deviceId FROM devices", "bad": "SELECT FROM"}
        }))
        .unwrap();
        assert_eq!(r.target_condition_error, "");
        assert_eq!(r.custom_metric_query_errors.len(), 1);
        assert!(r.custom_metric_query_errors["bad"].contains("line 1"));
        let r = test_queries(&json!({"targetCondition": "tags.a = "})).unwrap();
        assert!(r.target_condition_error.contains("column"), "{r:?}");
    }
}
