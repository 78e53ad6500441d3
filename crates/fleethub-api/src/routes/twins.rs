//! Device twins: `GET`, `PATCH` (merge) and `PUT` (replace) `/twins/{id}`, with `If-Match`.

use crate::auth::{Authorized, RegistryRead, ServiceConnect};
use crate::extract::{if_match, HubJson, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
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
    Ok(super::json_with_etag(state.hub.get_twin(&id).await?))
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
    Ok(super::json_with_etag(twin))
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
    Ok(super::json_with_etag(twin))
}
