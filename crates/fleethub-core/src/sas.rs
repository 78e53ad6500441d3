//! Shared access signature tokens: parsing, signing, verification and generation, compatible
//! with what the Azure IoT SDKs send (`SharedAccessSignature sr=…&sig=…&se=…[&skn=…]`).

use crate::error::{ErrorCode, HubError};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const PREFIX: &str = "SharedAccessSignature ";

/// Everything but RFC 3986's unreserved characters is encoded, as the SDKs' `quote(…, safe='')`.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A parsed SAS token.
#[derive(Debug, Clone, PartialEq)]
pub struct SasToken {
    /// `sr` exactly as in the token text (URL-encoded form); this is what clients sign.
    pub sr_raw: String,
    /// The URL-decoded resource, e.g. `myhub.example/devices/dev1`.
    pub resource: String,
    /// The URL-decoded base64 signature.
    pub signature: String,
    /// Expiry in seconds since the Unix epoch.
    pub expiry: u64,
    /// The shared access policy name (`skn`), present on service tokens.
    pub key_name: Option<String>,
}

fn unauthorized(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::IotHubUnauthorizedAccess, message)
}

/// Parses `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]`, fields in any order.
pub fn parse(token: &str) -> Result<SasToken, HubError> {
    let Some(fields) = token.trim().strip_prefix(PREFIX) else {
        return Err(unauthorized(
            "authorization token must start with 'SharedAccessSignature ' followed by sr=…&sig=…&se=…",
        ));
    };
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for field in fields.split('&').filter(|f| !f.is_empty()) {
        let Some((name, value)) = field.split_once('=') else {
            return Err(unauthorized(format!(
                "token field '{field}' is not of the form name=value"
            )));
        };
        let slot = match name {
            "sr" => &mut sr,
            "sig" => &mut sig,
            "se" => &mut se,
            "skn" => &mut skn,
            // Unknown fields are ignored, as IoT Hub does.
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(unauthorized(format!(
                "token field '{name}' appears more than once"
            )));
        }
    }
    let sr_raw = required("sr", sr)?;
    Ok(SasToken {
        sr_raw: sr_raw.to_string(),
        resource: decode("sr", sr_raw)?,
        signature: decode("sig", required("sig", sig)?)?,
        expiry: parse_expiry(required("se", se)?)?,
        key_name: skn.map(|k| decode("skn", k)).transpose()?,
    })
}

fn required<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, HubError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(unauthorized(format!(
            "token has no '{name}' field; expected SharedAccessSignature sr=…&sig=…&se=…"
        ))),
    }
}

fn decode(name: &str, value: &str) -> Result<String, HubError> {
    percent_decode_str(value)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            unauthorized(format!(
                "token field '{name}' is not valid percent-encoded UTF-8"
            ))
        })
}

fn parse_expiry(se: &str) -> Result<u64, HubError> {
    se.parse().map_err(|_| {
        unauthorized(format!(
            "token expiry se='{se}' is not a Unix time in whole seconds"
        ))
    })
}

/// `base64(HMAC-SHA256(base64decode(key), resource + "\n" + expiry))`, not URL-encoded.
pub fn sign(key_b64: &str, string_to_sign_resource: &str, expiry: u64) -> Result<String, HubError> {
    let key = BASE64.decode(key_b64.trim()).map_err(|e| {
        HubError::new(
            ErrorCode::ArgumentInvalid,
            format!("shared access key is not valid base64: {e}"),
        )
    })?;
    if key.is_empty() {
        return Err(HubError::new(
            ErrorCode::ArgumentInvalid,
            "shared access key is empty",
        ));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length");
    mac.update(format!("{string_to_sign_resource}\n{expiry}").as_bytes());
    Ok(BASE64.encode(mac.finalize().into_bytes()))
}

impl SasToken {
    /// True if the signature was made with this key, over `sr` as sent or its decoded form.
    pub fn verify(&self, key_b64: &str) -> bool {
        let matches = |resource: &str| match sign(key_b64, resource, self.expiry) {
            Ok(expected) => bool::from(expected.as_bytes().ct_eq(self.signature.as_bytes())),
            Err(_) => false,
        };
        // Some clients sign the decoded resource; both forms name the same resource.
        matches(&self.sr_raw) || matches(&self.resource)
    }

    /// True once `now_unix` has reached the token's expiry.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        now_unix >= self.expiry
    }

    /// The resource's host (as written, port included) and path (`""` for the whole hub, else
    /// `/devices/…` without a trailing slash).
    pub fn host_and_path(&self) -> (&str, &str) {
        let resource = self.resource.trim_end_matches('/');
        match resource.find('/') {
            Some(i) => resource.split_at(i),
            None => (resource, ""),
        }
    }

    /// Whether the resource names one of `host_names` (ASCII case and any port ignored, `*.`
    /// matching one label), as IoT Hub compares hosts.
    pub fn names_host<'a>(&self, mut host_names: impl Iterator<Item = &'a str>) -> bool {
        let (host, _) = self.host_and_path();
        let host = strip_port(host);
        host_names.any(|name| host_matches(host, name))
    }

    /// Whether the resource's path is a segment prefix of `request_path` (percent-encoded, as
    /// in a request line): a token for `hub/devices/d1` serves `/devices/d1` and
    /// `/devices/d1/…`, never `/devices/d10` or `/devices/d2`. Case-sensitive, as device ids are.
    pub fn covers_path(&self, request_path: &str) -> bool {
        let (_, prefix) = self.host_and_path();
        let Ok(path) = percent_decode_str(request_path).decode_utf8() else {
            return false;
        };
        prefix.is_empty()
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// `host` without a `:port` suffix (IPv6 literals in brackets keep their colons).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

fn host_matches(host: &str, name: &str) -> bool {
    let name = strip_port(name);
    match name.strip_prefix("*.") {
        Some(domain) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(domain)),
        None => host.eq_ignore_ascii_case(name),
    }
}

/// Builds a token as the Azure SDKs do: URL-encodes the resource, signs the encoded form.
pub fn generate_token(
    resource: &str,
    key_b64: &str,
    key_name: Option<&str>,
    expiry: u64,
) -> Result<String, HubError> {
    let sr = utf8_percent_encode(resource, ENCODE).to_string();
    let sig = sign(key_b64, &sr, expiry)?;
    let mut token = format!(
        "{PREFIX}sr={sr}&sig={}&se={expiry}",
        utf8_percent_encode(&sig, ENCODE)
    );
    if let Some(name) = key_name {
        token.push_str(&format!("&skn={}", utf8_percent_encode(name, ENCODE)));
    }
    Ok(token)
}

/// A fresh shared access key: 32 random bytes, base64.
pub fn generate_key() -> String {
    BASE64.encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_names_hosts_without_case_or_port_and_covers_path_segments() {
        let token = |sr: &str| {
            let t = generate_token(sr, "AAAA", Some("p"), 1).unwrap();
            parse(&t).unwrap()
        };
        let hub = ["localhost", "Hub.Example.com", "*.fleet.example"];
        for sr in [
            "localhost",
            "LOCALHOST:8443",
            "hub.example.com/",
            "a.fleet.example:443",
        ] {
            assert!(token(sr).names_host(hub.into_iter()), "{sr}");
        }
        for sr in [
            "evil.example",
            "localhost.evil",
            "fleet.example",
            "x.y.fleet.example",
        ] {
            assert!(!token(sr).names_host(hub.into_iter()), "{sr}");
        }
        assert!(token("[::1]:8443").names_host(["[::1]"].into_iter()));
        let scoped = token("localhost/devices/d 1");
        assert!(scoped.covers_path("/devices/d%201"));
        assert!(scoped.covers_path("/devices/d%201/twin"));
        assert!(!scoped.covers_path("/devices/d%2010"));
        assert!(!scoped.covers_path("/devices/D%201"));
        assert!(!scoped.covers_path("/twins/d%201"));
        assert!(token("localhost:8443/").covers_path("/anything"));
    }

    use super::*;

    // Computed independently with Python's hmac/hashlib/base64/urllib.parse.quote(safe='').
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const SIG: &str = "8CIFtA/ne5O6tcmGR9laoqnhr/43OQPSfy8hIMomssc=";
    const TOKEN: &str = "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1\
        &sig=8CIFtA%2Fne5O6tcmGR9laoqnhr%2F43OQPSfy8hIMomssc%3D&se=1795421580";
    const DECODED_SIGNED: &str = "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1\
        &sig=JgaczaMTfWPlV3pU3xXa4r%2Fd6dsOUlAjd7yrr%2FZ1B%2B0%3D&se=1795421580";

    #[test]
    fn sign_matches_a_python_computed_vector() {
        assert_eq!(
            sign(KEY, "localhost%2Fdevices%2Fdev1", 1795421580).unwrap(),
            SIG
        );
    }

    #[test]
    fn generate_token_matches_the_python_sdk_token() {
        assert_eq!(
            generate_token("localhost/devices/dev1", KEY, None, 1795421580).unwrap(),
            TOKEN
        );
    }

    #[test]
    fn parse_reads_every_field() {
        let t = parse(TOKEN).unwrap();
        assert_eq!(t.sr_raw, "localhost%2Fdevices%2Fdev1");
        assert_eq!(t.resource, "localhost/devices/dev1");
        assert_eq!(t.signature, SIG);
        assert_eq!(t.expiry, 1795421580);
        assert_eq!(t.key_name, None);
        assert!(t.verify(KEY));
    }

    #[test]
    fn parse_accepts_fields_in_any_order_with_key_name() {
        let t = parse("SharedAccessSignature skn=iothubowner&se=10&sig=abc%3D&sr=h").unwrap();
        assert_eq!(t.key_name.as_deref(), Some("iothubowner"));
        assert_eq!(
            (t.sr_raw.as_str(), t.signature.as_str(), t.expiry),
            ("h", "abc=", 10)
        );
    }

    #[test]
    fn parse_names_what_is_missing_or_malformed() {
        let cases = [
            (
                "sr=a&sig=b&se=1",
                "must start with 'SharedAccessSignature '",
            ),
            ("SharedAccessSignature sig=b&se=1", "no 'sr' field"),
            ("SharedAccessSignature sr=a&se=1", "no 'sig' field"),
            ("SharedAccessSignature sr=a&sig=b", "no 'se' field"),
            (
                "SharedAccessSignature sr=a&sig=b&se=soon",
                "se='soon' is not a Unix time",
            ),
            (
                "SharedAccessSignature sr=a&sr=b&sig=b&se=1",
                "'sr' appears more than once",
            ),
            (
                "SharedAccessSignature sr=a&sig&se=1",
                "'sig' is not of the form name=value",
            ),
            (
                "SharedAccessSignature sr=%FF&sig=b&se=1",
                "'sr' is not valid percent-encoded",
            ),
        ];
        for (token, part) in cases {
            let e = parse(token).unwrap_err();
            assert_eq!(e.code, ErrorCode::IotHubUnauthorizedAccess, "{token}");
            assert!(e.message.contains(part), "{token}: {}", e.message);
        }
    }

    #[test]
    fn tokens_signed_over_the_decoded_resource_verify() {
        assert!(parse(DECODED_SIGNED).unwrap().verify(KEY));
    }

    #[test]
    fn tampered_signature_resource_or_expiry_is_rejected() {
        let tampered = TOKEN.replace("sig=8CIF", "sig=9CIF");
        assert!(!parse(&tampered).unwrap().verify(KEY));
        assert!(!parse(&TOKEN.replace("dev1", "dev2")).unwrap().verify(KEY));
        assert!(!parse(&TOKEN.replace("se=1795421580", "se=1795421581"))
            .unwrap()
            .verify(KEY));
        assert!(!parse(TOKEN).unwrap().verify(&generate_key()));
        assert!(!parse(TOKEN).unwrap().verify("not base64!"));
    }

    #[test]
    fn round_trip_with_a_port_and_key_name() {
        let key = generate_key();
        let token =
            generate_token("localhost:8443", &key, Some("iothubowner"), 2_000_000_000).unwrap();
        assert!(token.starts_with("SharedAccessSignature sr=localhost%3A8443&sig="));
        let t = parse(&token).unwrap();
        assert_eq!(t.resource, "localhost:8443");
        assert_eq!(t.key_name.as_deref(), Some("iothubowner"));
        assert!(t.verify(&key));
    }

    #[test]
    fn expiry_is_reached_at_se() {
        let t = parse(TOKEN).unwrap();
        assert!(!t.is_expired(1795421579));
        assert!(t.is_expired(1795421580));
        assert!(t.is_expired(1795421581));
    }

    #[test]
    fn bad_keys_are_argument_errors() {
        assert_eq!(
            sign("%%%", "r", 1).unwrap_err().code,
            ErrorCode::ArgumentInvalid
        );
        assert_eq!(
            sign("", "r", 1).unwrap_err().code,
            ErrorCode::ArgumentInvalid
        );
        assert_eq!(
            generate_token("r", "%%%", None, 1).unwrap_err().code,
            ErrorCode::ArgumentInvalid
        );
    }

    #[test]
    fn generated_keys_are_32_random_bytes() {
        let (a, b) = (generate_key(), generate_key());
        assert_eq!(BASE64.decode(&a).unwrap().len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn snapshot_missing_field_message() {
        insta::assert_snapshot!(parse("SharedAccessSignature sr=a&se=1")
            .unwrap_err()
            .to_string());
    }
}
