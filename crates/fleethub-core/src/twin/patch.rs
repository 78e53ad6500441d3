//! RFC 7396 JSON merge patch, and the tags update built on it.

use super::limits::validate_merge;
use super::Section;
use crate::error::HubError;
use serde_json::{Map, Value};

/// Applies an RFC 7396 merge patch: `null` deletes, objects merge recursively, anything else
/// replaces.
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target.entry(key.clone()).or_insert(Value::Null);
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(child) = slot {
                    merge_patch(child, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Validates a tags patch and the size of its merge, and only then merges it; on error `tags`
/// is unchanged.
pub fn apply_tags_patch(
    tags: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), HubError> {
    validate_merge(Section::Tags, tags, patch)?;
    merge_patch(tags, patch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::twin::obj;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn null_deletes_objects_merge_and_scalars_replace() {
        let mut t = obj(json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}));
        merge_patch(
            &mut t,
            &obj(json!({"a": null, "b": {"c": 9, "x": true}, "e": "s"})),
        );
        assert_eq!(
            Value::Object(t),
            json!({"b": {"c": 9, "d": 3, "x": true}, "e": "s"})
        );
    }

    #[test]
    fn object_patch_over_scalar_replaces_and_drops_nested_nulls() {
        let mut t = obj(json!({"a": 5}));
        merge_patch(&mut t, &obj(json!({"a": {"b": null, "c": 1}})));
        assert_eq!(Value::Object(t), json!({"a": {"c": 1}}));
    }

    #[test]
    fn arrays_are_replaced_not_merged() {
        let mut t = obj(json!({"a": [1, 2, 3]}));
        merge_patch(&mut t, &obj(json!({"a": [4]})));
        assert_eq!(Value::Object(t), json!({"a": [4]}));
    }

    #[test]
    fn tags_patch_commits_when_valid() {
        let mut tags = obj(json!({"site": "a"}));
        apply_tags_patch(&mut tags, &obj(json!({"site": null, "ring": 2}))).unwrap();
        assert_eq!(Value::Object(tags), json!({"ring": 2}));
    }

    #[test]
    fn tags_patch_over_the_size_limit_leaves_tags_unchanged() {
        let mut tags = obj(json!({"a": "x".repeat(4000), "b": "y".repeat(4000)}));
        let before = tags.clone();
        let err = apply_tags_patch(&mut tags, &obj(json!({"c": "z".repeat(400)}))).unwrap_err();
        assert_eq!(err.code, ErrorCode::TwinSizeExceeded);
        assert!(err.message.starts_with("'Tags' size"), "{}", err.message);
        assert_eq!(tags, before);
    }

    #[test]
    fn tags_patch_with_bad_key_leaves_tags_unchanged() {
        let mut tags = obj(json!({"a": 1}));
        let err = apply_tags_patch(&mut tags, &obj(json!({"b c": 1}))).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidTwinKey);
        assert_eq!(Value::Object(tags), json!({"a": 1}));
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
        ]
    }

    fn tree() -> impl Strategy<Value = Map<String, Value>> {
        let value = leaf().prop_recursive(3, 24, 4, |inner| {
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        });
        prop::collection::btree_map("[a-f]", value, 0..6).prop_map(|m| m.into_iter().collect())
    }

    /// The merge of `patch` into `target`, computed the slow way: key by key over the union.
    fn reference(target: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, v) in target {
            if !patch.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
        for (k, p) in patch {
            match p {
                Value::Null => {}
                Value::Object(pm) => {
                    let base = match target.get(k) {
                        Some(Value::Object(tm)) => tm.clone(),
                        _ => Map::new(),
                    };
                    out.insert(k.clone(), Value::Object(reference(&base, pm)));
                }
                other => {
                    out.insert(k.clone(), other.clone());
                }
            }
        }
        out
    }

    proptest! {
        /// The size checked before a merge is the size of the merge.
        #[test]
        fn merged_size_is_the_size_of_the_merge(target in tree(), patch in tree()) {
            let mut merged = target.clone();
            merge_patch(&mut merged, &patch);
            prop_assert_eq!(
                crate::twin::limits::merged_size(Some(&target), &patch),
                crate::twin::limits::section_size(&merged)
            );
        }

        #[test]
        fn merge_matches_reference_model(target in tree(), patch in tree()) {
            let mut merged = target.clone();
            merge_patch(&mut merged, &patch);
            // serde_json's map equality ignores key order, which merge does not promise.
            prop_assert_eq!(&merged, &reference(&target, &patch));
            for (k, p) in &patch {
                match p {
                    Value::Null => prop_assert!(!merged.contains_key(k)),
                    Value::Object(_) => prop_assert!(merged[k].is_object()),
                    other => prop_assert_eq!(&merged[k], other),
                }
            }
            for (k, v) in &target {
                if !patch.contains_key(k) {
                    prop_assert_eq!(&merged[k], v);
                }
            }
        }

        #[test]
        fn merging_twice_is_idempotent(target in tree(), patch in tree()) {
            let mut once = target.clone();
            merge_patch(&mut once, &patch);
            let mut twice = once.clone();
            merge_patch(&mut twice, &patch);
            prop_assert_eq!(once, twice);
        }
    }
}
