//! Dashboard sessions: a person signs in with a shared access policy's name and key (or a
//! one-time link `serve` prints) and gets a cookie; the REST routes then accept the cookie in
//! place of a SAS token, with the policy's rights.
//!
//! The cookie is stateless: `{policy}.{expiry}.{mac}`, the MAC an HMAC-SHA256 keyed by the
//! policy's key. Nothing is stored, a hub restart keeps people signed in, several hub nodes
//! accept each other's cookies, and regenerating a policy's keys ends its sessions. The CSRF
//! token is a second HMAC of the same session: the page reads it from `GET
//! /dashboard/session` (same origin only) and sends it in `x-fleethub-csrf` with every request
//! that changes something; a cross-site form can send the cookie (SameSite=Strict already
//! stops that in current browsers) but never the header.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_hub::{Hub, Policy, Right};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "fleethub_session";
/// The header that carries the CSRF token on every request that changes something.
pub const CSRF_HEADER: &str = "x-fleethub-csrf";
/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time sign-in link stays usable.
pub const LINK_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A verified session: which policy, until when, and its CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    pub policy: Policy,
    /// Unix seconds.
    pub expires: u64,
    pub csrf: String,
}

/// Why a policy may not use the dashboard at all: it must read the registry.
fn check_can_sign_in(policy: &Policy) -> HubResult<()> {
    if policy.grants(Right::RegistryRead) {
        return Ok(());
    }
    Err(HubError::new(
        ErrorCode::IotHubUnauthorized,
        format!(
            "policy '{}' cannot read the registry, which every dashboard page shows; sign in \
             with a policy that grants RegistryRead (iothubowner, registryRead, registryReadWrite)",
            policy.key_name
        ),
    ))
}

fn mac(key: &str, purpose: &str, name: &str, expires: u64) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(format!("fleethub dashboard {purpose}\n{name}\n{expires}").as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The hub clock's time in Unix seconds.
fn now_unix(hub: &Hub) -> u64 {
    u64::try_from(hub.now().timestamp()).unwrap_or(0)
}

fn bad_session(message: &str) -> HubError {
    HubError::new(
        ErrorCode::IotHubUnauthorized,
        format!("{message}; sign in again at /"),
    )
}

/// Checks a policy name and key a person typed; the key may be either of the policy's keys.
pub fn sign_in(hub: &Hub, name: &str, key: &str) -> HubResult<(String, Session)> {
    let refused = || {
        HubError::new(
            ErrorCode::IotHubUnauthorized,
            "no shared access policy has that name and key; copy both from the connection string \
             (SharedAccessKeyName, SharedAccessKey)",
        )
    };
    let policy = hub.policy(name.trim()).ok_or_else(refused)?;
    let key = key.trim().as_bytes();
    let matches = [&policy.primary_key, &policy.secondary_key]
        .iter()
        .any(|k| k.len() == key.len() && bool::from(k.as_bytes().ct_eq(key)));
    if !matches {
        return Err(refused());
    }
    check_can_sign_in(&policy)?;
    Ok(issue(hub, policy))
}

/// A session for `policy` from now: the cookie value and the session.
pub fn issue(hub: &Hub, policy: Policy) -> (String, Session) {
    let expires = now_unix(hub) + SESSION_LIFETIME.as_secs();
    let key = &policy.primary_key;
    let sig = B64.encode(mac(key, "session", &policy.key_name, expires));
    let cookie = format!("{}.{expires}.{sig}", B64.encode(&policy.key_name));
    let csrf = B64.encode(mac(key, "csrf", &policy.key_name, expires));
    (
        cookie,
        Session {
            policy,
            expires,
            csrf,
        },
    )
}

/// Verifies a cookie value against the hub's policies as they are now.
pub fn verify(hub: &Hub, cookie: &str) -> HubResult<Session> {
    let mut parts = cookie.split('.');
    let (Some(name), Some(expires), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_session("the session cookie is malformed"));
    };
    let name = B64
        .decode(name)
        .ok()
        .and_then(|n| String::from_utf8(n).ok())
        .ok_or_else(|| bad_session("the session cookie is malformed"))?;
    let expires: u64 = expires
        .parse()
        .map_err(|_| bad_session("the session cookie is malformed"))?;
    let sig = B64
        .decode(sig)
        .map_err(|_| bad_session("the session cookie is malformed"))?;
    let policy = hub
        .policy(&name)
        .ok_or_else(|| bad_session(&format!("policy '{name}' no longer exists")))?;
    let key = [&policy.primary_key, &policy.secondary_key]
        .into_iter()
        .find(|key| bool::from(mac(key, "session", &name, expires).ct_eq(&sig)))
        .cloned()
        .ok_or_else(|| bad_session("the session is not valid (the policy's keys changed?)"))?;
    if expires <= now_unix(hub) {
        return Err(bad_session("the session has expired"));
    }
    let csrf = B64.encode(mac(&key, "csrf", &name, expires));
    Ok(Session {
        policy,
        expires,
        csrf,
    })
}

/// Checks the CSRF header of a request that changes something.
pub fn check_csrf(session: &Session, header: Option<&str>) -> HubResult<()> {
    let sent = header.unwrap_or_default().as_bytes();
    let want = session.csrf.as_bytes();
    if sent.len() == want.len() && bool::from(sent.ct_eq(want)) {
        return Ok(());
    }
    Err(HubError::new(
        ErrorCode::IotHubUnauthorized,
        format!(
            "a request that changes something must carry the session's CSRF token in \
             {CSRF_HEADER} (the dashboard sends it; reload the page if it is stale)"
        ),
    ))
}

/// The session cookie's value among a request's `Cookie` headers, if present.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(cookie_value)
}

/// The cookie's value in one `Cookie` header, if present.
fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that starts a session: HttpOnly (scripts cannot read it), Secure
/// (HTTPS only), SameSite=Strict (never sent on a request another site starts).
pub fn set_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        SESSION_LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session in this browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// One-time sign-in links: a random token, good once, for a short while, held by the process
/// that printed it (a link works only against the hub node that made it).
#[derive(Default)]
pub struct SignInLinks {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl SignInLinks {
    /// A new token that signs in as `policy` once, within [`LINK_LIFETIME`].
    pub fn mint(&self, policy: &str) -> String {
        let token = B64.encode(rand::random::<[u8; 32]>());
        let mut tokens = self.tokens.lock();
        tokens.retain(|_, (_, made)| made.elapsed() < LINK_LIFETIME);
        tokens.insert(token.clone(), (policy.to_string(), Instant::now()));
        token
    }

    /// Spends a token: the policy it signs in as, once.
    pub fn redeem(&self, hub: &Hub, token: &str) -> HubResult<(String, Session)> {
        let spent = self.tokens.lock().remove(token.trim());
        let refused = || {
            HubError::new(
                ErrorCode::IotHubUnauthorized,
                "this sign-in link was already used, has expired (links last 15 minutes) or was \
                 made by another hub process; sign in with a policy name and key",
            )
        };
        let (name, made) = spent.ok_or_else(refused)?;
        if made.elapsed() >= LINK_LIFETIME {
            return Err(refused());
        }
        let policy = hub.policy(&name).ok_or_else(refused)?;
        check_can_sign_in(&policy)?;
        Ok(issue(hub, policy))
    }
}
