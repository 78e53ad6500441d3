//! Direct methods: `POST /twins/{id}/methods` waits for the device's answer.

use crate::auth::{Authorized, ServiceConnect};
use crate::extract::{HubJson, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use fleethub_hub::{MethodRequest, MethodResponse};

/// The direct-method route.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/twins/{id}/methods", post(invoke))
}

/// Answers 200 `{"status":…,"payload":…}` with the device's own status inside; the Python SDK
/// sends a `None` payload as `""`, which the device receives as that JSON string.
async fn invoke(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    HubJson(request): HubJson<MethodRequest>,
) -> Result<Json<MethodResponse>, ApiError> {
    Ok(Json(state.hub.invoke_method(&id, request).await?))
}
