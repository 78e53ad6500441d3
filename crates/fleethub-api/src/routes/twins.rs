//! Device twins: `GET`, `PATCH` (merge) and `PUT` (replace) `/twins/{id}`, with `If-Match`.

use crate::auth::{Authorized, RegistryRead, ServiceConnect};
use crate::extract::{if_match, HubJson, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::header::ETAG;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleethub_hub::Twin;
use serde_json::Value;

/// The twin routes.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/twins/{id}", get(get_twin).patch(update).put(replace))
}

async fn get_twin(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    Ok(twin_response(state.hub.get_twin(&id).await?))
}

async fn update(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    headers: HeaderMap,
    HubJson(body): HubJson<Value>,
) -> Result<Response, ApiError> {
    let twin = state
        .hub
        .update_twin(&id, body, if_match(&headers)?)
        .await?;
    Ok(twin_response(twin))
}

async fn replace(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    headers: HeaderMap,
    HubJson(body): HubJson<Value>,
) -> Result<Response, ApiError> {
    let twin = state
        .hub
        .replace_twin(&id, body, if_match(&headers)?)
        .await?;
    Ok(twin_response(twin))
}

/// A twin as a 200 answer: IoT Hub's twin shape (`Twin`'s serialization) with the twin's etag,
/// quoted, in an `ETag` header.
fn twin_response(twin: Twin) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", twin.etag())).ok();
    let mut response = Json(twin).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(ETAG, etag);
    }
    response
}
