//! `POST /devices/query`: IoT Hub's query language over twins and device jobs, paged with
//! `x-ms-max-item-count` and `x-ms-continuation`.

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

const MAX_ITEM_COUNT: &str = "x-ms-max-item-count";
const CONTINUATION: &str = "x-ms-continuation";
const ITEM_TYPE: &str = "x-ms-item-type";

/// The query route.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/devices/query", post(query))
}

#[derive(Deserialize)]
struct QuerySpecification {
    query: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError(HubError::invalid(format!("{name} header must be ASCII"))))
        })
        .transpose()
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
    let max_items = header(&headers, MAX_ITEM_COUNT)?
        .map(|v| {
            v.trim().parse::<usize>().map_err(|_| {
                HubError::invalid(format!(
                    "{MAX_ITEM_COUNT} must be a whole number from 1 to 1000, not '{v}'"
                ))
            })
        })
        .transpose()?;
    let continuation = header(&headers, CONTINUATION)?
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let page = state.hub.query(&text, max_items, continuation).await?;
    let mut response = Json(page.items).into_response();
    let out = response.headers_mut();
    out.insert(
        HeaderName::from_static(ITEM_TYPE),
        HeaderValue::from_static(page.item_type),
    );
    if let Some(token) = page.continuation {
        let value = HeaderValue::from_str(&token)
            .map_err(|_| HubError::server("continuation token is not a valid header value"))?;
        out.insert(HeaderName::from_static(CONTINUATION), value);
    }
    Ok(response)
}
