//! Native `/v1/events`: the change feed, read by cursor (see `fleethub_hub::events`), and
//! `/v1/events/stream`, the same feed as server-sent events.

use crate::auth::{Authorized, RegistryRead};
use crate::extract::HubQuery;
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use fleethub_hub::events::parse_cursor;
use fleethub_hub::{ChangeEvent, EventsPage, Hub};
use futures_util::Stream;
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Events per page when the caller gives no `limit`.
const DEFAULT_PAGE: usize = 100;

/// The change-feed routes, each with its description.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(read_events))
        .routes(routes!(stream_events))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// The cursor to read after: a page's `next` (absent: from the oldest kept event).
    after: Option<String>,
    /// Events per page (default 100).
    #[param(minimum = 1)]
    limit: Option<usize>,
}

/// Reads the change feed.
///
/// A page of the change feed: every committed change (registry, twins, jobs, configurations,
/// rollouts), oldest first. Pass `next` as `after` to read on.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(EventsQuery),
    responses((status = 200, description = "A page of events and the cursor after it.", body = PageBody)),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
async fn read_events(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    HubQuery(query): HubQuery<EventsQuery>,
) -> Result<Json<PageBody>, ApiError> {
    let after = parse_cursor(query.after.as_deref())?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    Ok(Json(PageBody::from(
        state.hub.events_after(after, limit).await?,
    )))
}

/// A page of the feed: `{"events": […], "next": "<cursor>"}`.
#[derive(Serialize, ToSchema)]
#[schema(as = EventsPage)]
pub(crate) struct PageBody {
    events: Vec<EventBody>,
    /// The cursor after this page's last event: pass it as `after` to read on.
    next: String,
}

/// One event: `seq`, `time`, `deviceId` (left out when it concerns no device), `kind` and
/// `body` as stored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ChangeEvent)]
struct EventBody {
    seq: i64,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
    kind: String,
    body: Value,
}

impl From<EventsPage> for PageBody {
    fn from(page: EventsPage) -> PageBody {
        let event = |e: ChangeEvent| EventBody {
            seq: e.seq,
            time: e.time,
            device_id: e.device_id,
            kind: e.kind,
            body: e.body,
        };
        PageBody {
            events: page.events.into_iter().map(event).collect(),
            next: page.next,
        }
    }
}

/// Events one stream message carries at most.
const STREAM_BATCH: usize = 500;
/// How often a stream with nothing new looks again.
const STREAM_IDLE: Duration = Duration::from_millis(500);
/// A reader further behind than this skips ahead: a live view wants now, not a backlog (the
/// skipped events stay readable from `/v1/events`).
const STREAM_MAX_BEHIND: i64 = 10_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Start after this cursor (else after `Last-Event-ID`, else at the newest event).
    after: Option<String>,
}

/// Streams the change feed.
///
/// The change feed as server-sent events: one `event: events` message per batch of up to 500
/// events, `data` a page as `/v1/events` answers it and `id` its cursor, so a reconnecting
/// `EventSource` resumes where it stopped (`Last-Event-ID`). It starts after `after`, else
/// after `Last-Event-ID`, else at the newest event (only what comes next). A reader more than
/// 10,000 events behind gets `event: lagged` (`{"skipped": n}`) and continues from the newest.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The cursor a reconnecting EventSource resumes after."),
    ),
    responses((
        status = 200,
        description = "Server-sent events: `events` (data: an EventsPage, id: its cursor), \
                       `lagged` (data: `{\"skipped\": n}`) and `error` (data: `{\"message\": …}`).",
        content_type = "text/event-stream",
        body = String,
    )),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
async fn stream_events(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    HubQuery(query): HubQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, axum::Error>>>, ApiError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let cursor = match query.after.or(resume) {
        Some(text) => parse_cursor(Some(&text))?,
        None => state.hub.last_event_seq().await?,
    };
    let stream = futures_util::stream::unfold((state.hub, cursor), |(hub, cursor)| async move {
        let (event, cursor) = next_message(&hub, cursor).await;
        Some((Ok(event), (hub, cursor)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Waits for the next message of a stream at `cursor`; returns it and the cursor after it.
async fn next_message(hub: &Hub, cursor: i64) -> (Event, i64) {
    loop {
        let page = match hub.events_after(cursor, STREAM_BATCH).await {
            Ok(page) => page,
            Err(e) => {
                tokio::time::sleep(STREAM_IDLE).await;
                let body = serde_json::json!({ "message": e.message });
                return (
                    Event::default().event("error").data(body.to_string()),
                    cursor,
                );
            }
        };
        if page.events.is_empty() {
            tokio::time::sleep(STREAM_IDLE).await;
            continue;
        }
        let next = parse_cursor(Some(&page.next)).unwrap_or(cursor);
        if page.events.len() == STREAM_BATCH {
            if let Ok(last) = hub.last_event_seq().await {
                if last - next > STREAM_MAX_BEHIND {
                    let body = serde_json::json!({ "skipped": last - cursor });
                    let event = Event::default()
                        .event("lagged")
                        .id(last.to_string())
                        .data(body.to_string());
                    return (event, last);
                }
            }
        }
        let event = Event::default()
            .event("events")
            .id(page.next.clone())
            .json_data(PageBody::from(page));
        match event {
            Ok(event) => return (event, next),
            Err(_) => return (Event::default().event("error").data("{}"), next),
        }
    }
}
