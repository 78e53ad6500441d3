//! `POST /devices/query`: IoT Hub's query language over twins and device jobs, paged with
//! `x-ms-max-item-count` and `x-ms-continuation`.

use super::paging::{self, MAX_ITEM_COUNT};
use crate::auth::{Authorized, RegistryRead};
use crate::extract::HubJson;
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use fleethub_core::HubError;
use serde::Deserialize;

const ITEM_TYPE: &str = "x-ms-item-type";

/// The query route.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/devices/query", post(query))
}

#[derive(Deserialize)]
struct QuerySpecification {
    query: Option<String>,
}

async fn query(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    headers: HeaderMap,
    HubJson(spec): HubJson<QuerySpecification>,
) -> Result<Response, ApiError> {
    let text = spec.query.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        HubError::invalid(
            "the body must be {\"query\": \"SELECT … FROM devices …\"}; the query is missing",
        )
    })?;
    let max_items = paging::page_size(MAX_ITEM_COUNT, paging::header(&headers, MAX_ITEM_COUNT)?)?;
    let continuation = paging::continuation(&headers)?;
    let page = state.hub.query(&text, max_items, continuation).await?;
    let mut response = Json(page.items).into_response();
    response.headers_mut().insert(
        HeaderName::from_static(ITEM_TYPE),
        HeaderValue::from_static(page.item_type),
    );
    paging::set_continuation(&mut response, page.continuation.as_deref())?;
    Ok(response)
}
