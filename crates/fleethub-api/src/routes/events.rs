//! Native `/v1/events`: the change feed, read by cursor (see `fleethub_hub::events`).

use crate::auth::{Authorized, RegistryRead};
use crate::extract::HubQuery;
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use fleethub_hub::events::parse_cursor;
use fleethub_hub::EventsPage;
use serde::Deserialize;

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
) -> Result<Json<EventsPage>, ApiError> {
    let after = parse_cursor(query.after.as_deref())?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    Ok(Json(state.hub.events_after(after, limit).await?))
}
