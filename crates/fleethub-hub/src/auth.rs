//! Who may do what: shared access policies for services, and device credentials at CONNECT.

use crate::device::{AuthenticationType, DeviceStatus};
use crate::Hub;
use chrono::{DateTime, Utc};
use fleethub_core::sas::{self, SasToken};
use fleethub_core::{DeviceId, ErrorCode, HubError, HubResult};
use serde::{Deserialize, Serialize};

/// A permission a shared access policy grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Right {
    RegistryRead,
    RegistryWrite,
    ServiceConnect,
    DeviceConnect,
}

/// A shared access policy: a named pair of keys and the rights they carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub key_name: String,
    pub primary_key: String,
    pub secondary_key: String,
    pub rights: Vec<Right>,
}

impl Policy {
    /// The policies a new hub starts with, as IoT Hub creates them.
    pub fn defaults() -> Vec<Policy> {
        use Right::*;
        let make = |name: &str, rights: Vec<Right>| Policy {
            key_name: name.to_string(),
            primary_key: sas::generate_key(),
            secondary_key: sas::generate_key(),
            rights,
        };
        vec![
            make(
                "iothubowner",
                vec![RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect],
            ),
            make("service", vec![ServiceConnect]),
            make("device", vec![DeviceConnect]),
            make("registryRead", vec![RegistryRead]),
            make("registryReadWrite", vec![RegistryRead, RegistryWrite]),
        ]
    }

    /// Whether the policy grants `right` (write implies read).
    pub fn grants(&self, right: Right) -> bool {
        self.rights.contains(&right)
            || (right == Right::RegistryRead && self.rights.contains(&Right::RegistryWrite))
    }

    fn verifies(&self, token: &SasToken) -> bool {
        token.verify(&self.primary_key) || token.verify(&self.secondary_key)
    }
}

/// What a device presented at CONNECT.
#[derive(Debug, Clone, Default)]
pub struct DeviceCredentials {
    /// MQTT client id: the device id (a module's `device/module` is refused for now).
    pub client_id: String,
    /// The SAS token from the MQTT password, if any.
    pub password: Option<String>,
    /// SHA-1 thumbprint (uppercase hex) of the client certificate, if TLS presented one.
    pub client_cert_thumbprint: Option<String>,
    /// The client's certificate chain as DER, leaf first.
    pub client_cert_chain: Vec<Vec<u8>>,
}

/// Why a CONNECT was refused; the gateway maps it to the CONNACK code IoT Hub uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// CONNACK 2: the client id is not a valid device id.
    IdentifierRejected(String),
    /// CONNACK 4: bad or expired token, wrong certificate.
    BadCredentials(String),
    /// CONNACK 5: unknown or disabled device, or credentials of the wrong kind.
    NotAuthorized(String),
    /// CONNACK 3: the hub cannot check right now (store unavailable); the device retries.
    Unavailable(String),
}

impl AuthFailure {
    /// The MQTT 3.1.1 CONNACK return code.
    pub fn connack_code(&self) -> u8 {
        match self {
            AuthFailure::IdentifierRejected(_) => 2,
            AuthFailure::Unavailable(_) => 3,
            AuthFailure::BadCredentials(_) => 4,
            AuthFailure::NotAuthorized(_) => 5,
        }
    }
}

/// A device the hub let in, and until when the credential it presented is good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The device id, exactly as registered (ids are case-sensitive).
    pub device_id: DeviceId,
    /// The SAS token's `se`, or the certificate's notAfter, by the hub's clock: the gateway
    /// closes the connection then, as IoT Hub does. None when the credential carries no expiry
    /// the hub can read.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Whether a device token's resource, `{host}/devices/{id}` (URL-decoded), names exactly this
/// device: ids are case-sensitive, as in IoT Hub. The host part is not compared.
fn token_names_device(token: &SasToken, device_id: &str) -> bool {
    token
        .host_and_path()
        .1
        .strip_prefix("/devices/")
        .is_some_and(|id| id == device_id)
}

impl Hub {
    /// Checks an `Authorization` header for a service call to `request_path` (as in the request
    /// line, percent-encoded) needing `right`; `None` accepts any policy's valid token.
    pub fn authorize_service(
        &self,
        authorization: Option<&str>,
        right: Option<Right>,
        request_path: &str,
    ) -> HubResult<Policy> {
        let header = authorization.ok_or_else(|| {
            HubError::new(
                ErrorCode::IotHubUnauthorizedAccess,
                "missing Authorization header; send 'SharedAccessSignature sr=…&sig=…&se=…&skn=…'",
            )
        })?;
        let token = sas::parse(header)?;
        let name = token.key_name.clone().ok_or_else(|| {
            HubError::new(
                ErrorCode::IotHubUnauthorizedAccess,
                "service token has no skn (policy name)",
            )
        })?;
        let policy = self.policy(&name).ok_or_else(|| {
            HubError::new(
                ErrorCode::IotHubUnauthorized,
                format!("no shared access policy named '{name}'"),
            )
        })?;
        if !policy.verifies(&token) {
            return Err(HubError::new(
                ErrorCode::IotHubUnauthorized,
                format!("token signature does not match policy '{name}'"),
            ));
        }
        if token.is_expired(self.now_unix()) {
            return Err(HubError::new(
                ErrorCode::IotHubUnauthorized,
                "token has expired (se is in the past)",
            ));
        }
        self.check_token_scope(&token, request_path)?;
        if let Some(right) = right.filter(|&r| !policy.grants(r)) {
            return Err(HubError::new(
                ErrorCode::IotHubUnauthorized,
                format!("policy '{name}' does not grant {right:?}"),
            ));
        }
        Ok(policy)
    }

    /// A service token's `sr` must name this hub and a resource prefix of the request path.
    fn check_token_scope(&self, token: &SasToken, request_path: &str) -> HubResult<()> {
        let config = &self.inner.config;
        let names = std::iter::once(&config.host_name).chain(&config.host_aliases);
        if !token.names_host(names.clone().map(String::as_str)) {
            let known: Vec<&str> = names.map(String::as_str).collect();
            return Err(HubError::new(
                ErrorCode::IotHubUnauthorized,
                format!(
                    "token resource sr='{}' names another hub; this hub answers to {}",
                    token.resource,
                    known.join(", ")
                ),
            ));
        }
        if !token.covers_path(request_path) {
            return Err(HubError::new(
                ErrorCode::IotHubUnauthorized,
                format!(
                    "token resource sr='{}' is scoped to '{}', which does not cover '{request_path}'",
                    token.resource,
                    token.host_and_path().1
                ),
            ));
        }
        Ok(())
    }

    /// Decides whether a device may connect, as which device, and until when.
    pub async fn authenticate_device(
        &self,
        creds: &DeviceCredentials,
    ) -> Result<Authenticated, AuthFailure> {
        let id = DeviceId::parse(&creds.client_id)
            .map_err(|e| AuthFailure::IdentifierRejected(e.message))?;
        let device = match self.load_device(id.as_str()).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                return Err(AuthFailure::NotAuthorized(format!(
                    "device '{id}' is not registered"
                )))
            }
            Err(e) => return Err(AuthFailure::Unavailable(e.message)),
        };
        if device.status == DeviceStatus::Disabled {
            return Err(AuthFailure::NotAuthorized(format!(
                "device '{id}' is disabled"
            )));
        }
        let expires_at = match &creds.password {
            Some(password) if !password.is_empty() => self.check_device_token(&device, password)?,
            _ => self.check_device_certificate(&device, creds)?,
        };
        Ok(Authenticated {
            device_id: id,
            expires_at,
        })
    }

    /// Ok is the token's expiry.
    fn check_device_token(
        &self,
        device: &crate::Device,
        password: &str,
    ) -> Result<Option<DateTime<Utc>>, AuthFailure> {
        let bad = |m: String| AuthFailure::BadCredentials(m);
        let token = sas::parse(password).map_err(|e| bad(e.message))?;
        if !token_names_device(&token, &device.device_id) {
            return Err(bad(format!(
                "token resource '{}' does not name device '{}'",
                token.resource, device.device_id
            )));
        }
        if token.is_expired(self.now_unix()) {
            return Err(bad("token has expired".into()));
        }
        let ok = match &token.key_name {
            Some(name) => self
                .policy(name)
                .is_some_and(|p| p.grants(Right::DeviceConnect) && p.verifies(&token)),
            None => {
                let keys = &device.authentication.symmetric_key;
                device.authentication.kind == AuthenticationType::Sas
                    && [&keys.primary_key, &keys.secondary_key]
                        .into_iter()
                        .flatten()
                        .any(|k| token.verify(k))
            }
        };
        if ok {
            Ok(DateTime::from_timestamp(
                i64::try_from(token.expiry).unwrap_or(i64::MAX),
                0,
            ))
        } else {
            Err(bad(format!(
                "token signature does not match the keys of device '{}'",
                device.device_id
            )))
        }
    }

    /// Ok is the certificate's notAfter, when it can be read.
    fn check_device_certificate(
        &self,
        device: &crate::Device,
        creds: &DeviceCredentials,
    ) -> Result<Option<DateTime<Utc>>, AuthFailure> {
        let auth = &device.authentication;
        match auth.kind {
            AuthenticationType::SelfSigned => {
                let presented = creds.client_cert_thumbprint.as_deref().ok_or_else(|| {
                    AuthFailure::BadCredentials(
                        "device uses X.509 but presented no client certificate".into(),
                    )
                })?;
                let t = &auth.x509_thumbprint;
                let matches = [&t.primary_thumbprint, &t.secondary_thumbprint]
                    .into_iter()
                    .flatten()
                    .any(|want| want.eq_ignore_ascii_case(presented));
                if !matches {
                    return Err(AuthFailure::BadCredentials(format!(
                        "certificate thumbprint {presented} is not registered"
                    )));
                }
                // The thumbprint pins the certificate; its validity period still holds.
                let not_after = creds
                    .client_cert_chain
                    .first()
                    .and_then(|leaf| crate::certificates::not_after(leaf));
                if let Some(t) = not_after.filter(|t| *t <= self.inner.clock.now()) {
                    return Err(AuthFailure::BadCredentials(format!(
                        "client certificate expired at {}",
                        fleethub_core::time::format_timestamp(t)
                    )));
                }
                Ok(not_after)
            }
            AuthenticationType::CertificateAuthority => self
                .verify_device_chain(&creds.client_cert_chain, &device.device_id)
                .map(Some)
                .map_err(AuthFailure::BadCredentials),
            _ => Err(AuthFailure::NotAuthorized(format!(
                "device '{}' uses SAS keys; send a SharedAccessSignature as the MQTT password",
                device.device_id
            ))),
        }
    }
}
