//! Issuing certificates: a local CA and ECDSA P-256 server certificates signed by it.

use crate::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority generated here, whose key signs server certificates.
pub struct LocalCa {
    key: KeyPair,
    params: CertificateParams,
    cert: rcgen::Certificate,
}

/// A server certificate with the chain clients need (server, then the CA) and its private key.
pub struct ServerCertificate {
    /// DER, server first, then the CA: clients that trust only the CA can build the path.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key, PKCS#8 DER.
    key_der: Vec<u8>,
    /// The chain as PEM, in the same order.
    pub chain_pem: String,
    /// The private key as PEM.
    pub key_pem: String,
}

impl ServerCertificate {
    /// The private key, for a rustls configuration.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl LocalCa {
    /// A new CA (ECDSA P-256) named `common_name`, allowed to sign certificates and CRLs.
    pub fn generate(common_name: &str) -> Result<LocalCa, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "FleetHub");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(LocalCa { key, params, cert })
    }

    /// The CA certificate as PEM, for clients to trust.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's private key as PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A server certificate (ECDSA P-256, serverAuth) for `names` (DNS names or IP addresses),
    /// with `common_name` as its subject, signed by this CA.
    pub fn issue_server(
        &self,
        common_name: &str,
        names: &[String],
    ) -> Result<ServerCertificate, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(ServerCertificate {
            chain: vec![cert.der().clone(), self.cert.der().clone()],
            key_der: key.serialize_der(),
            chain_pem: format!("{}{}", cert.pem(), self.cert.pem()),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn a_server_certificate_carries_its_names_and_chains_to_its_ca() {
        let ca = LocalCa::generate("test CA").unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let server = ca.issue_server("localhost", &names).unwrap();
        assert_eq!(server.chain.len(), 2);
        assert_eq!(server.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(server.chain_pem.ends_with(&ca.cert_pem()));
        assert!(server.key_pem.contains("PRIVATE KEY"));
        // The issued chain verifies against the CA as its only root, for both names.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let verify = |name: &'static str| {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            let now = rustls::pki_types::UnixTime::now();
            verifier.verify_server_cert(&server.chain[0], &server.chain[1..], &name, &[], now)
        };
        assert!(verify("localhost").is_ok());
        assert!(verify("127.0.0.1").is_ok());
        assert!(verify("example.com").is_err());
    }
}
