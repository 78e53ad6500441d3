//! The web dashboard: a page and its script and stylesheet, embedded in the binary and served
//! at `/`, plus the few routes only the dashboard needs (sign-in, the overview's figures). Every
//! other thing the page shows or changes goes through the REST routes, signed in by the session
//! cookie with the policy's rights (`crate::auth`), so the server, not the page, decides what a
//! read-only policy may do.

mod overview;
pub mod session;

use crate::extract::HubJson;
use crate::{ApiError, ApiState};
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleethub_core::{ErrorCode, HubError};
use fleethub_hub::Right;
use serde::Deserialize;
use serde_json::{json, Value};
use session::{Session, SignInLinks};

/// The dashboard's state: one-time sign-in links and the overview's short-lived cache.
#[derive(Default)]
pub struct Dashboard {
    links: SignInLinks,
    overview: overview::Cache,
}

impl Dashboard {
    /// A one-time token that signs in as `policy` (open `/#signin=<token>`); `serve` prints one.
    pub fn sign_in_token(&self, policy: &str) -> String {
        self.links.mint(policy)
    }
}

/// The dashboard's routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(stylesheet))
        .route(
            "/dashboard/session",
            get(current_session).post(start_session).delete(end_session),
        )
        .route("/dashboard/overview", get(overview::overview))
}

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLESHEET: &str = include_str!("assets/app.css");

/// Only this origin's scripts, styles and connections; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (CONTENT_TYPE, content_type),
        // Assets change with the binary; revalidating is cheap and never serves a stale script.
        (CACHE_CONTROL, "no-cache"),
        (HeaderName::from_static("content-security-policy"), CSP),
        (HeaderName::from_static("x-content-type-options"), "nosniff"),
        (HeaderName::from_static("referrer-policy"), "no-referrer"),
        (HeaderName::from_static("x-frame-options"), "DENY"),
    ];
    (headers, body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

/// What the page knows of its session: who, until when, what it may do, and the CSRF token.
fn session_body(session: &Session) -> Value {
    let policy = &session.policy;
    json!({
        "policy": policy.key_name,
        "expires": session.expires,
        "csrfToken": session.csrf,
        "rights": {
            "registryRead": policy.grants(Right::RegistryRead),
            "registryWrite": policy.grants(Right::RegistryWrite),
            "serviceConnect": policy.grants(Right::ServiceConnect),
        },
    })
}

fn no_session() -> ApiError {
    ApiError(HubError::new(
        ErrorCode::IotHubUnauthorizedAccess,
        "not signed in: sign in with a shared access policy's name and key",
    ))
}

async fn current_session(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let cookie = session::from_headers(&headers).ok_or_else(no_session)?;
    let session = session::verify(&state.hub, cookie)?;
    Ok(Json(session_body(&session)))
}

/// A sign-in: a policy's name and key, or a one-time link's token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    policy: Option<String>,
    key: Option<String>,
    link: Option<String>,
}

async fn start_session(
    State(state): State<ApiState>,
    headers: HeaderMap,
    HubJson(request): HubJson<SignIn>,
) -> Result<Response, ApiError> {
    // A form on another site cannot send this content type without the browser asking first,
    // so nobody can sign a visitor in under a policy of theirs.
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError(HubError::invalid(
            "sign in with a JSON body (Content-Type: application/json)",
        )));
    }
    let (cookie, session) = match (request.policy, request.key, request.link) {
        (Some(policy), Some(key), None) => session::sign_in(&state.hub, &policy, &key)?,
        (None, None, Some(link)) => state.dashboard.links.redeem(&state.hub, &link)?,
        _ => {
            return Err(ApiError(HubError::invalid(
                "send {\"policy\": name, \"key\": key} or {\"link\": token}",
            )))
        }
    };
    let mut response = Json(session_body(&session)).into_response();
    if let Ok(value) = HeaderValue::from_str(&session::set_cookie(&cookie)) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    Ok(response)
}

async fn end_session() -> Response {
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&session::clear_cookie()) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}
