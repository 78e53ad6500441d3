//! The device registry: `PUT/GET/DELETE /devices/{id}`, `GET /devices?top=N` and the bulk
//! `POST /devices`.

use crate::auth::{Authorized, RegistryRead, RegistryWrite};
use crate::extract::{if_match, HubJson, HubQuery, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleethub_hub::registry::ExportImportDevice;
use fleethub_hub::{BulkOutcome, Device};
use serde::Deserialize;
use serde_json::{json, Value};

/// The registry routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/devices", get(list).post(bulk))
        .route("/devices/{id}", get(get_one).put(put).delete(delete))
}

/// A registry entry as the service SDKs expect it.
fn device_json(device: Device) -> Value {
    let mut value = serde_json::to_value(device).unwrap_or(Value::Null);
    // The revision is the hub's bookkeeping behind the etag, not part of IoT Hub's shape.
    if let Some(obj) = value.as_object_mut() {
        obj.remove("$revision");
    }
    value
}

async fn put(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    headers: HeaderMap,
    HubJson(body): HubJson<Value>,
) -> Result<Response, ApiError> {
    let device = state.hub.put_device(&id, body, if_match(&headers)?).await?;
    // The service SDK accepts only 200 here, for creation as well as update.
    Ok(super::json_with_etag(device_json(device)))
}

async fn get_one(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let device = state.hub.get_device(&id).await?;
    Ok(super::json_with_etag(device_json(device)))
}

async fn delete(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.hub.delete_device(&id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ListQuery {
    top: Option<usize>,
}

async fn list(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    HubQuery(query): HubQuery<ListQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let devices = state.hub.list_devices(query.top.unwrap_or(1000)).await?;
    Ok(Json(devices.into_iter().map(device_json).collect()))
}

async fn bulk(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    HubJson(entries): HubJson<Vec<ExportImportDevice>>,
) -> Result<Response, ApiError> {
    let outcome = state.hub.bulk_devices(entries).await?;
    let status = if outcome.is_successful() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((status, Json(bulk_outcome_json(&outcome))).into_response())
}

/// IoT Hub's bulk registry answer: `{isSuccessful, errors: [{deviceId, errorCode, errorStatus}],
/// warnings}`.
fn bulk_outcome_json(outcome: &BulkOutcome) -> Value {
    let errors: Vec<Value> = outcome
        .errors
        .iter()
        .map(|e| {
            json!({
                "deviceId": e.device_id,
                "errorCode": e.error.code.name(),
                "errorStatus": e.error.message,
            })
        })
        .collect();
    json!({ "isSuccessful": outcome.is_successful(), "errors": errors, "warnings": [] })
}
