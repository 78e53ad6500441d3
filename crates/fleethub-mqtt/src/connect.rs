//! CONNECT: who the client is (SAS token or X.509 certificate), and its restored session.

use crate::codec::Connect;
use crate::subscriptions::Subscriptions;
use crate::ConnectionInfo;
use chrono::{DateTime, Utc};
use fleethub_hub::{DeviceCredentials, Hub};

/// CONNACK 1: unacceptable protocol version.
pub const CONNACK_BAD_PROTOCOL: u8 = 1;
/// CONNACK 2: identifier rejected.
pub const CONNACK_BAD_IDENTIFIER: u8 = 2;
/// CONNACK 3: server unavailable (the device retries).
pub const CONNACK_UNAVAILABLE: u8 = 3;
/// CONNACK 4: bad user name or password.
pub const CONNACK_BAD_CREDENTIALS: u8 = 4;

/// The parts of an IoT Hub MQTT user name: `{HostName}/{clientId}/?api-version=…&…`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Username {
    /// The `HostName` the device was given.
    pub host_name: String,
    /// The client id repeated in the user name (`device` or `device/module`).
    pub client_id: String,
    /// The query after `?`, percent-decoded (`api-version`, `DeviceClientType`, `model-id`, …).
    pub query: Vec<(String, String)>,
}

/// Parses a user name leniently: missing parts are left empty, nothing is refused.
pub fn parse_username(username: &str) -> Username {
    let (path, query) = username.split_once('?').unwrap_or((username, ""));
    let (host_name, client_id) = path.split_once('/').unwrap_or((path, ""));
    Username {
        host_name: host_name.to_string(),
        client_id: client_id.trim_end_matches('/').to_string(),
        query: crate::properties::decode_properties(query),
    }
}

/// SHA-1 thumbprint of a DER certificate, uppercase hex, as IoT Hub registers them (the hub's
/// one definition, re-exported for the gateway's callers).
pub use fleethub_hub::certificates::thumbprint;

/// What the hub needs to decide on a CONNECT, or the CONNACK code refusing it outright.
pub fn credentials(connect: &Connect, info: &ConnectionInfo) -> Result<DeviceCredentials, u8> {
    if connect.client_id.contains('/') {
        // Module identities (`device/module`) are not served yet.
        return Err(CONNACK_BAD_IDENTIFIER);
    }
    let password = match &connect.password {
        Some(bytes) => {
            Some(String::from_utf8(bytes.to_vec()).map_err(|_| CONNACK_BAD_CREDENTIALS)?)
        }
        None => None,
    };
    Ok(DeviceCredentials {
        client_id: connect.client_id.clone(),
        password,
        client_cert_thumbprint: info.client_cert_chain.first().map(|leaf| thumbprint(leaf)),
        client_cert_chain: info.client_cert_chain.clone(),
    })
}

/// A device the hub let in.
#[derive(Debug)]
pub struct Admitted {
    /// The authenticated device id.
    pub device_id: String,
    /// Whether the session outlives the connection (clean_session=0).
    pub persistent: bool,
    /// Subscriptions restored from the stored session.
    pub subscriptions: Subscriptions,
    /// CONNACK's session-present flag.
    pub session_present: bool,
    /// The session as the store holds it now (None for a clean session or none stored).
    pub stored_session: Option<serde_json::Value>,
    /// When the credential (SAS token or certificate) expires by the hub's clock; the session
    /// closes then.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Authenticates a CONNECT and restores or clears its session; Err is the CONNACK code.
pub async fn admit(hub: &Hub, connect: &Connect, info: &ConnectionInfo) -> Result<Admitted, u8> {
    let creds = credentials(connect, info)?;
    let (device_id, expires_at) = match hub.authenticate_device(&creds).await {
        Ok(a) => (a.device_id.as_str().to_string(), a.expires_at),
        Err(failure) => {
            tracing::warn!(client_id = %connect.client_id, peer = ?info.peer, "CONNECT refused: {failure:?}");
            return Err(failure.connack_code());
        }
    };
    let unavailable = |e: fleethub_core::HubError| {
        tracing::warn!(device = %device_id, "session store unavailable at CONNECT: {e}");
        CONNACK_UNAVAILABLE
    };
    if connect.clean_session {
        hub.delete_session(&connect.client_id)
            .await
            .map_err(unavailable)?;
        return Ok(Admitted {
            device_id,
            persistent: false,
            subscriptions: Subscriptions::default(),
            session_present: false,
            stored_session: None,
            expires_at,
        });
    }
    let stored = hub
        .load_session(&connect.client_id)
        .await
        .map_err(unavailable)?;
    let subscriptions = stored
        .as_ref()
        .map(|s| Subscriptions::from_json(s, &device_id))
        .unwrap_or_default();
    Ok(Admitted {
        device_id,
        persistent: true,
        subscriptions,
        session_present: stored.is_some(),
        stored_session: stored,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn connect(client_id: &str, password: Option<&[u8]>) -> Connect {
        Connect {
            protocol_level: 4,
            clean_session: false,
            keep_alive: 60,
            client_id: client_id.into(),
            username: Some(format!("localhost/{client_id}/?api-version=2019-10-01")),
            password: password.map(Bytes::copy_from_slice),
            will: None,
        }
    }

    #[test]
    fn captured_usernames_parse_leniently() {
        let u = parse_username(
            "localhost/dev1/?api-version=2019-10-01&DeviceClientType=py-azure-iot-device%2F2.14.0",
        );
        assert_eq!(u.host_name, "localhost");
        assert_eq!(u.client_id, "dev1");
        assert_eq!(
            u.query[1],
            (
                "DeviceClientType".into(),
                "py-azure-iot-device/2.14.0".into()
            )
        );
        let m = parse_username("hub.example/dev1/mod1/?api-version=2020-09-30&model-id=dtmi:x;1");
        assert_eq!(m.client_id, "dev1/mod1");
        assert_eq!(
            parse_username("justahost"),
            Username {
                host_name: "justahost".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn thumbprint_is_uppercase_sha1_hex() {
        assert_eq!(
            thumbprint(b"abc"),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
    }

    #[test]
    fn credentials_carry_password_and_leaf_thumbprint() {
        let info = ConnectionInfo {
            peer: None,
            client_cert_chain: vec![b"abc".to_vec(), b"ca".to_vec()],
        };
        let creds =
            credentials(&connect("dev1", Some(b"SharedAccessSignature sr=x")), &info).unwrap();
        assert_eq!(creds.client_id, "dev1");
        assert_eq!(
            creds.password.as_deref(),
            Some("SharedAccessSignature sr=x")
        );
        assert_eq!(
            creds.client_cert_thumbprint.as_deref(),
            Some("A9993E364706816ABA3E25717850C26C9CD0D89D")
        );
        assert_eq!(creds.client_cert_chain.len(), 2);
    }

    #[test]
    fn modules_and_binary_passwords_are_refused_before_the_hub() {
        let info = ConnectionInfo::default();
        assert_eq!(
            credentials(&connect("dev1/mod1", None), &info).unwrap_err(),
            CONNACK_BAD_IDENTIFIER
        );
        assert_eq!(
            credentials(&connect("dev1", Some(&[0xFF, 0xFE])), &info).unwrap_err(),
            CONNACK_BAD_CREDENTIALS
        );
        let no_cert = credentials(&connect("dev1", None), &info).unwrap();
        assert_eq!(
            (no_cert.password, no_cert.client_cert_thumbprint),
            (None, None)
        );
    }
}
