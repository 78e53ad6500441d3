//! The REST API: IoT Hub's service surface (devices, twins, direct methods, statistics, bulk
//! registry, certificates, jobs v2) so the official service SDKs work unmodified, the native `/v1`
//! extensions (cloud-to-device messages, telemetry), `/metrics`, `/healthz`, and MQTT over
//! WebSocket handed to the device gateway.
//!
//! Everything here translates: HTTP in, a `Hub` call, HTTP out. Every failure answers from the
//! one error table in `fleethub-core`, in IoT Hub's shape (see [`error`]).

mod auth;
pub mod error;
mod extract;
mod paths;
mod routes;
pub mod websocket;

use axum::routing::get;
use axum::Router;
use tower::Layer;

pub use error::ApiError;

/// What every handler needs: the application core and the device gateway (for WebSocket).
#[derive(Clone)]
pub struct ApiState {
    /// The application core every route calls into.
    pub hub: fleethub_hub::Hub,
    /// The device gateway that serves MQTT over WebSocket.
    pub gateway: fleethub_mqtt::Gateway,
}

/// The whole HTTP surface, ready to serve. Paths are normalized before routing (see
/// [`paths::trim_trailing_slash`]), so every route also answers with a trailing slash.
pub fn router(state: ApiState) -> Router {
    let hub = state.hub.clone();
    let routes = routes(state);
    Router::new()
        .fallback_service(axum::middleware::map_request(paths::trim_trailing_slash).layer(routes))
        .layer(axum::middleware::map_response_with_state(
            hub,
            error::render_error_bodies,
        ))
}

fn routes(state: ApiState) -> Router {
    Router::new()
        .merge(routes::devices::routes())
        .merge(routes::twins::routes())
        .merge(routes::query::routes())
        .merge(routes::methods::routes())
        .merge(routes::jobs::routes())
        .merge(routes::statistics::routes())
        .merge(routes::certificates::routes())
        .merge(routes::messages::routes())
        .merge(routes::events::routes())
        .merge(routes::firmware::routes())
        .merge(routes::system::routes())
        .route("/$iothub/websocket", get(websocket::upgrade))
        .route("/$servicebus/websocket", get(websocket::amqp_not_supported))
        // Applies to the routes above, so it must come after them.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::route_not_found)
        .with_state(state)
}
