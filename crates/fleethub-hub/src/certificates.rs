//! X.509 checks for devices: thumbprints and chains to uploaded CA certificates.

use fleethub_core::{HubError, HubResult};
use sha1::{Digest, Sha1};
use x509_parser::prelude::*;

/// SHA-1 thumbprint of a DER certificate, uppercase hex, as IoT Hub shows it.
pub fn thumbprint(der: &[u8]) -> String {
    hex::encode_upper(Sha1::digest(der))
}

/// Decodes the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> HubResult<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| HubError::invalid(format!("certificate is not PEM: {e}")))?;
    block
        .parse_x509()
        .map_err(|e| HubError::invalid(format!("certificate does not parse as X.509: {e}")))?;
    Ok(block.contents)
}

/// Whether `chain` (leaf first) has a leaf whose CN is `device_id` and which chains, through the
/// given intermediates, to one of the CA certificates by signature.
pub fn chain_is_trusted<'a>(
    chain: &[Vec<u8>],
    device_id: &str,
    cas: impl Iterator<Item = &'a [u8]>,
) -> bool {
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect();
    let Some(leaf) = parsed.first() else {
        return false;
    };
    let cn_ok = leaf
        .subject()
        .iter_common_name()
        .any(|cn| cn.as_str().is_ok_and(|s| s == device_id));
    if !cn_ok || !leaf.validity().is_valid() {
        return false;
    }
    let cas: Vec<X509Certificate<'_>> = cas
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect();
    let mut current = leaf;
    for _ in 0..parsed.len() {
        if let Some(ca) = cas.iter().find(|ca| ca.subject() == current.issuer()) {
            return current.verify_signature(Some(ca.public_key())).is_ok();
        }
        let next = parsed
            .iter()
            .skip(1)
            .find(|c| c.subject() == current.issuer());
        match next {
            Some(issuer) if current.verify_signature(Some(issuer.public_key())).is_ok() => {
                current = issuer
            }
            _ => return false,
        }
    }
    false
}
