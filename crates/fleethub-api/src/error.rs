//! Every failure answers the way IoT Hub does: the HTTP status from the error table, a JSON body
//! (`{"errorCode":404001,"message":…}`) and an `iothub-errorcode` header naming the error.

use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleethub_core::{ErrorCode, HubError};
use serde_json::Value;

/// The header IoT Hub names the error in; the service SDKs read it.
pub const ERROR_CODE_HEADER: HeaderName = HeaderName::from_static("iothub-errorcode");

/// A [`HubError`] on its way out as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub HubError);

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status =
            StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(code = e.code.name(), "request failed: {}", e.message);
        }
        error_response(status, e.code.name(), e.to_json())
    }
}

fn error_response(status: StatusCode, name: &'static str, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(ERROR_CODE_HEADER, HeaderValue::from_static(name));
    response
}

/// The answer for a path no route serves.
pub async fn route_not_found(method: Method, uri: Uri) -> Response {
    let message = format!(
        "no resource at {method} {}; see docs/rest-api.md for the supported paths",
        uri.path()
    );
    ApiError(HubError::new(ErrorCode::NotFound, message)).into_response()
}

/// The answer for a known path called with a method it does not support.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!("{} does not support {method}", uri.path());
    ApiError(HubError::new(ErrorCode::MethodNotAllowed, message)).into_response()
}
