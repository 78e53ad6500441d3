//! CA certificates that `certificateAuthority` devices chain to: `PUT /certificates/{name}`.

use crate::auth::{Authorized, RegistryWrite};
use crate::extract::{HubJson, PathId};
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::routing::put;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// The certificate route.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/certificates/{name}", put(upload))
}

/// `{"properties":{"certificate":"<PEM>"}}`, as IoT Hub's certificate API takes it.
#[derive(Deserialize)]
struct CertificateBody {
    properties: CertificateProperties,
}

#[derive(Deserialize)]
struct CertificateProperties {
    certificate: String,
}

async fn upload(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    PathId(name): PathId,
    HubJson(body): HubJson<CertificateBody>,
) -> Result<Json<Value>, ApiError> {
    let uploaded = state
        .hub
        .put_certificate(&name, &body.properties.certificate)
        .await?;
    Ok(Json(json!({
        "name": uploaded.name,
        "properties": { "thumbprint": uploaded.thumbprint, "isVerified": true },
    })))
}
