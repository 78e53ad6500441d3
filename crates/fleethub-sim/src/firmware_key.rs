//! The hub's firmware signing key as a device pins it: the public half only (from the PEM the
//! hub publishes at `GET /v1/firmware/key`), checking `desired.firmware.signature` over the
//! manifest before a device erases anything.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fleethub_core::firmware::public_key::p256_point;
use fleethub_core::firmware::DesiredFirmware;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};

/// A pinned ECDSA P-256 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareKey {
    point: Vec<u8>,
}

impl FirmwareKey {
    /// The key in a `-----BEGIN PUBLIC KEY-----` PEM block (P-256 only).
    pub fn from_pem(pem: &str) -> Result<FirmwareKey, String> {
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|e| format!("the firmware key PEM is not base64: {e}"))?;
        match p256_point(&der) {
            Some(point) => Ok(FirmwareKey {
                point: point.to_vec(),
            }),
            None => Err("the firmware key is not an ECDSA P-256 public key".into()),
        }
    }

    /// Whether `signature_b64` (base64 DER) signs `message` under this key.
    pub fn verifies(&self, message: &[u8], signature_b64: &str) -> bool {
        let Ok(sig) = STANDARD.decode(signature_b64.trim()) else {
            return false;
        };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, &sig)
            .is_ok()
    }

    /// Checks a desired firmware's signature over its manifest; the error is the sentence a
    /// device reports in `reported.firmware.error`.
    pub fn check(&self, desired: &DesiredFirmware) -> Result<(), String> {
        let Some(signature) = &desired.signature else {
            return Err(format!(
                "firmware {} is unsigned and this device accepts only images signed by the hub",
                desired.version
            ));
        };
        let manifest = desired.manifest().map_err(|e| e.to_string())?;
        if self.verifies(manifest.canonical().as_bytes(), signature) {
            Ok(())
        } else {
            Err(Self::refusal(&desired.version))
        }
    }

    /// What a device reports when `version`'s signature does not verify.
    pub fn refusal(version: &str) -> String {
        format!(
            "firmware {version} has a signature that does not verify against the hub's key; \
             refused before erasing anything"
        )
    }
}

/// A fresh key pair for tests: the pinned public half and the signing half.
#[cfg(test)]
pub(crate) fn test_pair() -> (FirmwareKey, ring::signature::EcdsaKeyPair) {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let spki = fleethub_core::firmware::public_key::p256_spki(key.public_key().as_ref());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&spki)
    );
    (FirmwareKey::from_pem(&pem).unwrap(), key)
}

/// `desired`'s manifest signed with `key`, as the hub would (base64 DER).
#[cfg(test)]
pub(crate) fn test_sign(key: &ring::signature::EcdsaKeyPair, desired: &DesiredFirmware) -> String {
    let rng = ring::rand::SystemRandom::new();
    let manifest = desired.manifest().unwrap().canonical();
    STANDARD.encode(key.sign(&rng, manifest.as_bytes()).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hubs_signature_over_this_exact_manifest_passes() {
        let (pinned, key) = test_pair();
        let mut desired = DesiredFirmware {
            version: "2.1.0".into(),
            url: "https://hub/x".into(),
            sha256: "ab".repeat(32),
            size: 1000,
            signature: None,
            models: vec!["esp32".into()],
        };
        assert!(pinned.check(&desired).unwrap_err().contains("unsigned"));
        desired.signature = Some(test_sign(&key, &desired));
        assert_eq!(pinned.check(&desired), Ok(()));
        let mut other = desired.clone();
        other.size = 1001;
        assert!(other.check_err(&pinned).contains("does not verify"));
        assert!(FirmwareKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
        )
        .is_err());
    }

    trait CheckErr {
        fn check_err(&self, key: &FirmwareKey) -> String;
    }
    impl CheckErr for DesiredFirmware {
        fn check_err(&self, key: &FirmwareKey) -> String {
            key.check(self).unwrap_err()
        }
    }
}
