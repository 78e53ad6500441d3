//! Jobs v2: `PUT/GET /jobs/v2/{id}`, `POST /jobs/v2/{id}/cancel` and `GET /jobs/v2/query`.

use crate::auth::{Authorized, RegistryRead, ServiceConnect};
use crate::extract::{HubJson, HubQuery, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use fleethub_core::HubError;
use fleethub_hub::jobs::JobQuery;
use serde::Deserialize;
use serde_json::{json, Value};

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
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.hub.create_job(&id, body).await?))
}

async fn get_job(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.hub.get_job(&id).await?))
}

async fn cancel(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.hub.cancel_job(&id).await?))
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
/// SDK fails on a bare array). The page size and token may also come in the `x-ms-max-item-count`
/// and `x-ms-continuation` headers, as on `POST /devices/query`.
async fn query(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    HubQuery(params): HubQuery<QueryParams>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let page_size = params
        .page_size
        .or_else(|| header("x-ms-max-item-count"))
        .map(|s| {
            s.trim().parse::<usize>().map_err(|_| {
                HubError::invalid(format!(
                    "pageSize '{s}' must be a whole number from 1 to 1000"
                ))
            })
        })
        .transpose()?;
    let request = JobQuery {
        job_type: params.job_type,
        job_status: params.job_status,
        page_size,
        continuation_token: params
            .continuation_token
            .or_else(|| header("x-ms-continuation")),
    };
    let page = state.hub.query_jobs(request).await?;
    Ok(Json(json!({
        "type": "jobResponse",
        "items": page.items,
        "continuationToken": page.continuation_token,
    })))
}
