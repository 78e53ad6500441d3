//! IoT Hub's twin limits: key rules, nesting depth, value size, integer range and section size.
//!
//! Choices where IoT Hub's documentation leaves room:
//! - Depth: the section object itself (`tags`, `properties.desired`, `properties.reported`) is
//!   level 1 and every object or array nested in it adds a level; at most 10 levels are allowed.
//!   Objects inside arrays count like any other.
//! - Size: keys count their UTF-8 bytes; strings their UTF-8 bytes, numbers 8 bytes, booleans 4,
//!   `null` 4 (a stored twin only holds nulls inside arrays, and counting them stops an array of
//!   nulls from growing a twin for free); objects and arrays the sum of what they hold.

use super::Section;
use crate::error::{ErrorCode, HubError};
use serde_json::{Map, Value};

/// The deepest nesting allowed, counting the section object as level 1.
pub const MAX_DEPTH: usize = 10;
/// The longest key allowed, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest string value allowed, in UTF-8 bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
/// The largest integer magnitude allowed (2^52).
pub const MAX_INTEGER: u64 = 1 << 52;

/// Checks a patch (or any section document) against the key, depth, value and integer rules.
pub fn validate_patch(section: Section, patch: &Map<String, Value>) -> Result<(), HubError> {
    check_object(patch, section.name(), 1)
}

/// Checks a whole section: every rule `validate_patch` checks, plus the section's size limit.
pub fn validate_section(section: Section, values: &Map<String, Value>) -> Result<(), HubError> {
    validate_patch(section, values)?;
    check_size(section, section_size(values))
}

/// Checks `patch` (every rule `validate_patch` checks) and the size of `values` once `patch`
/// is merge-patched into it, without building the merge. `values` is a stored section, valid
/// already: the merge's keys, values and depth are those of `values` or of `patch` (a patch's
/// paths start at the section's root), so only its size needs the whole section. This spares
/// every patch a copy of the section and a second walk of it with the rules.
pub fn validate_merge(
    section: Section,
    values: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), HubError> {
    validate_patch(section, patch)?;
    check_size(section, merged_size(Some(values), patch))
}

fn check_size(section: Section, size: usize) -> Result<(), HubError> {
    let limit = section.size_limit();
    if size <= limit {
        return Ok(());
    }
    Err(HubError::new(
        ErrorCode::TwinSizeExceeded,
        format!(
            "'{}' size {} bytes exceeds the {}-byte limit",
            display_name(section),
            thousands(size as u64),
            thousands(limit as u64)
        ),
    ))
}

/// [`section_size`] of `values` (none: an empty object) with `patch` merge-patched into it, as
/// `patch::merge_patch` merges: a null removes its key, an object merges into an object (or
/// replaces anything else, its nulls dropped), any other value replaces.
pub(crate) fn merged_size(
    values: Option<&Map<String, Value>>,
    patch: &Map<String, Value>,
) -> usize {
    let kept: usize = values.map_or(0, |values| {
        values
            .iter()
            .filter(|(key, _)| !patch.contains_key(*key))
            .map(|(key, value)| key.len() + value_size(value))
            .sum()
    });
    let patched: usize = patch
        .iter()
        .map(|(key, new)| match new {
            Value::Null => 0,
            Value::Object(inner) => {
                let old = values.and_then(|values| values.get(key)?.as_object());
                key.len() + merged_size(old, inner)
            }
            other => key.len() + value_size(other),
        })
        .sum();
    kept + patched
}

/// The size IoT Hub charges a section: keys' UTF-8 bytes plus values' sizes (see module docs).
pub fn section_size(values: &Map<String, Value>) -> usize {
    values.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Number(_) => 8,
        Value::Bool(_) | Value::Null => 4,
        Value::Array(items) => items.iter().map(value_size).sum(),
        Value::Object(map) => section_size(map),
    }
}

fn display_name(section: Section) -> &'static str {
    match section {
        Section::Tags => "Tags",
        Section::Desired => "Properties.Desired",
        Section::Reported => "Properties.Reported",
    }
}

fn check_object(map: &Map<String, Value>, path: &str, level: usize) -> Result<(), HubError> {
    check_depth(path, level)?;
    for (key, value) in map {
        check_key(key, path)?;
        check_value(value, &format!("{path}.{key}"), level)?;
    }
    Ok(())
}

/// Checks a value found at `path` inside a container at `level`.
fn check_value(value: &Value, path: &str, level: usize) -> Result<(), HubError> {
    match value {
        Value::Object(map) => check_object(map, path, level + 1),
        Value::Array(items) => {
            check_depth(path, level + 1)?;
            for (i, item) in items.iter().enumerate() {
                check_value(item, &format!("{path}[{i}]"), level + 1)?;
            }
            Ok(())
        }
        Value::String(s) => check_string(s, path),
        Value::Number(n) => check_number(n, path),
        Value::Bool(_) | Value::Null => Ok(()),
    }
}

fn check_depth(path: &str, level: usize) -> Result<(), HubError> {
    if level <= MAX_DEPTH {
        return Ok(());
    }
    Err(HubError::new(
        ErrorCode::TwinDepthExceeded,
        format!(
            "{path} is nested {level} levels deep; twin sections allow at most {MAX_DEPTH} \
             levels (the section itself is level 1)"
        ),
    ))
}

fn check_key(key: &str, path: &str) -> Result<(), HubError> {
    let shown = shown_key(key);
    let rule = if key.is_empty() {
        "keys may not be empty".to_string()
    } else if key.len() > MAX_KEY_BYTES {
        format!(
            "keys may be at most {} bytes, this one is {}",
            thousands(MAX_KEY_BYTES as u64),
            thousands(key.len() as u64)
        )
    } else if key.contains(['.', '$', ' ']) {
        "keys may not contain '.', '$' or spaces".to_string()
    } else if let Some(c) = key.chars().find(|c| c.is_control()) {
        format!(
            "keys may not contain control characters (found U+{:04X})",
            c as u32
        )
    } else {
        return Ok(());
    };
    Err(HubError::new(
        ErrorCode::InvalidTwinKey,
        format!("key '{shown}' at {path}: {rule}"),
    ))
}

/// The key as a message shows it: control characters escaped, long keys cut short.
fn shown_key(key: &str) -> String {
    let escaped: String = key.chars().flat_map(char::escape_default).collect();
    match escaped.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

fn check_string(s: &str, path: &str) -> Result<(), HubError> {
    if s.len() <= MAX_VALUE_BYTES {
        return Ok(());
    }
    Err(HubError::new(
        ErrorCode::TwinValueTooLarge,
        format!(
            "value at {path} is {} bytes; string values may be at most {} bytes",
            thousands(s.len() as u64),
            thousands(MAX_VALUE_BYTES as u64)
        ),
    ))
}

fn check_number(n: &serde_json::Number, path: &str) -> Result<(), HubError> {
    let magnitude = match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => i.unsigned_abs(),
        (None, Some(u)) => u,
        // Floats are not integers; IoT Hub's range rule is about integers only.
        (None, None) => return Ok(()),
    };
    if magnitude <= MAX_INTEGER {
        return Ok(());
    }
    Err(HubError::new(
        ErrorCode::ArgumentInvalid,
        format!(
            "value at {path} is {n}; integers must be between -{max} and {max} (±2^52)",
            max = thousands(MAX_INTEGER)
        ),
    ))
}

/// `33012` as `33,012`, the way our limit messages print sizes.
/// `12345` as `12,345`, for messages that name sizes and limits.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::obj;
    use serde_json::json;

    /// A section whose innermost object sits at `levels` (the section itself is level 1).
    fn nested(levels: usize) -> Map<String, Value> {
        let mut v = json!({"leaf": 1});
        for i in (1..levels).rev() {
            v = json!({ format!("l{i}"): v });
        }
        obj(v)
    }

    fn err(section: Section, v: Value) -> HubError {
        validate_patch(section, &obj(v)).unwrap_err()
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(8192), "8,192");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn keys_with_dot_dollar_or_space_are_rejected_with_their_path() {
        for bad in ["a.b", "$x", "a$", "a b"] {
            let e = err(Section::Reported, json!({"x": { bad: 1 }}));
            assert_eq!(e.code, ErrorCode::InvalidTwinKey);
            assert_eq!(
                e.message,
                format!(
                    "key '{bad}' at properties.reported.x: keys may not contain '.', '$' or spaces"
                )
            );
        }
    }

    #[test]
    fn empty_long_and_control_keys_are_rejected() {
        let e = err(Section::Desired, json!({"": 1}));
        assert!(e.message.contains("may not be empty"), "{}", e.message);
        let long = "k".repeat(1025);
        let e = err(Section::Desired, json!({ long: 1 }));
        assert_eq!(e.code, ErrorCode::InvalidTwinKey);
        assert!(
            e.message.contains("at most 1,024 bytes, this one is 1,025"),
            "{}",
            e.message
        );
        let e = err(Section::Tags, json!({"a\u{7}": 1, }));
        assert!(e.message.contains("U+0007"), "{}", e.message);
        let e = err(Section::Tags, json!({"a\u{85}": 1}));
        assert!(e.message.contains("U+0085"), "{}", e.message);
    }

    #[test]
    fn a_1024_byte_key_and_unicode_keys_are_accepted() {
        let max = "k".repeat(1024);
        validate_patch(Section::Tags, &obj(json!({ max: 1, "température": "ü" }))).unwrap();
    }

    #[test]
    fn keys_inside_arrays_are_checked() {
        let e = err(
            Section::Reported,
            json!({"list": [{"ok": 1}, {"bad.key": 2}]}),
        );
        assert_eq!(e.code, ErrorCode::InvalidTwinKey);
        assert!(
            e.message.contains("at properties.reported.list[1]"),
            "{}",
            e.message
        );
    }

    #[test]
    fn ten_levels_pass_and_eleven_fail() {
        validate_patch(Section::Desired, &nested(10)).unwrap();
        let e = validate_patch(Section::Desired, &nested(11)).unwrap_err();
        assert_eq!(e.code, ErrorCode::TwinDepthExceeded);
        assert!(e.message.contains("nested 11 levels deep"), "{}", e.message);
        assert!(e.message.contains("at most 10"), "{}", e.message);
    }

    /// Regression: the checks stop at level 11 before recursing further, so a patch as deep as
    /// serde_json parses (127 levels) is refused on a small stack, over MQTT or REST alike.
    #[test]
    fn patches_as_deep_as_json_allows_are_refused_without_deep_recursion() {
        let text = format!("{}1{}", "{\"a\":".repeat(126), "}".repeat(126));
        let patch: Map<String, Value> = serde_json::from_str(&text).unwrap();
        std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                for section in [Section::Tags, Section::Desired, Section::Reported] {
                    let e = validate_section(section, &patch).unwrap_err();
                    assert_eq!(e.code, ErrorCode::TwinDepthExceeded);
                }
                std::mem::forget(patch);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn objects_inside_arrays_count_for_depth() {
        // nested(9)'s innermost object (inside l8) is level 9: an array there is level 10 and
        // an object inside that array level 11.
        let mut v = Value::Object(nested(9));
        let innermost = (1..9).fold(&mut v, |cur, i| cur.get_mut(format!("l{i}")).unwrap());
        innermost["arr"] = json!([1, 2]);
        validate_patch(Section::Tags, &obj(v.clone())).unwrap();
        let innermost = (1..9).fold(&mut v, |cur, i| cur.get_mut(format!("l{i}")).unwrap());
        innermost["arr"] = json!([{"x": 1}]);
        let e = validate_patch(Section::Tags, &obj(v)).unwrap_err();
        assert_eq!(e.code, ErrorCode::TwinDepthExceeded);
        assert!(
            e.message.contains(".l8.arr[0] is nested 11"),
            "{}",
            e.message
        );
    }

    #[test]
    fn long_strings_are_too_large() {
        validate_patch(Section::Reported, &obj(json!({"s": "x".repeat(4096)}))).unwrap();
        let e = err(Section::Reported, json!({"s": "x".repeat(4097)}));
        assert_eq!(e.code, ErrorCode::TwinValueTooLarge);
        assert_eq!(
            e.message,
            "value at properties.reported.s is 4,097 bytes; string values may be at most 4,096 bytes"
        );
    }

    #[test]
    fn integers_beyond_two_to_the_52_are_rejected() {
        let max = 1i64 << 52;
        validate_patch(
            Section::Desired,
            &obj(json!({"a": max, "b": -max, "f": 1e300})),
        )
        .unwrap();
        for bad in [json!(max + 1), json!(-max - 1), json!(u64::MAX)] {
            let e = err(Section::Desired, json!({ "n": bad }));
            assert_eq!(e.code, ErrorCode::ArgumentInvalid);
            assert!(e.message.contains("properties.desired.n"), "{}", e.message);
        }
    }

    #[test]
    fn nulls_are_allowed_in_patches() {
        validate_patch(Section::Desired, &obj(json!({"gone": null}))).unwrap();
    }

    #[test]
    fn size_counts_keys_strings_numbers_booleans_and_nulls() {
        let m = obj(json!({"ab": "xyz", "n": 1.5, "b": true, "o": {"k": null}, "arr": [1, "é"]}));
        // ab+xyz=5, n+8=9, b+4=5, o+(k+4)=6, arr+(8+2)=13
        assert_eq!(section_size(&m), 38);
    }

    #[test]
    fn size_limit_is_per_section() {
        let tags = obj(json!({"a": "x".repeat(4000), "b": "x".repeat(4000), "c": "x".repeat(189)}));
        assert_eq!(section_size(&tags), 8192);
        validate_section(Section::Tags, &tags).unwrap();
        validate_section(Section::Desired, &tags).unwrap();
        let mut over = tags.clone();
        over.insert("d".into(), json!(true));
        let e = validate_section(Section::Tags, &over).unwrap_err();
        assert_eq!(e.code, ErrorCode::TwinSizeExceeded);
        assert_eq!(
            e.message,
            "'Tags' size 8,197 bytes exceeds the 8,192-byte limit"
        );
    }

    #[test]
    fn validate_section_applies_the_patch_rules_too() {
        let e = validate_section(Section::Desired, &obj(json!({"a b": 1}))).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTwinKey);
    }

    fn big_section(bytes: usize) -> Map<String, Value> {
        let mut m = Map::new();
        let mut left = bytes;
        let mut i = 0;
        while left > 0 {
            let key = format!("k{i:03}");
            let n = (left - key.len()).min(4096);
            left -= key.len() + n;
            m.insert(key, Value::String("x".repeat(n)));
            i += 1;
        }
        m
    }

    #[test]
    fn snapshot_reported_size_message() {
        let m = big_section(33_012);
        assert_eq!(section_size(&m), 33_012);
        let e = validate_section(Section::Reported, &m).unwrap_err();
        insta::assert_snapshot!(e.to_string());
    }

    #[test]
    fn snapshot_tags_size_message() {
        let e = validate_section(Section::Tags, &big_section(9_214)).unwrap_err();
        insta::assert_snapshot!(e.to_string());
    }

    #[test]
    fn snapshot_key_message() {
        insta::assert_snapshot!(err(Section::Reported, json!({"x": {"a.b": 1}})).to_string());
    }

    #[test]
    fn snapshot_depth_message() {
        insta::assert_snapshot!(validate_patch(Section::Desired, &nested(11))
            .unwrap_err()
            .to_string());
    }
}
