//! The firmware manifest: the few facts about an artifact that the hub's firmware signing key
//! signs (version, compatible models, size, SHA-256), in one canonical text form, so the hub, an
//! operator signing offline and a device checking `desired.firmware.signature` all sign and
//! verify the same bytes.
//!
//! ```text
//! fleethub-firmware-manifest-v1
//! version=2.1.0
//! models=esp32-s3,esp32-s3-n8
//! size=1048576
//! sha256=<64 lowercase hex digits>
//! ```
//! Each line ends in `\n`; models are sorted and without duplicates. No field may contain a
//! comma, `=` or a line break, so the text has exactly one reading.

use super::{is_sha256_hex, MAX_IMAGE_BYTES};

/// The first line of every manifest: names the format, so a signature over one format can never
/// verify as another.
pub const MANIFEST_HEADER: &str = "fleethub-firmware-manifest-v1";

/// The most models one artifact may list.
pub const MAX_MODELS: usize = 32;

/// The longest model name.
pub const MAX_MODEL_CHARS: usize = 64;

/// The longest version.
pub const MAX_VERSION_CHARS: usize = 128;

/// What the hub signs about an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// A semantic version (`2.1.0`, `2.1.0-rc.1`).
    pub version: String,
    /// The hardware models the image runs on, sorted, no duplicates.
    pub models: Vec<String>,
    /// The image's length in bytes.
    pub size: u64,
    /// The image's SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

impl Manifest {
    /// A manifest from its parts, checked: the message names the bad field and what it must be.
    pub fn new(
        version: &str,
        models: &[String],
        size: u64,
        sha256: &str,
    ) -> Result<Manifest, String> {
        Ok(Manifest {
            version: check_version(version)?,
            models: check_models(models)?,
            size: check_size(size)?,
            sha256: check_sha256(sha256)?,
        })
    }

    /// The bytes that are signed.
    pub fn canonical(&self) -> String {
        format!(
            "{MANIFEST_HEADER}\nversion={}\nmodels={}\nsize={}\nsha256={}\n",
            self.version,
            self.models.join(","),
            self.size,
            self.sha256
        )
    }
}

/// A firmware version: a semantic version of printable ASCII, at most 128 characters.
pub fn check_version(version: &str) -> Result<String, String> {
    if version.is_empty() || version.len() > MAX_VERSION_CHARS {
        return Err(format!(
            "firmware version must be 1 to {MAX_VERSION_CHARS} characters, got {}",
            version.len()
        ));
    }
    if crate::semver::parse(version).is_none() {
        return Err(format!(
            "firmware version '{version}' is not a semantic version (MAJOR.MINOR.PATCH, \
             optionally -prerelease and +build, e.g. 2.1.0 or 2.1.0-rc.1)"
        ));
    }
    Ok(version.to_string())
}

/// A model list: 1 to 32 names of letters, digits, '-', '_' and '.', sorted and deduplicated.
pub fn check_models(models: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(models.len());
    for model in models {
        let ok = !model.is_empty()
            && model.len() <= MAX_MODEL_CHARS
            && model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(format!(
                "model '{model}' must be 1 to {MAX_MODEL_CHARS} letters, digits, '-', '_' or '.'"
            ));
        }
        out.push(model.clone());
    }
    out.sort();
    out.dedup();
    if out.is_empty() || out.len() > MAX_MODELS {
        return Err(format!(
            "an artifact lists 1 to {MAX_MODELS} compatible models, got {}",
            out.len()
        ));
    }
    Ok(out)
}

fn check_size(size: u64) -> Result<u64, String> {
    if (1..=MAX_IMAGE_BYTES).contains(&size) {
        Ok(size)
    } else {
        Err(format!(
            "firmware size {size} bytes is outside 1..={MAX_IMAGE_BYTES}"
        ))
    }
}

fn check_sha256(sha256: &str) -> Result<String, String> {
    if is_sha256_hex(sha256) {
        Ok(sha256.to_ascii_lowercase())
    } else {
        Err(format!("sha256 '{sha256}' is not 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(list: &[&str]) -> Vec<String> {
        list.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn the_canonical_text_is_fixed_and_models_are_sorted_once() {
        let sha = "AB".repeat(32);
        let m = Manifest::new(
            "2.1.0",
            &models(&["esp32-s3", "esp32", "esp32-s3"]),
            7,
            &sha,
        )
        .unwrap();
        assert_eq!(
            m.canonical(),
            format!(
                "fleethub-firmware-manifest-v1\nversion=2.1.0\nmodels=esp32,esp32-s3\nsize=7\n\
                 sha256={}\n",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn every_field_that_could_make_two_readings_is_refused() {
        let sha = "a".repeat(64);
        let err = |v: &str, m: &[&str], size: u64, sha: &str| {
            Manifest::new(v, &models(m), size, sha).unwrap_err()
        };
        assert!(err("2.1", &["a,b"], 1, &sha).contains("model 'a,b'"));
        assert!(err("2.1.0", &["a\nsize=9"], 1, &sha).contains("model"));
        assert!(err("2.1.0", &[], 1, &sha).contains("1 to 32"));
        assert!(err("two", &["a"], 1, &sha).contains("not a semantic version"));
        assert!(err("2.1.0\nx", &["a"], 1, &sha).contains("not a semantic version"));
        assert!(err("2.1.0", &["a"], 0, &sha).contains("size 0"));
        assert!(err("2.1.0", &["a"], 1, "abc").contains("not 64 hex digits"));
    }
}
