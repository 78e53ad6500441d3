//! What can go wrong for a device client.

use std::io;

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made or broke.
    #[error("connection to {addr} failed: {source}")]
    Connect {
        /// The address dialled, `host:port`.
        addr: String,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// TLS could not be set up: bad CA PEM, bad server name, or a failed handshake.
    #[error("TLS: {0}")]
    Tls(String),
    /// The device's key could not sign a SAS token (not valid base64).
    #[error("cannot sign a SAS token: {0}")]
    Sas(#[from] fleethub_core::HubError),
    /// The hub answered CONNECT with a non-zero CONNACK return code (4/5: bad credentials).
    #[error("hub refused the connection with CONNACK code {0}")]
    Refused(u8),
    /// The hub sent something an IoT Hub never sends at that point.
    #[error("protocol violation by the hub: {0}")]
    Protocol(String),
    /// The hub did not answer in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
    /// The connection is closed; every request in flight fails with the reason.
    #[error("connection closed: {0}")]
    Closed(String),
    /// All 65,535 packet identifiers are waiting for acknowledgements.
    #[error("65,535 packets are already awaiting acknowledgement")]
    TooManyInFlight,
    /// A twin request was answered with a status outside 2xx.
    #[error("hub answered the twin request with status {status}: {body}")]
    Status {
        /// The status in the `$iothub/twin/res/{status}` topic.
        status: u16,
        /// The response body, as text.
        body: String,
    },
}
