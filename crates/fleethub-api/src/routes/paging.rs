//! IoT Hub's paging headers, shared by `POST /devices/query` and `GET /jobs/v2/query`: the page
//! size in `x-ms-max-item-count`, the continuation token in `x-ms-continuation` both ways (the
//! Node service SDK pages only by the response header and sends it back as a request header).

use crate::ApiError;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use fleethub_core::HubError;

/// The request header with the largest page wanted.
pub const MAX_ITEM_COUNT: &str = "x-ms-max-item-count";
/// The continuation token, in the response when there is more and in the request for the next page.
pub const CONTINUATION: &str = "x-ms-continuation";

/// A header as text; 400 when it is not ASCII.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError(HubError::invalid(format!("{name} header must be ASCII"))))
        })
        .transpose()
}

/// A page size given as `name` (a header or query parameter), if one was given.
pub fn page_size(name: &str, value: Option<&str>) -> Result<Option<usize>, ApiError> {
    value
        .map(|v| {
            v.trim().parse::<usize>().map_err(|_| {
                ApiError(HubError::invalid(format!(
                    "{name} must be a whole number from 1 to 1000, not '{v}'"
                )))
            })
        })
        .transpose()
}

/// The request's continuation token; an empty header means none.
pub fn continuation(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    Ok(header(headers, CONTINUATION)?
        .filter(|t| !t.is_empty())
        .map(str::to_string))
}

/// Puts the token for the next page, if there is one, in the response's `x-ms-continuation`.
pub fn set_continuation(response: &mut Response, token: Option<&str>) -> Result<(), ApiError> {
    if let Some(token) = token {
        let value = HeaderValue::from_str(token)
            .map_err(|_| HubError::server("continuation token is not a valid header value"))?;
        response
            .headers_mut()
            .insert(HeaderName::from_static(CONTINUATION), value);
    }
    Ok(())
}
