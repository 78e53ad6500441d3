//! TLS for device connections: trust the hub's CA, offer TLS 1.2 and 1.3.

use super::ClientError;
use std::sync::Arc;

/// A rustls client configuration (ring, TLS 1.2 + 1.3) trusting only the CAs in `ca_pem`.
pub fn tls_config_trusting(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    fleethub_tls::client_config_trusting(ca_pem).map_err(|e| ClientError::Tls(e.to_string()))
}
