//! Native `/v1` messaging: cloud-to-device messages (the service SDK's AMQP send is not
//! supported), stored telemetry pages, and a live telemetry stream as server-sent events.

use crate::auth::{Authorized, ServiceConnect};
use crate::extract::{HubJson, HubQuery, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use fleethub_hub::{C2dRequest, TelemetryEvent};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Telemetry items per page when the caller gives no `limit`.
const DEFAULT_PAGE: usize = 100;

/// The messaging routes, each with its description.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(send_c2d))
        .routes(routes!(read_telemetry))
        .routes(routes!(stream_telemetry))
}

/// A queued cloud-to-device message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct QueuedBody {
    message_id: String,
    /// When the message expires undelivered.
    expiry_time_utc: String,
}

/// Sends a cloud-to-device message.
///
/// Queues a cloud-to-device message for a device; it is delivered when the device is (or next
/// is) subscribed, until its time to live runs out.
#[utoipa::path(
    post,
    path = "/v1/devices/{id}/messages",
    tag = "messages",
    params(("id" = String, Path, description = "The device's id.")),
    request_body = C2dRequest,
    responses((status = 200, description = "The message is stored and queued.", body = QueuedBody)),
    security(("sas" = ["ServiceConnect"]), ("session" = ["ServiceConnect"])),
)]
async fn send_c2d(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    HubJson(request): HubJson<C2dRequest>,
) -> Result<Json<QueuedBody>, ApiError> {
    let queued = state.hub.send_c2d(&id, request).await?;
    Ok(Json(QueuedBody {
        message_id: queued.message_id,
        expiry_time_utc: fleethub_core::time::format_timestamp(queued.expiry),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct TelemetryQuery {
    /// Only this device's messages.
    device_id: Option<String>,
    /// Messages after this `seq` (a page's `next`; default 0).
    after: Option<i64>,
    /// Messages per page (default 100).
    limit: Option<usize>,
    /// The newest `last` messages of `deviceId` instead of a page after `after`.
    last: Option<usize>,
}

/// A page of stored telemetry.
#[derive(Serialize, ToSchema)]
struct TelemetryPage {
    items: Vec<TelemetryEvent>,
    /// The last item's `seq` (or the `after` asked for): pass it as `after` to read on.
    next: i64,
}

/// Reads stored telemetry.
///
/// Stored telemetry, oldest first: `{"items":[…], "next": <seq>}`; pass `next` as `after` to
/// read on. With `last=N` (and a `deviceId`), the device's newest N messages, oldest first.
#[utoipa::path(
    get,
    path = "/v1/telemetry",
    tag = "telemetry",
    params(TelemetryQuery),
    responses((status = 200, description = "A page of stored messages.", body = TelemetryPage)),
    security(("sas" = ["ServiceConnect"]), ("session" = ["ServiceConnect"])),
)]
async fn read_telemetry(
    _: Authorized<ServiceConnect>,
    State(state): State<ApiState>,
    HubQuery(query): HubQuery<TelemetryQuery>,
) -> Result<Json<TelemetryPage>, ApiError> {
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
    Ok(Json(TelemetryPage { items, next }))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Only this device's messages.
    device_id: Option<String>,
}

/// Streams telemetry as it is stored.
///
/// One `data:` event per stored message (id = its `seq`); when the reader falls behind, an
/// `event: lagged` says how many were skipped (read them from `/v1/telemetry`) and the stream goes on.
#[utoipa::path(
    get,
    path = "/v1/telemetry/stream",
    tag = "telemetry",
    params(StreamQuery),
    responses((
        status = 200,
        description = "Server-sent events: one `data:` per message as it is stored (a \
                       TelemetryEvent, id: its `seq`), and `lagged` (`{\"skipped\": n}`) when the \
                       reader fell behind.",
        content_type = "text/event-stream",
        body = String,
    )),
    security(("sas" = ["ServiceConnect"]), ("session" = ["ServiceConnect"])),
)]
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
