//! X.509 checks for devices: thumbprints, uploaded CA certificates, and chains to them.
//!
//! Chains are validated by rustls' webpki path builder, never by hand: it checks that every
//! issuer may sign certificates (basicConstraints CA, keyCertSign), every signature, every
//! certificate's validity period at the time the hub's `Clock` gives, and the leaf's extended key
//! usage (clientAuth when the leaf lists any usage, as RFC 5280 4.2.1.12 has it). The hub adds
//! what webpki leaves to its caller: the uploaded CAs' own validity and the leaf's CN, which must
//! be the device id (as IoT Hub requires).

use chrono::{DateTime, Utc};
use fleethub_core::{HubError, HubResult};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha1::{Digest, Sha1};
use x509_parser::prelude::*;

/// A CA certificate the hub accepted (it is verified: it parsed and is a CA), by name and
/// SHA-1 thumbprint.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedCertificate {
    pub name: String,
    pub thumbprint: String,
}

/// SHA-1 thumbprint of a DER certificate, uppercase hex, as IoT Hub shows it.
pub fn thumbprint(der: &[u8]) -> String {
    hex::encode_upper(Sha1::digest(der))
}

/// Decodes the first certificate in a PEM text that is to become a CA devices may chain to:
/// it must parse, be allowed to sign certificates and be usable as a webpki trust anchor.
pub fn ca_pem_to_der(pem: &str) -> HubResult<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| HubError::invalid(format!("certificate is not PEM: {e}")))?;
    let cert = block
        .parse_x509()
        .map_err(|e| HubError::invalid(format!("certificate does not parse as X.509: {e}")))?;
    if !is_ca(&cert) {
        return Err(HubError::invalid(format!(
            "certificate '{}' may not sign certificates: a CA needs basicConstraints cA=TRUE and, \
             when it has a keyUsage extension, keyCertSign",
            cert.subject()
        )));
    }
    let der = CertificateDer::from(block.contents.as_slice());
    webpki::anchor_from_trusted_cert(&der).map_err(|e| {
        HubError::invalid(format!("certificate cannot serve as a trust anchor: {e:?}"))
    })?;
    Ok(block.contents)
}

/// Whether a certificate may sign others: basicConstraints cA, and keyCertSign when it lists
/// key usages (webpki checks the first for intermediates but ignores keyUsage).
fn is_ca(cert: &X509Certificate<'_>) -> bool {
    let ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    ca && may_sign_certificates(cert)
}

/// False only when a keyUsage extension is present without keyCertSign (RFC 5280 4.2.1.3).
fn may_sign_certificates(cert: &X509Certificate<'_>) -> bool {
    match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// The DNS names and IP addresses a certificate's subject alternative names list (`*.` wildcards
/// kept), e.g. to know every name a server certificate lets clients use.
pub fn subject_alt_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => ip_text(bytes),
            _ => None,
        })
        .collect()
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    })
}

/// The leaf's notAfter, when the leaf parses as X.509.
pub fn not_after(der: &[u8]) -> Option<DateTime<Utc>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

/// Whether `now` lies inside the certificate's validity period.
fn valid_at(cert: &X509Certificate<'_>, now: DateTime<Utc>) -> bool {
    ASN1Time::from_timestamp(now.timestamp()).is_ok_and(|t| cert.validity().is_valid_at(t))
}

/// Validates a device's certificate chain (`chain`: leaf first, then any intermediates the
/// device sent) against the uploaded CAs `cas` at `now`. Ok carries the leaf's notAfter (when the
/// connection must end); Err says why the chain is refused.
pub fn verify_device_chain<'a>(
    chain: &[Vec<u8>],
    device_id: &str,
    cas: impl Iterator<Item = &'a [u8]>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    let leaf_der = chain
        .first()
        .ok_or("device uses X.509 but presented no client certificate")?;
    let (_, leaf) = X509Certificate::from_der(leaf_der)
        .map_err(|e| format!("client certificate does not parse as X.509: {e}"))?;
    let cns: Vec<&str> = leaf
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .collect();
    if cns != [device_id] {
        return Err(format!(
            "client certificate's CN is {cns:?}; it must be exactly the device id '{device_id}'"
        ));
    }
    // webpki does not look at an anchor's own validity, nor at anyone's keyUsage.
    let ca_ders: Vec<CertificateDer<'_>> = cas
        .filter(|der| {
            X509Certificate::from_der(der).is_ok_and(|(_, ca)| is_ca(&ca) && valid_at(&ca, now))
        })
        .map(CertificateDer::from)
        .collect();
    let anchors: Vec<TrustAnchor<'_>> = ca_ders
        .iter()
        .filter_map(|der| webpki::anchor_from_trusted_cert(der).ok())
        .collect();
    let leaf_der = CertificateDer::from(leaf_der.as_slice());
    let end_entity = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| format!("client certificate is not a usable end-entity certificate: {e}"))?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .filter(|der| X509Certificate::from_der(der).is_ok_and(|(_, c)| may_sign_certificates(&c)))
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let time =
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.timestamp().max(0) as u64));
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| format!("client certificate does not chain to a valid uploaded CA: {e:?}"))?;
    DateTime::from_timestamp(leaf.validity().not_after.timestamp(), 0)
        .ok_or_else(|| "client certificate's notAfter is out of range".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
        Issuer, KeyPair, KeyUsagePurpose,
    };

    /// A certificate, and the issuer it can act as (whether or not it may).
    struct Issued {
        der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn now() -> DateTime<Utc> {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    /// Valid 2025–2028 (around `now`), with `cn` as its only CN.
    fn params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = date_time_ymd(2025, 1, 1);
        p.not_after = date_time_ymd(2028, 1, 1);
        p
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = params(cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p
    }

    fn leaf_params(cn: &str) -> CertificateParams {
        let mut p = params(cn);
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p
    }

    /// Signs `p` with `by`, or by itself.
    fn issue(p: CertificateParams, by: Option<&Issued>) -> Issued {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = match by {
            Some(by) => p.signed_by(&key, &by.issuer).unwrap(),
            None => p.self_signed(&key).unwrap(),
        };
        Issued {
            der: cert.der().to_vec(),
            issuer: Issuer::new(p, key),
        }
    }

    fn verify(
        chain: &[&Issued],
        device_id: &str,
        cas: &[&Issued],
    ) -> Result<DateTime<Utc>, String> {
        let chain: Vec<Vec<u8>> = chain.iter().map(|c| c.der.clone()).collect();
        verify_device_chain(
            &chain,
            device_id,
            cas.iter().map(|c| c.der.as_slice()),
            now(),
        )
    }

    #[test]
    fn a_leaf_issued_by_an_uploaded_ca_or_its_intermediate_is_accepted_until_its_not_after() {
        let ca = issue(ca_params("root"), None);
        let leaf = issue(leaf_params("dev1"), Some(&ca));
        let expiry: DateTime<Utc> = "2028-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(verify(&[&leaf], "dev1", &[&ca]), Ok(expiry));
        let intermediate = issue(ca_params("intermediate"), Some(&ca));
        let leaf = issue(leaf_params("dev1"), Some(&intermediate));
        assert_eq!(verify(&[&leaf, &intermediate], "dev1", &[&ca]), Ok(expiry));
    }

    #[test]
    fn a_leaf_issued_by_a_devices_own_leaf_for_another_device_is_refused() {
        let ca = issue(ca_params("root"), None);
        // With basicConstraints cA=FALSE, and with no basicConstraints at all.
        for mut attacker in [leaf_params("dev1"), params("dev1")] {
            attacker.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let attacker = issue(attacker, Some(&ca));
            assert!(verify(&[&attacker], "dev1", &[&ca]).is_ok());
            let forged = issue(leaf_params("victim"), Some(&attacker));
            let err = verify(&[&forged, &attacker], "victim", &[&ca]).unwrap_err();
            assert!(err.contains("EndEntityUsedAsCa"), "{err}");
        }
    }

    #[test]
    fn an_intermediate_whose_key_usage_lacks_key_cert_sign_is_refused() {
        let ca = issue(ca_params("root"), None);
        let mut p = ca_params("intermediate");
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let intermediate = issue(p, Some(&ca));
        let leaf = issue(leaf_params("dev1"), Some(&intermediate));
        assert!(verify(&[&leaf, &intermediate], "dev1", &[&ca]).is_err());
    }

    #[test]
    fn an_expired_or_not_yet_valid_leaf_intermediate_or_ca_is_refused_by_the_given_time() {
        let expired = |mut p: CertificateParams| {
            p.not_before = date_time_ymd(2024, 1, 1);
            p.not_after = date_time_ymd(2026, 5, 31);
            p
        };
        let future = |mut p: CertificateParams| {
            p.not_before = date_time_ymd(2026, 6, 2);
            p
        };
        let ca = issue(ca_params("root"), None);
        for leaf in [expired(leaf_params("dev1")), future(leaf_params("dev1"))] {
            let leaf = issue(leaf, Some(&ca));
            let err = verify(&[&leaf], "dev1", &[&ca]).unwrap_err();
            assert!(err.contains("Cert"), "{err}");
        }
        let intermediate = issue(expired(ca_params("intermediate")), Some(&ca));
        let leaf = issue(leaf_params("dev1"), Some(&intermediate));
        let err = verify(&[&leaf, &intermediate], "dev1", &[&ca]).unwrap_err();
        assert!(err.contains("CertExpired"), "{err}");
        let old_ca = issue(expired(ca_params("root")), None);
        let leaf = issue(leaf_params("dev1"), Some(&old_ca));
        assert!(verify(&[&leaf], "dev1", &[&old_ca]).is_err());
    }

    #[test]
    fn a_leaf_whose_extended_key_usage_lacks_client_auth_is_refused() {
        let ca = issue(ca_params("root"), None);
        let mut p = leaf_params("dev1");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = issue(p, Some(&ca));
        let err = verify(&[&leaf], "dev1", &[&ca]).unwrap_err();
        assert!(err.contains("RequiredEkuNotFound"), "{err}");
        // No EKU at all means any usage (RFC 5280 4.2.1.12), as the Python SDK's tests issue them.
        let mut p = leaf_params("dev1");
        p.extended_key_usages = vec![];
        assert!(verify(&[&issue(p, Some(&ca))], "dev1", &[&ca]).is_ok());
    }

    #[test]
    fn subject_alt_names_lists_dns_names_and_ip_addresses() {
        let mut p = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "*.fleet.example".to_string(),
        ])
        .unwrap();
        p.distinguished_name.push(DnType::CommonName, "hub");
        let server = issue(p, None);
        assert_eq!(
            subject_alt_names(&server.der),
            ["localhost", "127.0.0.1", "[::1]", "*.fleet.example"]
        );
        assert!(subject_alt_names(b"not DER").is_empty());
    }

    #[test]
    fn two_uploaded_cas_with_the_same_subject_both_issue_valid_leaves() {
        let old = issue(ca_params("fleet CA"), None);
        let renewed = issue(ca_params("fleet CA"), None);
        for ca in [&old, &renewed] {
            let leaf = issue(leaf_params("dev1"), Some(ca));
            assert!(verify(&[&leaf], "dev1", &[&old, &renewed]).is_ok());
            assert!(verify(&[&leaf], "dev1", &[&renewed, &old]).is_ok());
        }
    }

    #[test]
    fn the_leaf_cn_must_be_exactly_the_device_id() {
        let ca = issue(ca_params("root"), None);
        let leaf = issue(leaf_params("Dev1"), Some(&ca));
        assert!(verify(&[&leaf], "Dev1", &[&ca]).is_ok());
        let err = verify(&[&leaf], "dev1", &[&ca]).unwrap_err();
        assert!(err.contains("exactly the device id 'dev1'"), "{err}");
        let foreign = issue(ca_params("root"), None);
        assert!(verify(&[&leaf], "Dev1", &[&foreign]).is_err());
        assert!(verify(&[], "Dev1", &[&ca]).is_err());
    }

    #[test]
    fn only_certificates_that_may_sign_are_accepted_as_cas() {
        let to_pem = |i: &Issued| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&i.der);
            format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n")
        };
        let ca = issue(ca_params("root"), None);
        assert_eq!(ca_pem_to_der(&to_pem(&ca)).unwrap(), ca.der);
        let leaf = issue(leaf_params("dev1"), Some(&ca));
        let err = ca_pem_to_der(&to_pem(&leaf)).unwrap_err();
        assert!(
            err.message.contains("may not sign certificates"),
            "{}",
            err.message
        );
        let mut p = ca_params("no-cert-sign");
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        assert!(ca_pem_to_der(&to_pem(&issue(p, None))).is_err());
    }
}
