//! The HTTP routes, one module per area of the API.

mod byte_range;
pub mod certificates;
pub mod configurations;
pub mod devices;
pub mod events;
pub mod firmware;
pub mod jobs;
pub mod messages;
pub mod methods;
mod paging;
pub mod query;
pub mod registry_files;
pub mod rollouts;
pub mod statistics;
pub mod system;
pub mod twins;

use axum::http::header::ETAG;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

/// A 200 JSON answer carrying the resource's etag (quoted) in an `ETag` header, as IoT Hub does.
fn json_with_etag(body: Value) -> Response {
    let etag = body
        .get("etag")
        .and_then(Value::as_str)
        .and_then(|tag| HeaderValue::from_str(&format!("\"{tag}\"")).ok());
    let mut response = Json(body).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(ETAG, etag);
    }
    response
}
