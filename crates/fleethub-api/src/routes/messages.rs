//! Native `/v1` messaging: cloud-to-device messages (the service SDK's AMQP send is not
//! supported), stored telemetry pages, and a live telemetry stream as server-sent events.

use crate::auth::{Authorized, ServiceConnect};
use crate::extract::{HubJson, HubQuery, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleethub_hub::{C2dRequest, TelemetryEvent};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

/// Telemetry items per page when the caller gives no `limit`.
const DEFAULT_PAGE: usize = 100;

/// The messaging routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/devices/{id}/messages", post(send_c2d))
        .route("/v1/telemetry", get(read_telemetry))
        .route("/v1/telemetry/stream", get(stream_telemetry))
}

async fn send_c2d(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    HubJson(request): HubJson<C2dRequest>,
) -> Result<Json<Value>, ApiError> {
    let queued = state.hub.send_c2d(&id, request).await?;
    Ok(Json(json!({
        "messageId": queued.message_id,
        "expiryTimeUtc": fleethub_core::time::format_timestamp(queued.expiry),
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TelemetryQuery {
    device_id: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
    /// The newest `last` messages of `deviceId` instead of a page after `after`.
    last: Option<usize>,
}

/// `{"items":[…], "next": <seq>}`: pass `next` as `after` to read on. With `last=N` (and a
/// `deviceId`), the device's newest N messages, oldest first.
async fn read_telemetry(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    HubQuery(query): HubQuery<TelemetryQuery>,
) -> Result<Json<Value>, ApiError> {
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    let items = match (query.last, query.device_id.as_deref()) {
        (Some(last), Some(device)) => state.hub.latest_telemetry(device, last).await?,
        (Some(_), None) => {
            return Err(ApiError(fleethub_core::HubError::invalid(
                "`last` reads one device's newest messages: add deviceId=<id>",
            )))
        }
        (None, device) => state.hub.read_telemetry(device, after, limit).await?,
    };
    let next = items.last().map_or(after, |item| item.seq);
    Ok(Json(json!({ "items": items, "next": next })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamQuery {
    device_id: Option<String>,
}

/// One `data:` event per stored message (id = its `seq`); when the reader falls behind, an
/// `event: lagged` says how many were skipped (read them from `/v1/telemetry`) and the stream goes on.
async fn stream_telemetry(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    HubQuery(query): HubQuery<StreamQuery>,
) -> Sse<impl Stream<Item = Result<Event, axum::Error>>> {
    let events = BroadcastStream::new(state.hub.subscribe_telemetry());
    let device = query.device_id;
    let stream = events.filter_map(move |item| to_event(item, device.as_deref()));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn to_event(
    item: Result<Arc<TelemetryEvent>, BroadcastStreamRecvError>,
    device: Option<&str>,
) -> Option<Result<Event, axum::Error>> {
    match item {
        Ok(message) if device.is_none_or(|d| d == message.device_id) => Some(
            Event::default()
                .id(message.seq.to_string())
                .json_data(&*message),
        ),
        Ok(_) => None,
        Err(BroadcastStreamRecvError::Lagged(skipped)) => Some(Ok(Event::default()
            .event("lagged")
            .data(json!({ "skipped": skipped }).to_string()))),
    }
}
