//! Per-device, time-limited download URLs, in the manner of S3 presigned URLs: the query carries
//! the device, the expiry and an HMAC-SHA256 over (artifact, device, expiry) under a secret only
//! the hub holds, so a URL cannot be altered, outlived or moved to another device.
//!
//! `{base}/v1/firmware/{sha256}/download?deviceId={id}&se={unix seconds}&sig={base64url}`

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fleethub_core::{ErrorCode, HubError, HubResult};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// Everything but unreserved characters is escaped in a device id placed in a query.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What the MAC covers, versioned so a MAC for one purpose never verifies for another.
fn signed_text(sha256: &str, device_id: &str, expiry: u64) -> String {
    format!("fleethub-firmware-url-v1\n{sha256}\n{device_id}\n{expiry}")
}

/// The hub's URL secret.
pub struct UrlSigner {
    key: hmac::Key,
}

impl UrlSigner {
    /// Loads the 32-byte secret (hex) at `path`, creating it on first use.
    pub fn load_or_generate(path: &Path) -> HubResult<UrlSigner> {
        if !path.exists() {
            let mut secret = [0u8; 32];
            SystemRandom::new()
                .fill(&mut secret)
                .map_err(|_| HubError::new(ErrorCode::ServerError, "no randomness for a secret"))?;
            super::signing::write_private(path, &hex::encode(secret))?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            HubError::new(
                ErrorCode::ServerError,
                format!("reading {}: {e}", path.display()),
            )
        })?;
        let secret = hex::decode(text.trim())
            .ok()
            .filter(|s| s.len() >= 32)
            .ok_or_else(|| {
                HubError::new(
                    ErrorCode::ServerError,
                    format!(
                        "{} must hold at least 32 bytes as hex; delete it to make a new one \
                         (download URLs minted before then stop working)",
                        path.display()
                    ),
                )
            })?;
        Ok(UrlSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// The `sig` of a URL for `device_id` to fetch `sha256` until `expiry`.
    pub fn sign(&self, sha256: &str, device_id: &str, expiry: u64) -> String {
        let tag = hmac::sign(&self.key, signed_text(sha256, device_id, expiry).as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// The path and query of the URL (append to the hub's base URL).
    pub fn path_and_query(&self, sha256: &str, device_id: &str, expiry: u64) -> String {
        format!(
            "/v1/firmware/{sha256}/download?deviceId={}&se={expiry}&sig={}",
            utf8_percent_encode(device_id, QUERY_VALUE),
            self.sign(sha256, device_id, expiry)
        )
    }

    /// Checks a URL's parts at `now` (Unix seconds); the error says which check failed.
    pub fn check(
        &self,
        sha256: &str,
        device_id: &str,
        expiry: u64,
        sig: &str,
        now: u64,
    ) -> HubResult<()> {
        let forbidden = |m: String| Err(HubError::new(ErrorCode::FirmwareUrlForbidden, m));
        let tag = URL_SAFE_NO_PAD.decode(sig).unwrap_or_default();
        let text = signed_text(sha256, device_id, expiry);
        if hmac::verify(&self.key, text.as_bytes(), &tag).is_err() {
            return forbidden(format!(
                "this download URL's signature does not match its artifact, deviceId and se: \
                 it was altered or minted by another hub; ask for a new one \
                 (POST /v1/firmware/{sha256}/url?deviceId=…)"
            ));
        }
        if now >= expiry {
            return forbidden(format!(
                "this download URL expired at {expiry} (Unix seconds; now {now}); ask for a \
                 new one (POST /v1/firmware/{sha256}/url?deviceId=…)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_checks_only_with_its_own_artifact_device_and_expiry_before_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let signer = UrlSigner::load_or_generate(&dir.path().join("url.key")).unwrap();
        let sha = "a".repeat(64);
        let sig = signer.sign(&sha, "dev-1", 1000);
        assert!(signer.check(&sha, "dev-1", 1000, &sig, 999).is_ok());
        let code = |r: HubResult<()>| r.unwrap_err().code;
        assert_eq!(
            code(signer.check(&sha, "dev-1", 1000, &sig, 1000)),
            ErrorCode::FirmwareUrlForbidden
        );
        let err = signer.check(&sha, "dev-2", 1000, &sig, 1).unwrap_err();
        assert!(err.message.contains("altered"), "{}", err.message);
        assert!(signer.check(&sha, "dev-1", 1001, &sig, 1).is_err());
        assert!(signer
            .check(&"b".repeat(64), "dev-1", 1000, &sig, 1)
            .is_err());
        assert!(signer.check(&sha, "dev-1", 1000, "", 1).is_err());
        let again = UrlSigner::load_or_generate(&dir.path().join("url.key")).unwrap();
        assert!(
            again.check(&sha, "dev-1", 1000, &sig, 1).is_ok(),
            "the secret is kept"
        );
        let q = signer.path_and_query(&sha, "odd id/é", 5);
        assert!(q.contains("deviceId=odd%20id%2F%C3%A9&se=5&sig="), "{q}");
    }
}
