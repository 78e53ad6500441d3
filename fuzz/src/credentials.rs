//! SAS tokens (an MQTT CONNECT password, an HTTP `Authorization` header), connection strings
//! (`fleethub simulate`/`query`, the SDKs' configuration) and device ids, fed the same text.
//!
//! Invariants beyond "never panics":
//! - a token that parses, re-issued by `generate_token` for the same resource, key name and
//!   expiry, parses back to the same fields and verifies with the key it was signed with;
//! - a connection string that parses prints (`Display`) to one that parses back equal.

use fleethub_core::connection_string::ConnectionString;
use fleethub_core::{sas, DeviceId};

/// A valid base64 key.
const KEY: &str = "c2VjcmV0LWtleS1mb3ItZnV6emluZw==";

/// Parses `data` as a SAS token, a connection string, a key and a device id.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = sas::parse(text) {
        check_token(&token);
    }
    if let Ok(parsed) = ConnectionString::parse(text) {
        let printed = parsed.to_string();
        assert_eq!(
            ConnectionString::parse(&printed).as_ref(),
            Ok(&parsed),
            "connection string {printed:?} does not parse back"
        );
    }
    // The text as a key (a connection string's SharedAccessKey reaches `sign` as written).
    let _ = sas::sign(text, "hub/devices/d1", 1);
    let _ = DeviceId::parse(text);
}

fn check_token(token: &sas::SasToken) {
    let _ = token.verify(KEY);
    let _ = token.is_expired(u64::MAX);
    let _ = token.names_host(["localhost", "Hub.Example.com:8883", "*.fleet.example"].into_iter());
    let _ = token.covers_path("/devices/d1/messages/events");
    let (host, path) = token.host_and_path();
    let _ = token.covers_path(path);
    let _ = token.names_host(std::iter::once(host));

    let reissued = sas::generate_token(
        &token.resource,
        KEY,
        token.key_name.as_deref(),
        token.expiry,
    )
    .expect("a valid key always signs");
    let again = sas::parse(&reissued).expect("a generated token parses");
    assert_eq!(
        (&again.resource, &again.key_name, again.expiry),
        (&token.resource, &token.key_name, token.expiry),
        "re-issued token {reissued:?} names other fields"
    );
    assert!(
        again.verify(KEY),
        "re-issued token {reissued:?} does not verify"
    );
}
