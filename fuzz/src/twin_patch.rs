//! Twin patches: the JSON body of a device's reported-properties PATCH (and of a service's
//! desired or tags patch), applied to a twin that already holds values.
//!
//! Invariants beyond "never panics":
//! - a refused patch changes nothing;
//! - an accepted patch bumps `$version` by one, leaves a section within every limit, holds no
//!   `null`s outside arrays, keeps `$metadata` mirroring the values' keys, and survives the
//!   store's serde round trip;
//! - merge-patch is idempotent: applying the same patch twice gives the same values.

use fleethub_core::twin::limits::validate_section;
use fleethub_core::twin::patch::{apply_tags_patch, merge_patch};
use fleethub_core::twin::{Section, TwinProperties};
use serde_json::{json, Map, Value};

const T0: &str = "2026-11-22T10:00:00.0000000Z";
const T1: &str = "2026-11-22T11:00:00.0000000Z";

/// Parses `data` as hub.rs does for a reported patch and applies it to every section.
pub fn run(data: &[u8]) {
    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for section in [Section::Reported, Section::Desired] {
        let before = existing(section);
        let mut after = before.clone();
        match after.apply_patch(section, &patch, T1) {
            Err(_) => assert_eq!(after, before, "a refused patch changed the section"),
            Ok(()) => check_applied(section, &before, &after, &patch),
        }
        let mut replaced = before.clone();
        match replaced.replace(section, &patch, T1) {
            Err(_) => assert_eq!(replaced, before, "a refused replace changed the section"),
            Ok(()) => check_section(section, &replaced),
        }
    }
    let tags_before = object(seed());
    let mut tags = tags_before.clone();
    match apply_tags_patch(&mut tags, &patch) {
        Err(_) => assert_eq!(tags, tags_before, "a refused tags patch changed the tags"),
        Ok(()) => {
            validate_section(Section::Tags, &tags).expect("accepted tags are within limits");
            assert_no_nulls(&tags);
        }
    }
}

fn check_applied(
    section: Section,
    before: &TwinProperties,
    after: &TwinProperties,
    patch: &Map<String, Value>,
) {
    assert_eq!(after.version, before.version + 1);
    check_section(section, after);
    let mut twice = after.values.clone();
    merge_patch(&mut twice, patch);
    assert_eq!(twice, after.values, "merge patch is not idempotent");
}

fn check_section(section: Section, props: &TwinProperties) {
    validate_section(section, &props.values).expect("an accepted section is within limits");
    assert_no_nulls(&props.values);
    assert_mirrors(&props.values, &props.metadata, section.name());
    let stored = serde_json::to_string(props).expect("a section serializes");
    let loaded: TwinProperties = serde_json::from_str(&stored).expect("a stored section loads");
    assert_eq!(&loaded, props, "section does not survive the store");
    let _ = props.to_twin_json();
    let _ = props.to_device_json();
}

/// A stored twin holds `null` only inside arrays: merge-patch deletes the rest.
fn assert_no_nulls(values: &Map<String, Value>) {
    for (key, value) in values {
        match value {
            Value::Null => panic!("null stored at '{key}'"),
            Value::Object(inner) => assert_no_nulls(inner),
            _ => {}
        }
    }
}

/// Every value has metadata, every object value's metadata is an object that mirrors it, and
/// metadata names no key the values lack.
fn assert_mirrors(values: &Map<String, Value>, meta: &Map<String, Value>, path: &str) {
    for (key, value) in values {
        let node = meta.get(key).and_then(Value::as_object);
        let Some(node) = node else {
            panic!("{path}.{key} has no $metadata");
        };
        if let Value::Object(inner) = value {
            assert_mirrors(inner, node, &format!("{path}.{key}"));
        }
    }
    for key in meta.keys().filter(|k| !k.starts_with('$')) {
        assert!(
            values.contains_key(key),
            "$metadata of {path} names '{key}', which has no value"
        );
    }
}

/// Values a section already holds before the patch.
fn seed() -> Value {
    json!({
        "fw": "2.9.1",
        "net": {"ssid": "x", "rssi": -60, "ips": ["10.0.0.2", null]},
        "flag": true,
        "n": 3.5,
    })
}

fn existing(section: Section) -> TwinProperties {
    let mut props = TwinProperties::default();
    props
        .apply_patch(section, &object(seed()), T0)
        .expect("the seed is a valid patch");
    props
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("seed() is an object"),
    }
}
