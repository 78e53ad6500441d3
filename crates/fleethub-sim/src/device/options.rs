//! How a device connects: where to, as whom, over what.

use std::net::IpAddr;
use std::sync::Arc;

/// The api-version the client announces in its MQTT user name.
pub const API_VERSION: &str = "2021-04-12";

/// How long a generated SAS token stays valid.
pub const TOKEN_LIFETIME_SECS: u64 = 3600;

/// How a device proves who it is.
#[derive(Clone)]
pub enum DeviceAuth {
    /// The device's base64 symmetric key; a one-hour SAS token is signed from it at connect.
    SasKey(String),
    /// A ready-made `SharedAccessSignature sr=…&sig=…&se=…` token, sent as is.
    SasToken(String),
}

impl std::fmt::Debug for DeviceAuth {
    // Never print secrets into logs or test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceAuth::SasKey(_) => f.write_str("SasKey(…)"),
            DeviceAuth::SasToken(_) => f.write_str("SasToken(…)"),
        }
    }
}

/// Everything [`DeviceClient::connect`](super::DeviceClient::connect) needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// TCP host to dial (e.g. "127.0.0.1"); also the name the server certificate must match.
    pub host: String,
    /// TCP port (8883 for MQTT over TLS).
    pub port: u16,
    /// The hub's HostName, used in the user name and the token's `sr` (e.g. "localhost").
    pub hub_host_name: String,
    /// The device id; also the MQTT client id.
    pub device_id: String,
    /// Credentials.
    pub auth: DeviceAuth,
    /// TLS settings; `None` connects over plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether the hub must drop the stored session (the SDK sends false).
    pub clean_session: bool,
    /// Keepalive in seconds: a PINGREQ is sent this often; 0 disables it.
    pub keep_alive_secs: u16,
    /// Source address to bind, to spread many connections over 127.0.0.0/8.
    pub local_addr: Option<IpAddr>,
    /// How long a token signed from a key at connect is valid.
    pub sas_lifetime_secs: u64,
}

impl ConnectOptions {
    /// Options with the SDK's defaults: no TLS, persistent session, 60 s keepalive, any source.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        hub_host_name: impl Into<String>,
        device_id: impl Into<String>,
        auth: DeviceAuth,
    ) -> Self {
        ConnectOptions {
            host: host.into(),
            port,
            hub_host_name: hub_host_name.into(),
            device_id: device_id.into(),
            auth,
            tls: None,
            clean_session: false,
            keep_alive_secs: 60,
            local_addr: None,
            sas_lifetime_secs: TOKEN_LIFETIME_SECS,
        }
    }

    /// The MQTT user name: `{HostName}/{deviceId}/?api-version=…`.
    pub fn username(&self) -> String {
        format!(
            "{}/{}/?api-version={API_VERSION}",
            self.hub_host_name, self.device_id
        )
    }

    /// The MQTT password: the given token, or one signed from the key valid until `expiry`.
    pub fn password(&self, expiry_unix: u64) -> Result<String, fleethub_core::HubError> {
        match &self.auth {
            DeviceAuth::SasToken(token) => Ok(token.clone()),
            DeviceAuth::SasKey(key) => {
                let resource = format!("{}/devices/{}", self.hub_host_name, self.device_id);
                fleethub_core::sas::generate_token(&resource, key, None, expiry_unix)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_and_password_follow_the_sdk() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let opts = ConnectOptions::new(
            "127.0.0.1",
            8883,
            "localhost",
            "dev1",
            DeviceAuth::SasKey(key.into()),
        );
        assert_eq!(opts.username(), "localhost/dev1/?api-version=2021-04-12");
        // The same token fleethub-core's tests check against Python's signing.
        assert_eq!(
            opts.password(1795421580).unwrap(),
            "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1\
             &sig=8CIFtA%2Fne5O6tcmGR9laoqnhr%2F43OQPSfy8hIMomssc%3D&se=1795421580"
        );
    }

    #[test]
    fn a_ready_token_is_sent_as_is_and_keys_never_print() {
        let opts = ConnectOptions::new("h", 1, "hub", "d", DeviceAuth::SasToken("tok".into()));
        assert_eq!(opts.password(0).unwrap(), "tok");
        assert!(!format!("{opts:?}").contains("tok"));
        let bad = ConnectOptions::new("h", 1, "hub", "d", DeviceAuth::SasKey("not base64!".into()));
        assert!(bad.password(0).is_err());
    }
}
