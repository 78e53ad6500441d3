//! Request extractors that refuse bad input in IoT Hub's error shape instead of axum's plain-text
//! rejections: JSON bodies, query strings, path segments and `If-Match`.

use crate::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::IF_MATCH;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use fleethub_core::{ErrorCode, HubError};
use serde::de::DeserializeOwned;

/// A JSON request body; a malformed one answers 400 `IotHubFormatError` with the parser's message.
///
/// The content type is not checked: the service SDKs always send JSON, and curl users forget it.
pub struct HubJson<T>(pub T);

impl<S, T> FromRequest<S> for HubJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_unreadable)?;
        parse_json(&bytes).map(HubJson).map_err(ApiError)
    }
}

/// Parses a body, saying whether the text is not JSON or JSON of the wrong shape.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HubError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HubError::format(
            "request body is empty; this call needs a JSON body",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "request body does not have the expected shape",
            _ => "request body is not valid JSON",
        };
        HubError::format(format!("{what}: {e}"))
    })
}

fn body_unreadable(rejection: BytesRejection) -> ApiError {
    let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ErrorCode::MessageTooLarge
    } else {
        ErrorCode::IotHubFormatError
    };
    ApiError(HubError::new(
        code,
        format!("request body could not be read: {}", rejection.body_text()),
    ))
}

/// A query string; unknown parameters (such as `api-version`) are ignored, bad values answer 400.
pub struct HubQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for HubQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| HubQuery(q))
            .map_err(|e| {
                ApiError(HubError::invalid(format!(
                    "query string is invalid: {}",
                    e.body_text()
                )))
            })
    }
}

/// The one `{…}` segment of a route, percent-decoded (`a%23b` is `a#b`).
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| PathId(id))
            .map_err(|e| {
                ApiError(HubError::invalid(format!(
                    "path segment is invalid: {}",
                    e.body_text()
                )))
            })
    }
}

/// The `If-Match` header as sent (the hub strips the quotes).
pub fn if_match(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get(IF_MATCH)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError(HubError::invalid(
                    "If-Match header must be ASCII: an etag in quotes, or \"*\"",
                ))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn json_errors_say_whether_syntax_or_shape_was_wrong() {
        let syntax = parse_json::<Value>(b"{\"a\":").unwrap_err();
        assert_eq!(syntax.code, ErrorCode::IotHubFormatError);
        assert!(
            syntax
                .message
                .starts_with("request body is not valid JSON: EOF"),
            "{}",
            syntax.message
        );

        let shape = parse_json::<Vec<u32>>(b"{}").unwrap_err();
        assert!(
            shape
                .message
                .starts_with("request body does not have the expected shape"),
            "{}",
            shape.message
        );

        let empty = parse_json::<Value>(b"  ").unwrap_err();
        assert!(empty.message.contains("empty"), "{}", empty.message);
    }
}
