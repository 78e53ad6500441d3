//! Service authorization: each route names the right it needs in its signature
//! (`Authorized<RegistryWrite>`), and the extractor checks the `Authorization` SAS token against
//! the hub's shared access policies before the body is read.

use crate::{ApiError, ApiState};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use fleethub_core::{ErrorCode, HubError};
use fleethub_hub::Right;
use std::marker::PhantomData;

/// A right a route requires, as a type.
pub trait Requires {
    /// The policy right checked.
    const RIGHT: Right;
}

/// Reading the registry: devices, twins, statistics.
pub struct RegistryRead;
/// Changing the registry: creating, updating and deleting devices; certificates.
pub struct RegistryWrite;
/// Service-facing device traffic: twin writes, direct methods, messages, telemetry.
pub struct ServiceConnect;

impl Requires for RegistryRead {
    const RIGHT: Right = Right::RegistryRead;
}
impl Requires for RegistryWrite {
    const RIGHT: Right = Right::RegistryWrite;
}
impl Requires for ServiceConnect {
    const RIGHT: Right = Right::ServiceConnect;
}

/// Proof that the request carries a valid token whose policy grants `R`.
pub struct Authorized<R>(PhantomData<R>);

impl<R: Requires> FromRequestParts<ApiState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .map(|v| {
                v.to_str().map_err(|_| {
                    HubError::new(
                        ErrorCode::IotHubUnauthorizedAccess,
                        "Authorization header is not ASCII text",
                    )
                })
            })
            .transpose()?;
        state
            .hub
            .authorize_service(header, R::RIGHT, parts.uri.path())?;
        Ok(Authorized(PhantomData))
    }
}
