//! rustls configurations: the hub's MQTT and HTTPS listeners, any other server holding a
//! [`ServerCertificate`], and clients that trust a CA PEM.
//!
//! The hub's listeners resume sessions: a device that reconnects (after a network drop, a sleep,
//! or the hub's restart) shows a ticket or session id and skips the certificate signature and its
//! verification. See [`resumption`].

use crate::{load_server_certificate, CertificatePaths, ServerCertificate, TlsError};
use rustls::pki_types::CertificateDer;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ServerSessionMemoryCache;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use std::sync::Arc;

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Sessions a listener remembers by id, for TLS 1.2 clients that do not take tickets. Tickets
/// (TLS 1.3, and TLS 1.2 clients that offer the extension) cost the hub no memory, so this only
/// bounds the fallback: an entry is a few hundred bytes (more with a client certificate), and
/// the oldest is forgotten first, which costs that client one full handshake.
pub const SESSION_CACHE_ENTRIES: usize = 16_384;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Turns on session resumption for one listener: stateless tickets and a session-id cache of
/// [`SESSION_CACHE_ENTRIES`]. The ticket keys live in `<ticket_keys_dir>/<listener>-ticket-keys`
/// and rotate every 6 hours ([`crate::tickets`]), so a device resumes across a hub restart; with
/// no directory they are rustls' in-memory keys. Each listener has its own keys and cache: a
/// session from the HTTPS listener, which asks for no client certificate, must never resume on
/// the MQTT listener, which reads the device's certificate from the session.
fn resumption(
    cfg: &mut ServerConfig,
    paths: &CertificatePaths,
    listener: &str,
) -> Result<(), TlsError> {
    cfg.ticketer = match &paths.ticket_keys_dir {
        Some(dir) => {
            crate::tickets::PersistentTicketer::open(&dir.join(format!("{listener}-ticket-keys")))?
        }
        None => rustls::crypto::ring::Ticketer::new()?,
    };
    cfg.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(())
}

/// TLS for MQTT: TLS 1.2 and 1.3, asking for (never requiring) a client certificate, which the
/// hub checks against the registry after the handshake, and resuming sessions (a resumed
/// session carries the certificate the device proved it held when the session began).
pub fn mqtt_server_config(paths: &CertificatePaths) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = load_server_certificate(paths)?;
    let verifier = Arc::new(AnyClientCertificate {
        provider: provider(),
    });
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    resumption(&mut cfg, paths, "mqtt")?;
    Ok(Arc::new(cfg))
}

/// TLS for HTTPS (REST, WebSocket, metrics): TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1, resuming
/// sessions.
pub fn https_server_config(paths: &CertificatePaths) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = load_server_certificate(paths)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    resumption(&mut cfg, paths, "https")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// TLS 1.2 and 1.3 for a server holding `cert`, offering the `alpn` protocols in order.
pub fn server_config(
    cert: &ServerCertificate,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key())?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A client configuration (TLS 1.2 and 1.3) trusting only the CAs in `ca_pem`.
pub fn client_config_trusting(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &*ca_pem) {
        roots
            .add(cert.map_err(TlsError::CaPem)?)
            .map_err(TlsError::CaCertificate)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCaCertificate);
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Accepts any client certificate whose handshake signature is valid: devices use self-signed
/// certificates, so trust is decided by thumbprint or CA chain in the hub, not here.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificates_is_refused_with_a_reason() {
        let err = client_config_trusting(b"hello").unwrap_err();
        assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");
    }

    #[test]
    fn a_server_config_offers_the_alpn_it_was_given() {
        let ca = crate::LocalCa::generate("test CA").unwrap();
        let cert = ca.issue_server("localhost", &["localhost".into()]).unwrap();
        let cfg = server_config(&cert, &[b"http/1.1"]).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(client_config_trusting(ca.cert_pem().as_bytes()).is_ok());
    }
}
