//! `PUT /jobs/v2/{id}` bodies: parsed and checked once, at the edge, into a [`JobSpec`].

use super::document::{JobType, MethodCall, TwinUpdate};
use super::rate::RateControl;
use crate::methods::{check_request, MethodRequest};
use chrono::{DateTime, Utc};
use fleethub_core::twin::{limits::validate_patch, Section};
use fleethub_core::{ErrorCode, HubError, HubResult};
use serde_json::Value;
use std::fmt;

/// The longest job id IoT Hub accepts.
pub const JOB_ID_MAX: usize = 64;
/// `maxExecutionTimeInSeconds` when the request leaves it out.
pub const DEFAULT_MAX_EXECUTION_SECS: u64 = 3600;
/// The largest `maxExecutionTimeInSeconds` accepted: one year.
pub const MAX_EXECUTION_SECS_LIMIT: u64 = 365 * 24 * 3600;

/// A job id: 1 to 64 US-ASCII letters, digits and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// Validates `s` by IoT Hub's job id rules.
    pub fn parse(s: &str) -> HubResult<JobId> {
        if s.is_empty() {
            return Err(HubError::new(ErrorCode::JobInvalid, "job id is empty"));
        }
        if s.len() > JOB_ID_MAX {
            return Err(HubError::new(
                ErrorCode::JobInvalid,
                format!(
                    "job id is {} characters long; the limit is {JOB_ID_MAX}",
                    s.len()
                ),
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(HubError::new(
                ErrorCode::JobInvalid,
                format!(
                    "job id '{}' contains '{}'; allowed are ASCII letters, digits and '-'",
                    s.escape_default(),
                    bad.escape_default()
                ),
            ));
        }
        Ok(JobId(s.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a job does, checked: everything a job document needs from the request.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub job_id: JobId,
    pub job_type: JobType,
    pub query_condition: String,
    /// `None`: start as soon as possible.
    pub start_time: Option<DateTime<Utc>>,
    pub max_execution_secs: u64,
    pub method: Option<MethodCall>,
    pub twin: Option<TwinUpdate>,
    pub rate_control: Option<RateControl>,
}

fn job_invalid(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::JobInvalid, message)
}

/// Checks a `PUT /jobs/v2/{id}` body against the id in the path.
pub fn parse_job_request(path_id: &str, body: &Value) -> HubResult<JobSpec> {
    let job_id = JobId::parse(path_id)?;
    let obj = body
        .as_object()
        .ok_or_else(|| HubError::format("job request must be a JSON object"))?;
    if let Some(id) = obj.get("jobId").filter(|v| !v.is_null()) {
        if id.as_str() != Some(job_id.as_str()) {
            return Err(job_invalid(format!(
                "jobId {id} in the body does not match '{job_id}' in the URL"
            )));
        }
    }
    let job_type = match obj.get("type") {
        None | Some(Value::Null) => {
            return Err(HubError::new(
                ErrorCode::ArgumentNull,
                "type is required: scheduleUpdateTwin or scheduleDeviceMethod",
            ))
        }
        Some(Value::String(t)) => JobType::parse(t).ok_or_else(|| {
            job_invalid(format!(
                "type '{t}' is not supported; use scheduleUpdateTwin or scheduleDeviceMethod"
            ))
        })?,
        Some(other) => {
            return Err(job_invalid(format!(
                "type must be a string (scheduleUpdateTwin or scheduleDeviceMethod), not {other}"
            )))
        }
    };
    let query_condition = parse_query_condition(obj.get("queryCondition"))?;
    let start_time = parse_start_time(obj.get("startTime"))?;
    let max_execution_secs = parse_max_execution(obj.get("maxExecutionTimeInSeconds"))?;
    let (method, twin) = match job_type {
        JobType::DeviceMethod => (Some(parse_method(obj.get("cloudToDeviceMethod"))?), None),
        JobType::UpdateTwin => (None, Some(parse_twin(obj.get("updateTwin"))?)),
        // `JobType::parse` knows only the REST types.
        JobType::ApplyConfigurations | JobType::PushFirmware => {
            return Err(job_invalid(format!(
                "type {} is the hub's own; use scheduleUpdateTwin or scheduleDeviceMethod",
                job_type.as_str()
            )))
        }
    };
    let rate_control = match obj.get("rateControl") {
        None | Some(Value::Null) => None,
        Some(v) => Some(RateControl::parse(v)?),
    };
    Ok(JobSpec {
        job_id,
        job_type,
        query_condition,
        start_time,
        max_execution_secs,
        method,
        twin,
        rate_control,
    })
}

fn parse_query_condition(v: Option<&Value>) -> HubResult<String> {
    let text = match v {
        None | Some(Value::Null) => {
            return Err(HubError::new(
                ErrorCode::ArgumentNull,
                "queryCondition is required: a WHERE condition over devices, \
                 deviceId IN ['a','b'], or '*' for every device",
            ))
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(job_invalid(format!(
                "queryCondition must be a string, not {other}"
            )))
        }
    };
    if text.trim().is_empty() {
        return Err(HubError::new(
            ErrorCode::InvalidQuery,
            "queryCondition is empty; use '*' to target every device",
        ));
    }
    // The query language's own bound (8,192 characters, as IoT Hub), named for this field.
    let max = fleethub_query::limits::MAX_QUERY_CHARS;
    let chars = text.chars().count();
    if chars > max {
        return Err(HubError::new(
            ErrorCode::InvalidQuery,
            format!("queryCondition is {chars} characters; the limit is {max}"),
        ));
    }
    super::condition::DeviceSelection::validate(&text)?;
    Ok(text)
}

fn parse_start_time(v: Option<&Value>) -> HubResult<Option<DateTime<Utc>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => fleethub_core::time::parse_timestamp(s)
            .map(Some)
            .ok_or_else(|| {
                job_invalid(format!(
                    "startTime '{s}' is not an ISO 8601 time such as 2026-11-22T10:00:00Z"
                ))
            }),
        Some(other) => Err(job_invalid(format!(
            "startTime must be an ISO 8601 string, not {other}"
        ))),
    }
}

fn parse_max_execution(v: Option<&Value>) -> HubResult<u64> {
    match v {
        None | Some(Value::Null) => Ok(DEFAULT_MAX_EXECUTION_SECS),
        Some(n) => match n.as_u64() {
            Some(secs @ 1..=MAX_EXECUTION_SECS_LIMIT) => Ok(secs),
            _ => Err(job_invalid(format!(
                "maxExecutionTimeInSeconds is {n}; it must be a whole number of seconds \
                 from 1 to {MAX_EXECUTION_SECS_LIMIT}"
            ))),
        },
    }
}

fn parse_method(v: Option<&Value>) -> HubResult<MethodCall> {
    let obj = match v {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => {
            return Err(HubError::new(
                ErrorCode::ArgumentNull,
                "cloudToDeviceMethod is required for scheduleDeviceMethod jobs",
            ))
        }
        Some(_) => return Err(job_invalid("cloudToDeviceMethod must be a JSON object")),
    };
    let method_name = match obj.get("methodName") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            return Err(HubError::new(
                ErrorCode::ArgumentNull,
                "cloudToDeviceMethod.methodName is required for scheduleDeviceMethod jobs",
            ))
        }
        Some(other) => {
            return Err(job_invalid(format!(
                "cloudToDeviceMethod.methodName must be a string, not {other}"
            )))
        }
    };
    let seconds = |name: &str| -> HubResult<Option<u64>> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                job_invalid(format!(
                    "cloudToDeviceMethod.{name} must be a whole number of seconds, not {v}"
                ))
            }),
        }
    };
    let request = MethodRequest {
        method_name,
        payload: obj.get("payload").cloned().unwrap_or(Value::Null),
        response_timeout_in_seconds: seconds("responseTimeoutInSeconds")?,
        connect_timeout_in_seconds: seconds("connectTimeoutInSeconds")?,
    };
    let (response, connect, _) = check_request(&request)
        .map_err(|e| HubError::new(e.code, format!("cloudToDeviceMethod: {}", e.message)))?;
    Ok(MethodCall {
        method_name: request.method_name,
        payload: request.payload,
        response_timeout_in_seconds: response.as_secs(),
        connect_timeout_in_seconds: connect.as_secs(),
    })
}

fn parse_twin(v: Option<&Value>) -> HubResult<TwinUpdate> {
    let obj = match v {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => {
            return Err(HubError::new(
                ErrorCode::ArgumentNull,
                "updateTwin is required for scheduleUpdateTwin jobs",
            ))
        }
        Some(_) => return Err(job_invalid("updateTwin must be a JSON object")),
    };
    match obj.get("etag") {
        None | Some(Value::Null) => {}
        Some(Value::String(e)) if e.trim().trim_matches('"') == "*" => {}
        Some(other) => {
            return Err(job_invalid(format!(
                "updateTwin.etag is {other}; a job applies to many twins, so it must be \"*\" or absent"
            )))
        }
    }
    let section = crate::twin::optional_object;
    let props = obj.get("properties");
    if props
        .and_then(|p| p.get("reported"))
        .is_some_and(|r| !r.is_null())
    {
        return Err(job_invalid(
            "updateTwin.properties.reported cannot be written by a job; only the device reports",
        ));
    }
    let tags = section(obj.get("tags"), "updateTwin.tags")?;
    let mut desired = section(
        props.and_then(|p| p.get("desired")),
        "updateTwin.properties.desired",
    )?;
    // A twin read back and sent as is carries `$metadata` and `$version`: not part of the patch.
    if let Some(d) = desired.as_mut() {
        d.retain(|k, _| !k.starts_with('$'));
    }
    let update = TwinUpdate { tags, desired };
    check_twin_update(&update)?;
    Ok(update)
}

/// Checks a twin patch an operation applies: it changes something, within the twin's limits.
pub(super) fn check_twin_update(update: &TwinUpdate) -> HubResult<()> {
    if update.tags.is_none() && update.desired.is_none() {
        return Err(job_invalid(
            "updateTwin changes nothing: give tags, properties.desired or both",
        ));
    }
    if let Some(t) = &update.tags {
        validate_patch(Section::Tags, t)?;
    }
    if let Some(d) = &update.desired {
        validate_patch(Section::Desired, d)?;
    }
    Ok(())
}

/// Checks a direct-method call an operation makes, by the rules of a single call.
pub(super) fn check_method_call(call: &MethodCall) -> HubResult<()> {
    let request = MethodRequest {
        method_name: call.method_name.clone(),
        payload: call.payload.clone(),
        response_timeout_in_seconds: Some(call.response_timeout_in_seconds),
        connect_timeout_in_seconds: Some(call.connect_timeout_in_seconds),
    };
    check_request(&request).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn twin_job() -> Value {
        json!({
            "jobId": "j1",
            "type": "scheduleUpdateTwin",
            "queryCondition": "*",
            "updateTwin": { "etag": "*", "properties": { "desired": { "fw": "2.0" } } },
        })
    }

    /// A job condition is bounded by the query language's own limit, counted in characters as
    /// the query is (a condition of 8,192 two-byte characters is not over it).
    #[test]
    fn a_query_condition_over_the_query_languages_limit_is_refused_naming_it() {
        let at_limit = format!("tags.city = '{}'", "ö".repeat(8192 - 14));
        assert_eq!(at_limit.chars().count(), 8192);
        let mut job = twin_job();
        job["queryCondition"] = json!(at_limit);
        assert!(parse_job_request("j1", &job).is_ok());
        job["queryCondition"] = json!(format!("{at_limit} "));
        let e = parse_job_request("j1", &job).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidQuery);
        assert_eq!(
            e.message,
            "queryCondition is 8193 characters; the limit is 8192"
        );
    }

    #[test]
    fn job_ids_follow_iot_hub_rules() {
        assert!(JobId::parse("nightly-2026-01-01").is_ok());
        for bad in ["", "a_b", "a.b", "ü", &"x".repeat(65)] {
            assert_eq!(
                JobId::parse(bad).unwrap_err().code,
                ErrorCode::JobInvalid,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_valid_twin_job_parses_with_defaults() {
        let spec = parse_job_request("j1", &twin_job()).unwrap();
        assert_eq!(spec.job_type, JobType::UpdateTwin);
        assert_eq!(spec.max_execution_secs, DEFAULT_MAX_EXECUTION_SECS);
        assert!(spec.start_time.is_none());
        assert_eq!(spec.twin.unwrap().desired.unwrap()["fw"], "2.0");
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let cases: Vec<(Value, &str, ErrorCode)> = vec![
            (
                json!({"type": "import"}),
                "'import' is not supported",
                ErrorCode::JobInvalid,
            ),
            (
                json!({"updateTwin": {"etag": "AAAA", "properties": {"desired": {"a": 1}}}}),
                "must be \"*\" or absent",
                ErrorCode::JobInvalid,
            ),
            (
                json!({"updateTwin": {"properties": {"desired": {"a.b": 1}}}}),
                "a.b",
                ErrorCode::InvalidTwinKey,
            ),
            (
                json!({"updateTwin": {}}),
                "changes nothing",
                ErrorCode::JobInvalid,
            ),
            (
                json!({"jobId": "other"}),
                "does not match",
                ErrorCode::JobInvalid,
            ),
            (
                json!({"maxExecutionTimeInSeconds": 0}),
                "maxExecutionTimeInSeconds",
                ErrorCode::JobInvalid,
            ),
            (
                json!({"startTime": "tomorrow"}),
                "startTime 'tomorrow'",
                ErrorCode::JobInvalid,
            ),
            (
                json!({"queryCondition": null}),
                "queryCondition is required",
                ErrorCode::ArgumentNull,
            ),
            (
                json!({"type": "scheduleDeviceMethod", "cloudToDeviceMethod": {"payload": 1}}),
                "methodName is required",
                ErrorCode::ArgumentNull,
            ),
            (
                json!({"type": "scheduleDeviceMethod", "cloudToDeviceMethod": {"methodName": "x", "responseTimeoutInSeconds": 1}}),
                "responseTimeoutInSeconds is 1",
                ErrorCode::ArgumentInvalid,
            ),
            (
                json!({"rateControl": {"maxPerSecond": 0}}),
                "maxPerSecond",
                ErrorCode::JobInvalid,
            ),
        ];
        for (patch, expected, code) in cases {
            let mut body = twin_job();
            for (k, v) in patch.as_object().unwrap() {
                body[k] = v.clone();
            }
            let err = parse_job_request("j1", &body).unwrap_err();
            assert_eq!(err.code, code, "{patch}: {}", err.message);
            assert!(err.message.contains(expected), "{patch}: {}", err.message);
        }
    }
}
