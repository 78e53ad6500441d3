//! The REST API: IoT Hub's service surface (devices, twins, direct methods, statistics, bulk
//! registry, certificates, jobs v2) so the official service SDKs work unmodified, the native `/v1`
//! extensions (cloud-to-device messages, telemetry, the change feed), `/metrics`, `/healthz`,
//! MQTT over WebSocket handed to the device gateway, and the web dashboard at `/`.
//!
//! Everything here translates: HTTP in, a `Hub` call, HTTP out. Every failure answers from the
//! one error table in `fleethub-core`, in IoT Hub's shape (see [`error`]).

mod auth;
pub mod dashboard;
pub mod error;
mod extract;
pub mod openapi;
mod paths;
mod routes;
pub mod websocket;

use axum::routing::get;
use axum::Router;

pub use error::ApiError;

/// What every handler needs: the application core and the device gateway (for WebSocket).
#[derive(Clone)]
pub struct ApiState {
    /// The application core every route calls into.
    pub hub: fleethub_hub::Hub,
    /// The device gateway that serves MQTT over WebSocket.
    pub gateway: fleethub_mqtt::Gateway,
    /// The web dashboard's sign-in links and cache.
    pub dashboard: std::sync::Arc<dashboard::Dashboard>,
}

/// The whole HTTP surface as a tower service: paths are normalized before routing (see
/// [`paths::trim_trailing_slash`]), so every route also answers with a trailing slash, and every
/// failed response gets its IoT Hub error body. The HTTPS listener serves this directly; one
/// hand-written service costs less per request than a router nested in a router under two
/// middleware layers.
pub fn service(state: ApiState) -> Api {
    Api {
        hub: state.hub.clone(),
        routes: routes(state),
    }
}

/// [`service`] as a router, for `axum::serve` and tests.
pub fn router(state: ApiState) -> Router {
    Router::new().fallback_service(service(state))
}

/// See [`service`].
#[derive(Clone)]
pub struct Api {
    hub: fleethub_hub::Hub,
    routes: Router,
}

impl tower::Service<axum::extract::Request> for Api {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        let request = paths::trim_trailing_slash(request);
        let response = tower::Service::call(&mut self.routes, request);
        let hub = self.hub.clone();
        Box::pin(async move { Ok(error::render_error_bodies(&hub, response.await?)) })
    }
}

fn routes(state: ApiState) -> Router {
    let (v1, _) = openapi::v1().split_for_parts();
    Router::new()
        .merge(v1)
        .merge(routes::devices::routes())
        .merge(routes::twins::routes())
        .merge(routes::query::routes())
        .merge(routes::methods::routes())
        .merge(routes::jobs::routes())
        .merge(routes::configurations::routes())
        .merge(routes::statistics::routes())
        .merge(routes::certificates::routes())
        .merge(routes::system::routes())
        .merge(dashboard::routes())
        .route("/$iothub/websocket", get(websocket::upgrade))
        .route("/$servicebus/websocket", get(websocket::amqp_not_supported))
        // Applies to the routes above, so it must come after them.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::route_not_found)
        .with_state(state)
}
