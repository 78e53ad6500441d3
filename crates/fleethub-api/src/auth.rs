//! Service authorization: each route names the right it needs in its signature
//! (`Authorized<RegistryWrite>`), and the extractor checks the `Authorization` SAS token against
//! the hub's shared access policies before the body is read. A request without `Authorization`
//! may carry the dashboard's session cookie instead (`crate::dashboard::session`): the same
//! policy rights apply, and a request that changes something must also carry the session's CSRF
//! token.

use crate::dashboard::session;
use crate::{ApiError, ApiState};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use fleethub_core::{ErrorCode, HubError};
use fleethub_hub::Right;
use std::marker::PhantomData;

/// A right a route requires, as a type.
pub trait Requires {
    /// The policy right checked; `None`: any policy's valid credential will do.
    const RIGHT: Option<Right>;
}

/// Reading the registry: devices, twins, statistics.
pub struct RegistryRead;
/// Changing the registry: creating, updating and deleting devices; certificates.
pub struct RegistryWrite;
/// Service-facing device traffic: twin writes, direct methods, messages, telemetry.
pub struct ServiceConnect;
/// Any valid credential, whatever its rights: the API's own description.
pub struct AnyRight;

impl Requires for RegistryRead {
    const RIGHT: Option<Right> = Some(Right::RegistryRead);
}
impl Requires for RegistryWrite {
    const RIGHT: Option<Right> = Some(Right::RegistryWrite);
}
impl Requires for ServiceConnect {
    const RIGHT: Option<Right> = Some(Right::ServiceConnect);
}
impl Requires for AnyRight {
    const RIGHT: Option<Right> = None;
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
        if header.is_none() {
            if let Some(cookie) = session::from_headers(&parts.headers) {
                return authorize_session(parts, state, cookie, R::RIGHT);
            }
        }
        state
            .hub
            .authorize_service(header, R::RIGHT, parts.uri.path())?;
        Ok(Authorized(PhantomData))
    }
}

/// A request signed in through the dashboard: a valid session whose policy grants `right`,
/// and for anything but a read, the session's CSRF token.
fn authorize_session<R>(
    parts: &Parts,
    state: &ApiState,
    cookie: &str,
    right: Option<Right>,
) -> Result<Authorized<R>, ApiError> {
    let session = session::verify(&state.hub, cookie)?;
    if !parts.method.is_safe() {
        let sent = parts
            .headers
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok());
        session::check_csrf(&session, sent)?;
    }
    if let Some(right) = right.filter(|&r| !session.policy.grants(r)) {
        return Err(ApiError(HubError::new(
            ErrorCode::IotHubUnauthorized,
            format!(
                "policy '{}' does not grant {right:?}; sign in with a policy that does",
                session.policy.key_name
            ),
        )));
    }
    Ok(Authorized(PhantomData))
}
