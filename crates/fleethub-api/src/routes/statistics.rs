//! Registry and service statistics: `GET /statistics/devices`, `GET /statistics/service`.

use crate::auth::{Authorized, RegistryRead};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The statistics routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/statistics/devices", get(devices))
        .route("/statistics/service", get(service))
}

async fn devices(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
) -> Result<Json<Value>, ApiError> {
    let c = state.hub.device_statistics().await?;
    Ok(Json(json!({
        "totalDeviceCount": c.total,
        "enabledDeviceCount": c.enabled,
        "disabledDeviceCount": c.disabled,
    })))
}

async fn service(_: Authorized<RegistryRead>, State(state): State<ApiState>) -> Json<Value> {
    Json(json!({ "connectedDeviceCount": state.hub.connected_device_count() }))
}
