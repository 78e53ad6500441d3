//! The firmware signing key: ECDSA P-256 with SHA-256 (ring, the crypto rustls already uses),
//! kept as a PKCS#8 PEM file. The hub signs each artifact's manifest with it; the public key is
//! published so firmware can pin it, and an operator's offline signature is checked against it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fleethub_core::{ErrorCode, HubError, HubResult};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use std::path::Path;

/// The name clients see for the algorithm.
pub const ALGORITHM: &str = "ECDSA-P256-SHA256";

/// The hub's firmware signing key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &hex::encode(self.public_point()))
            .finish()
    }
}

impl SigningKey {
    /// Loads the PKCS#8 PEM key at `path`; if there is none and `generate` is set, makes one and
    /// writes it there (mode 0600) first.
    pub fn load_or_generate(path: &Path, generate: bool) -> HubResult<SigningKey> {
        let rng = SystemRandom::new();
        if !path.exists() && generate {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                .map_err(|_| server_error("generating the firmware signing key failed"))?;
            write_private(path, &pem("PRIVATE KEY", pkcs8.as_ref()))?;
            tracing::info!(path = %path.display(), "generated the firmware signing key");
        }
        let text = std::fs::read(path).map_err(|e| {
            server_error(format!(
                "reading the firmware signing key {}: {e}",
                path.display()
            ))
        })?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(&text).map_err(|e| {
            server_error(format!(
                "{} is not a PKCS#8 PEM private key ('-----BEGIN PRIVATE KEY-----'; convert an EC \
                 key with `openssl pkcs8 -topk8 -nocrypt`): {e}",
                path.display()
            ))
        })?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| server_error(format!("{} is not an ECDSA P-256 key: {e}", path.display())))?;
        Ok(SigningKey { pair, rng })
    }

    /// The public key's uncompressed point (65 bytes).
    pub fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn public_spki(&self) -> Vec<u8> {
        fleethub_core::firmware::public_key::p256_spki(self.public_point())
    }

    /// The public key as a `PUBLIC KEY` PEM block (what `openssl pkey -pubout` prints).
    pub fn public_pem(&self) -> String {
        pem("PUBLIC KEY", &self.public_spki())
    }

    /// SHA-256 of the SubjectPublicKeyInfo, hex: names the key in listings.
    pub fn key_id(&self) -> String {
        fleethub_core::firmware::sha256_hex(&self.public_spki())
    }

    /// Base64 of the DER signature over `message`.
    pub fn sign(&self, message: &[u8]) -> HubResult<String> {
        let sig = self
            .pair
            .sign(&self.rng, message)
            .map_err(|_| server_error("signing a firmware manifest failed"))?;
        Ok(STANDARD.encode(sig.as_ref()))
    }

    /// Whether `signature_b64` (base64 of a DER signature) signs `message` under this key.
    pub fn verifies(&self, message: &[u8], signature_b64: &str) -> bool {
        verify(self.public_point(), message, signature_b64)
    }
}

/// Whether `signature_b64` signs `message` under the P-256 public key `point` (uncompressed).
pub fn verify(point: &[u8], message: &[u8], signature_b64: &str) -> bool {
    let Ok(sig) = STANDARD.decode(signature_b64.trim()) else {
        return false;
    };
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(message, &sig)
        .is_ok()
}

/// A PEM block with 64-character lines.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a secret file readable by the owner only, through a temporary file and a rename so a
/// crash leaves either no file or the whole one.
pub(crate) fn write_private(path: &Path, text: &str) -> HubResult<()> {
    use std::io::Write;
    let fail = |e: std::io::Error| server_error(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

fn server_error(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::ServerError, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_signs_and_verifies_only_what_it_signed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls/firmware-signing.key");
        let key = SigningKey::load_or_generate(&path, true).unwrap();
        let again = SigningKey::load_or_generate(&path, true).unwrap();
        assert_eq!(
            key.public_point(),
            again.public_point(),
            "loaded, not regenerated"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sig = key.sign(b"manifest").unwrap();
        assert!(key.verifies(b"manifest", &sig));
        assert!(!key.verifies(b"manifesT", &sig));
        assert!(!key.verifies(b"manifest", "not base64!"));
        let spki = key.public_spki();
        assert_eq!(spki.len(), 91);
        assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }

    #[test]
    fn a_missing_or_foreign_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SigningKey::load_or_generate(&dir.path().join("none.key"), false);
        assert!(missing
            .unwrap_err()
            .message
            .contains("reading the firmware signing key"));
        let junk = dir.path().join("junk.key");
        std::fs::write(&junk, "hello").unwrap();
        let err = SigningKey::load_or_generate(&junk, false).unwrap_err();
        assert!(
            err.message.contains("not a PKCS#8 PEM private key"),
            "{}",
            err.message
        );
    }
}
