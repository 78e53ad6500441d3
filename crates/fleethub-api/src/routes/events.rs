//! Native `/v1/events`: the change feed, read by cursor (see `fleethub_hub::events`).

use crate::auth::{Authorized, RegistryRead};
use crate::extract::HubQuery;
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use fleethub_hub::events::parse_cursor;
use fleethub_hub::{ChangeEvent, EventsPage};
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;

/// Events per page when the caller gives no `limit`.
const DEFAULT_PAGE: usize = 100;

/// The change-feed route.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/events", get(read_events))
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `{"events":[…], "next":"<cursor>"}`: pass `next` as `after` to read on.
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
#[derive(Serialize)]
struct PageBody {
    events: Vec<EventBody>,
    next: String,
}

/// One event: `seq`, `time`, `deviceId` (left out when it concerns no device), `kind` and
/// `body` as stored.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
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
