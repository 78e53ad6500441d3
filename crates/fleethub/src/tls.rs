//! TLS: the hub's own CA and server certificate (generated on first start, or supplied), and the
//! rustls configurations for the MQTT and HTTPS listeners.

use anyhow::{anyhow, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the hub's certificate files live.
#[derive(Debug, Clone)]
pub struct CertificatePaths {
    /// The CA that devices and services trust (absent when the operator supplied a certificate).
    pub ca: Option<PathBuf>,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Uses the supplied certificate, or generates (once) a CA and an ECDSA P-256 server
/// certificate in `<data_dir>/tls` with SANs localhost, 127.0.0.1, `host_name` and the machine's
/// host name.
pub fn ensure_certificates(
    data_dir: &Path,
    host_name: &str,
    supplied: Option<(PathBuf, PathBuf)>,
) -> Result<CertificatePaths> {
    if let Some((cert, key)) = supplied {
        return Ok(CertificatePaths {
            ca: None,
            server_cert: cert,
            server_key: key,
        });
    }
    let dir = data_dir.join("tls");
    let paths = CertificatePaths {
        ca: Some(dir.join("ca.pem")),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    if paths.server_cert.exists() && paths.server_key.exists() && dir.join("ca.pem").exists() {
        return Ok(paths);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    generate(&dir, host_name)?;
    Ok(paths)
}

fn generate(dir: &Path, host_name: &str) -> Result<()> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "FleetHub local CA");
    ca.distinguished_name
        .push(DnType::OrganizationName, "FleetHub");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let machine = hostname::get().ok().and_then(|h| h.into_string().ok());
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for name in std::iter::once(host_name.to_string()).chain(machine) {
        if !name.is_empty() && !sans.contains(&name) {
            sans.push(name);
        }
    }
    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut server = CertificateParams::new(sans)?;
    server
        .distinguished_name
        .push(DnType::CommonName, host_name);
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    write_private(&dir.join("server.key"), &server_key.serialize_pem())?;
    // The chain (server then CA) so clients that trust only the CA can build the path.
    std::fs::write(
        dir.join("server.pem"),
        format!("{}{}", server_cert.pem(), ca_cert.pem()),
    )?;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)?.write_all(text.as_bytes())?;
    Ok(())
}

fn load(
    paths: &CertificatePaths,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let certs = rustls_pemfile::certs(&mut read(&paths.server_cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", paths.server_cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "{} holds no certificate",
            paths.server_cert.display()
        ));
    }
    let key = rustls_pemfile::private_key(&mut read(&paths.server_key)?.as_slice())?
        .ok_or_else(|| anyhow!("{} holds no private key", paths.server_key.display()))?;
    Ok((certs, key))
}

/// Every name the server certificate is valid for (its subject alternative names): the names
/// clients can reach the hub by, so the names service tokens may carry.
pub fn server_names(paths: &CertificatePaths) -> Result<Vec<String>> {
    let (certs, _) = load(paths)?;
    Ok(fleethub_hub::certificates::subject_alt_names(&certs[0]))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS for MQTT: TLS 1.2 and 1.3, asking for (never requiring) a client certificate, which the
/// hub checks against the registry after the handshake.
pub fn mqtt_server_config(paths: &CertificatePaths) -> Result<Arc<ServerConfig>> {
    let (certs, key) = load(paths)?;
    let verifier = Arc::new(AnyClientCertificate {
        provider: provider(),
    });
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

/// TLS for HTTPS (REST, WebSocket, metrics): TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1.
pub fn https_server_config(paths: &CertificatePaths) -> Result<Arc<ServerConfig>> {
    let (certs, key) = load(paths)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
