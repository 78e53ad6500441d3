//! Operations endpoints without authentication: `GET /metrics` (Prometheus) and `GET /healthz`.

use crate::ApiState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The operations routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.hub.metrics_text(),
    )
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
