//! Devices that authenticate with certificates over real TLS: uploaded CAs, chains, and what a
//! device holding one certificate must not be able to do with it.

use crate::harness::{refusal, TestHub};
use fleethub_sim::{DeviceAuth, DeviceClient};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use reqwest::{Method, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use std::sync::Arc;

/// A certificate with its PEM, its private key, and the issuer it can act as.
struct Issued {
    der: Vec<u8>,
    pem: String,
    key_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn issue(cn: &str, ca: bool, by: Option<&Issued>) -> Issued {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    } else {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = match by {
        Some(by) => p.signed_by(&key, &by.issuer).unwrap(),
        None => p.self_signed(&key).unwrap(),
    };
    Issued {
        der: cert.der().to_vec(),
        pem: cert.pem(),
        key_der: key.serialize_der(),
        issuer: Issuer::new(p, key),
    }
}

impl TestHub {
    async fn upload_ca(&self, name: &str, ca: &Issued) {
        let r = self
            .call(
                Method::PUT,
                &format!("/certificates/{name}"),
                Some(json!({"properties": {"certificate": ca.pem}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    async fn create_ca_device(&self, id: &str) {
        let r = self
            .call(
                Method::PUT,
                &format!("/devices/{id}"),
                Some(json!({"deviceId": id, "authentication": {"type": "certificateAuthority"}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    /// Options that present `chain` (leaf first, signed for with the leaf's key) and no password.
    fn certificate_options(&self, id: &str, chain: &[&Issued]) -> fleethub_sim::ConnectOptions {
        let ca = std::fs::read(self.running.ca_file.as_ref().unwrap()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let certs = chain
            .iter()
            .map(|c| CertificateDer::from(c.der.clone()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain[0].key_der.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
        let mut opts = self.connect_options(id, "unused");
        opts.auth = DeviceAuth::SasToken(String::new());
        opts.tls = Some(Arc::new(tls));
        opts
    }
}

#[tokio::test]
async fn a_device_cannot_sign_a_certificate_for_another_device_with_its_own_leaf() {
    let hub = TestHub::start().await;
    let ca = issue("fleet CA", true, None);
    hub.upload_ca("fleet", &ca).await;
    hub.create_ca_device("attacker").await;
    hub.create_ca_device("victim").await;
    let attacker = issue("attacker", false, Some(&ca));
    DeviceClient::connect(hub.certificate_options("attacker", &[&attacker]))
        .await
        .expect("the attacker's own certificate is good");

    let forged = issue("victim", false, Some(&attacker));
    let opts = hub.certificate_options("victim", &[&forged, &attacker]);
    assert_eq!(refusal(opts).await, 4);
    let genuine = issue("victim", false, Some(&ca));
    DeviceClient::connect(hub.certificate_options("victim", &[&genuine]))
        .await
        .expect("the victim's own certificate is good");
}

#[tokio::test]
async fn devices_of_two_uploaded_cas_with_the_same_subject_both_connect() {
    let hub = TestHub::start().await;
    let old = issue("fleet CA", true, None);
    let renewed = issue("fleet CA", true, None);
    hub.upload_ca("fleet-2025", &old).await;
    hub.upload_ca("fleet-2026", &renewed).await;
    for (id, ca) in [("dev-old", &old), ("dev-new", &renewed)] {
        hub.create_ca_device(id).await;
        let leaf = issue(id, false, Some(ca));
        DeviceClient::connect(hub.certificate_options(id, &[&leaf]))
            .await
            .unwrap_or_else(|e| panic!("{id} refused: {e}"));
    }
}

#[tokio::test]
async fn a_leaf_whose_cn_differs_from_the_device_id_in_case_is_refused() {
    let hub = TestHub::start().await;
    let ca = issue("fleet CA", true, None);
    hub.upload_ca("fleet", &ca).await;
    hub.create_ca_device("Sensor-1").await;
    let leaf = issue("sensor-1", false, Some(&ca));
    assert_eq!(
        refusal(hub.certificate_options("Sensor-1", &[&leaf])).await,
        4
    );
}

#[tokio::test]
async fn uploading_a_certificate_that_may_not_sign_is_refused() {
    let hub = TestHub::start().await;
    let ca = issue("fleet CA", true, None);
    let leaf = issue("dev1", false, Some(&ca));
    let r = hub
        .call(
            Method::PUT,
            "/certificates/leaf",
            Some(json!({"properties": {"certificate": leaf.pem}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("may not sign certificates"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn concurrent_ca_uploads_are_all_kept() {
    let hub = TestHub::start().await;
    let cas: Vec<Issued> = (0..8)
        .map(|i| issue(&format!("CA {i}"), true, None))
        .collect();
    let names: Vec<String> = (0..cas.len()).map(|i| format!("ca-{i}")).collect();
    let uploads = cas
        .iter()
        .zip(&names)
        .map(|(ca, name)| hub.running.hub.put_certificate(name, &ca.pem));
    for r in futures_util::future::join_all(uploads).await {
        r.unwrap();
    }
    for (i, ca) in cas.iter().enumerate() {
        let id = format!("dev-{i}");
        hub.create_ca_device(&id).await;
        let leaf = issue(&id, false, Some(ca));
        DeviceClient::connect(hub.certificate_options(&id, &[&leaf]))
            .await
            .unwrap_or_else(|e| panic!("{id} (CA {i}) refused: {e}"));
    }
}
