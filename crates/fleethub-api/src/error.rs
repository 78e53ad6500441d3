//! Every failure answers the way IoT Hub does: the HTTP status from the error table, a JSON body
//! (`{"errorCode":404001,"message":…}`) and an `iothub-errorcode` header naming the error.

use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleethub_core::HubError;
use serde_json::{json, Value};

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

/// An error outside the hub's table: the routing layer's own 404 and 405. The core table has no
/// codes for them (they are not hub failures), so they use the status with `000` appended, in the
/// same body shape.
fn routing_error(status: StatusCode, name: &'static str, message: String) -> Response {
    let body = json!({
        "errorCode": u32::from(status.as_u16()) * 1000,
        "message": message,
        "trackingId": "",
        "timestampUtc": fleethub_core::time::format_timestamp(chrono::Utc::now()),
        "info": { "name": name },
    });
    error_response(status, name, body)
}

/// The answer for a path no route serves.
pub async fn route_not_found(method: Method, uri: Uri) -> Response {
    routing_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "no resource at {method} {}; see the REST reference for the supported paths",
            uri.path()
        ),
    )
}

/// The answer for a known path called with a method it does not support.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    routing_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{} does not support {method}", uri.path()),
    )
}
