//! IoT Hub's property bags in topic names: `k=v` pairs joined by `&`, each side percent-encoded.
//!
//! The device SDKs encode with Python's `urllib.parse.quote(s, safe="")`: everything except
//! ASCII letters, digits and `-._~` is percent-encoded (space as `%20`, never `+`), so `/`, `&`,
//! `=` and `$` inside a key or value cannot break the topic apart.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left as they are: RFC 3986's unreserved set.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one key, value or topic segment.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, ENCODED).to_string()
}

/// Decodes one percent-encoded component; invalid UTF-8 becomes U+FFFD, `+` stays `+`.
pub fn decode_component(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// "$.mid=1&$.ct=application%2Fjson&a%2Fb=x%26y" <-> [("$.mid","1"),("$.ct","application/json"),("a/b","x&y")]
///
/// Pairs are written in the order given; system properties go first by the caller's choice.
pub fn encode_properties(props: &[(String, String)]) -> String {
    let pairs: Vec<String> = props
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect();
    pairs.join("&")
}

/// Decodes a property bag. Empty segments are skipped; a key without `=` gets an empty value.
pub fn decode_properties(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode_component(k), decode_component(v)),
            None => (decode_component(pair), String::new()),
        })
        .collect()
}

/// The `?$rid=…&$version=…` query of a topic like "$iothub/twin/res/200/?$rid=1&$version=3".
pub fn topic_query(topic: &str) -> Vec<(String, String)> {
    match topic.split_once('?') {
        Some((_, query)) => decode_properties(query),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CAPTURED: &str =
        "%24.mid=mid-1&%24.cid=corr-1&%24.ct=application%2Fjson&%24.ce=utf-8&a%2Fb=x%26y%3Dz&alert=high%20temp";

    fn captured_pairs() -> Vec<(String, String)> {
        pairs(&[
            ("$.mid", "mid-1"),
            ("$.cid", "corr-1"),
            ("$.ct", "application/json"),
            ("$.ce", "utf-8"),
            ("a/b", "x&y=z"),
            ("alert", "high temp"),
        ])
    }

    #[test]
    fn captured_telemetry_topic_decodes() {
        assert_eq!(decode_properties(CAPTURED), captured_pairs());
    }

    #[test]
    fn encoding_matches_the_sdk_byte_for_byte() {
        assert_eq!(encode_properties(&captured_pairs()), CAPTURED);
    }

    #[test]
    fn captured_c2d_topic_round_trips() {
        let props = pairs(&[
            ("$.mid", "m1"),
            ("$.to", "/devices/dev1/messages/devicebound"),
            ("iothub-ack", "full"),
            ("color", "red blue"),
        ]);
        let encoded = encode_properties(&props);
        assert_eq!(
            encoded,
            "%24.mid=m1&%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound&iothub-ack=full&color=red%20blue"
        );
        assert_eq!(decode_properties(&encoded), props);
    }

    #[test]
    fn reserved_characters_are_all_encoded() {
        let encoded = encode_component("a b/c?d#e+f&g=h$i%j~k_l.m-n");
        assert_eq!(encoded, "a%20b%2Fc%3Fd%23e%2Bf%26g%3Dh%24i%25j~k_l.m-n");
        assert_eq!(encode_component("é"), "%C3%A9");
    }

    #[test]
    fn plus_is_not_a_space_and_odd_input_is_tolerated() {
        assert_eq!(decode_properties("a=b+c"), pairs(&[("a", "b+c")]));
        assert_eq!(
            decode_properties("&flag&&k=v=w&"),
            pairs(&[("flag", ""), ("k", "v=w")])
        );
        assert_eq!(decode_properties("bad=%ZZ%"), pairs(&[("bad", "%ZZ%")]));
        assert_eq!(decode_properties(""), Vec::<(String, String)>::new());
    }

    #[test]
    fn topic_query_reads_rid_and_version() {
        assert_eq!(
            topic_query("$iothub/twin/res/204/?$rid=1a&$version=3"),
            pairs(&[("$rid", "1a"), ("$version", "3")])
        );
        assert!(topic_query("$iothub/twin/res/204/").is_empty());
    }

    proptest! {
        #[test]
        fn any_property_bag_round_trips(props in proptest::collection::vec((".{1,12}", ".{0,12}"), 0..6)) {
            let encoded = encode_properties(&props);
            prop_assert!(!encoded.contains('/') && !encoded.contains(' ') && !encoded.contains('?'));
            prop_assert_eq!(decode_properties(&encoded), props);
        }
    }
}
