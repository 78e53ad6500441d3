//! Jobs v2: `PUT/GET /jobs/v2/{id}`, `POST /jobs/v2/{id}/cancel` and `GET /jobs/v2/query`. The
//! hub answers typed jobs; this module writes them as IoT Hub's `JobResponse` ([`JobBody`]).

use super::paging::{self, MAX_ITEM_COUNT};
use crate::auth::{Authorized, RegistryRead, ServiceConnect};
use crate::extract::{HubJson, HubQuery, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleethub_hub::jobs::{Job, JobQuery, MethodCall, Statistics, TwinUpdate};
use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};
use serde::Deserialize;
use serde_json::Value;

/// The job routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/jobs/v2/query", get(query))
        .route("/jobs/v2/{id}", get(get_job).put(create))
        .route("/jobs/v2/{id}/cancel", post(cancel))
}

/// Answers 200 with the new job (IoT Hub's `JobResponse`); 409 if the id is taken.
async fn create(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    HubJson(body): HubJson<Value>,
) -> Result<Json<JobBody>, ApiError> {
    Ok(Json(JobBody(state.hub.create_job(&id, body).await?)))
}

async fn get_job(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<JobBody>, ApiError> {
    Ok(Json(JobBody(state.hub.get_job(&id).await?)))
}

async fn cancel(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<JobBody>, ApiError> {
    Ok(Json(JobBody(state.hub.cancel_job(&id).await?)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryParams {
    job_type: Option<String>,
    job_status: Option<String>,
    page_size: Option<String>,
    continuation_token: Option<String>,
}

/// Answers an object `{"type":"jobResponse","items":[…],"continuationToken":…}` (the service
/// SDK fails on a bare array), with the token also in the `x-ms-continuation` header, which is
/// what the Node SDK pages by. The page size and token may come as query parameters or in the
/// `x-ms-max-item-count` and `x-ms-continuation` headers, as on `POST /devices/query`.
async fn query(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    HubQuery(params): HubQuery<QueryParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page_size = match params.page_size.as_deref() {
        Some(size) => paging::page_size("pageSize", Some(size))?,
        None => paging::page_size(MAX_ITEM_COUNT, paging::header(&headers, MAX_ITEM_COUNT)?)?,
    };
    let continuation_token = match params.continuation_token.filter(|t| !t.is_empty()) {
        Some(token) => Some(token),
        None => paging::continuation(&headers)?,
    };
    let request = JobQuery {
        job_type: params.job_type,
        job_status: params.job_status,
        page_size,
        continuation_token,
    };
    let page = state.hub.query_jobs(request).await?;
    let next = page.continuation_token;
    let body = JobsPage {
        kind: "jobResponse",
        items: page.items.into_iter().map(JobBody).collect(),
        continuation_token: next.clone(),
    };
    let mut response = Json(body).into_response();
    paging::set_continuation(&mut response, next.as_deref())?;
    Ok(response)
}

/// A page of `GET /jobs/v2/query`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct JobsPage {
    /// Always `jobResponse`.
    #[serde(rename = "type")]
    kind: &'static str,
    items: Vec<JobBody>,
    continuation_token: Option<String>,
}

/// A job in IoT Hub's `JobResponse` shape; the fields a job does not have are left out.
struct JobBody(Job);

impl Serialize for JobBody {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let job = &self.0;
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("jobId", &job.job_id)?;
        out.serialize_entry("type", job.job_type.as_str())?;
        out.serialize_entry("queryCondition", &job.query_condition)?;
        out.serialize_entry("createdTime", &job.created_time)?;
        out.serialize_entry("startTime", &job.start_time)?;
        out.serialize_entry(
            "maxExecutionTimeInSeconds",
            &job.max_execution_time_in_seconds,
        )?;
        out.serialize_entry("status", job.status.as_str())?;
        out.serialize_entry("deviceJobStatistics", &StatisticsBody(&job.statistics))?;
        if let Some(method) = &job.method {
            out.serialize_entry("cloudToDeviceMethod", &MethodBody(method))?;
        }
        if let Some(update) = &job.update_twin {
            out.serialize_entry("updateTwin", &TwinPatchBody(update))?;
        }
        // The request's own shape, echoed: `RateControl` is what the hub parsed it into.
        if let Some(rate) = &job.rate_control {
            out.serialize_entry("rateControl", rate)?;
        }
        let optional = [
            ("endTime", &job.end_time),
            ("failureReason", &job.failure_reason),
            ("statusMessage", &job.status_message),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                out.serialize_entry(name, value)?;
            }
        }
        out.end()
    }
}

/// `deviceJobStatistics`.
struct StatisticsBody<'a>(&'a Statistics);

impl Serialize for StatisticsBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.0;
        let mut out = serializer.serialize_struct("DeviceJobStatistics", 6)?;
        out.serialize_field("deviceCount", &s.device_count)?;
        out.serialize_field("failedCount", &s.failed_count)?;
        out.serialize_field("succeededCount", &s.succeeded_count)?;
        out.serialize_field("runningCount", &s.running_count)?;
        out.serialize_field("pendingCount", &s.pending_count)?;
        out.serialize_field("canceledCount", &s.canceled_count)?;
        out.end()
    }
}

/// `cloudToDeviceMethod`: the call a method job makes.
struct MethodBody<'a>(&'a MethodCall);

impl Serialize for MethodBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut out = serializer.serialize_struct("CloudToDeviceMethod", 4)?;
        out.serialize_field("methodName", &m.method_name)?;
        out.serialize_field("payload", &m.payload)?;
        out.serialize_field("responseTimeoutInSeconds", &m.response_timeout_in_seconds)?;
        out.serialize_field("connectTimeoutInSeconds", &m.connect_timeout_in_seconds)?;
        out.end()
    }
}

/// `updateTwin`: a twin job's patch in IoT Hub's twin shape, `etag` `*`.
struct TwinPatchBody<'a>(&'a TwinUpdate);

impl Serialize for TwinPatchBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Desired<'a> {
            desired: &'a serde_json::Map<String, Value>,
        }
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("etag", "*")?;
        if let Some(tags) = &self.0.tags {
            out.serialize_entry("tags", tags)?;
        }
        if let Some(desired) = &self.0.desired {
            out.serialize_entry("properties", &Desired { desired })?;
        }
        out.end()
    }
}
