//! The firmware signing key's public half as it travels: an ECDSA P-256 SubjectPublicKeyInfo
//! (what a `PUBLIC KEY` PEM block holds), which the hub publishes and a device pins. Spelled once
//! here so the hub's encoding and the simulator's decoding cannot drift apart.

/// The DER prefix of a P-256 SubjectPublicKeyInfo: the algorithm (id-ecPublicKey, prime256v1)
/// and the BIT STRING header of the 65-byte uncompressed point that follows.
pub const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The length of an uncompressed P-256 point (`04`, then x and y).
pub const P256_POINT_LEN: usize = 65;

/// The SubjectPublicKeyInfo DER of an uncompressed P-256 point.
pub fn p256_spki(point: &[u8]) -> Vec<u8> {
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    der
}

/// The uncompressed point of a P-256 SubjectPublicKeyInfo; `None` for any other key or a
/// truncated one.
pub fn p256_point(spki: &[u8]) -> Option<&[u8]> {
    spki.strip_prefix(&P256_SPKI_PREFIX[..])
        .filter(|point| point.len() == P256_POINT_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_round_trips_and_other_keys_are_refused() {
        let point: Vec<u8> = std::iter::once(4).chain(1..=64).collect();
        let spki = p256_spki(&point);
        assert_eq!(spki.len(), 91, "26 bytes of prefix and the 65-byte point");
        assert_eq!(p256_point(&spki), Some(&point[..]));
        assert_eq!(p256_point(&spki[..90]), None, "truncated");
        let mut other_curve = spki.clone();
        other_curve[22] ^= 0xff; // the last byte of the curve's OID
        assert_eq!(p256_point(&other_curve), None);
    }
}
