//! Every failure answers the way IoT Hub does: the HTTP status from the error table, a JSON body
//! (`{"errorCode":404001,"message":…}`) and an `iothub-errorcode` header naming the error.

use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleethub_core::{ErrorCode, HubError};
use fleethub_hub::Hub;

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

/// An error response whose body is still to be written: the body carries the hub clock's time,
/// which only [`render_error_bodies`] (a layer over the whole router, with the hub) can read.
#[derive(Clone)]
struct Unrendered(HubError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status =
            StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(code = e.code.name(), "request failed: {}", e.message);
        }
        let mut response = status.into_response();
        response
            .headers_mut()
            .insert(ERROR_CODE_HEADER, HeaderValue::from_static(e.code.name()));
        response.extensions_mut().insert(Unrendered(e));
        response
    }
}

/// Writes the IoT Hub error body of every failed response, stamped with the hub clock's time.
pub(crate) fn render_error_bodies(hub: &Hub, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Some(Unrendered(e)) = parts.extensions.remove::<Unrendered>() else {
        return Response::from_parts(parts, body);
    };
    let mut rendered = Json(e.to_json(hub.now())).into_response();
    // The empty placeholder's length no longer holds; the new body's is known to hyper.
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.extend(rendered.headers_mut().drain());
    Response::from_parts(parts, rendered.into_body())
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
