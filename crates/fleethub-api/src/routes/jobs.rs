//! Jobs v2: `PUT/GET /jobs/v2/{id}`, `POST /jobs/v2/{id}/cancel` and `GET /jobs/v2/query`.

use super::paging::{self, MAX_ITEM_COUNT};
use crate::auth::{Authorized, RegistryRead, ServiceConnect};
use crate::extract::{HubJson, HubQuery, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
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
    let mut response = Json(json!({
        "type": "jobResponse",
        "items": page.items,
        "continuationToken": &next,
    }))
    .into_response();
    paging::set_continuation(&mut response, next.as_deref())?;
    Ok(response)
}
