//! TLS for device connections: trust the hub's CA, offer TLS 1.2 and 1.3.

use super::ClientError;
use std::sync::Arc;

/// A rustls client configuration (ring, TLS 1.2 + 1.3) trusting only the CAs in `ca_pem`.
pub fn tls_config_trusting(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = ca_pem;
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| ClientError::Tls(format!("CA PEM is not readable: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("CA certificate is not usable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Tls(
            "CA PEM holds no '-----BEGIN CERTIFICATE-----' block".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificates_is_refused_with_a_reason() {
        let err = tls_config_trusting(b"hello").unwrap_err();
        assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");
    }
}
