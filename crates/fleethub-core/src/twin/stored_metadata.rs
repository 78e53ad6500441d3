//! The stored form of a section's `$metadata`: only what the values' shape and one default
//! stamp cannot tell.
//!
//! The metadata tree mirrors the values (every object level and every leaf carries
//! `$lastUpdated`, desired also `$lastUpdatedVersion`), and most nodes share one stamp: an
//! imported or replaced twin has a single stamp everywhere, and a report moves only the leaves
//! it touched and their ancestors. Stored in full, the tree repeated every key of the values
//! and the same 40-70 bytes per node (1.7 KB of the bench fleet's 3.9 KB a device).
//!
//! The packed form is a JSON object with a `"$default"` stamp (the one most nodes carry) and,
//! under the values' own keys, only the nodes whose stamp differs from it or that lead to one
//! that does: `{"$default":{"$lastUpdated":"…"},"sensors":{"temp":{"$lastUpdated":"…"}}}`. A
//! node without its own stamp has the default. Reading it back ([`unpack`]) walks the values
//! and rebuilds the full tree, key order included.
//!
//! A tree that is not exactly the mirror of its values (an older build's, or one a future change
//! shapes differently) is stored in full, as it comes: [`pack`] checks the shape, key order and
//! stamp fields of every node before it leaves anything out, so `unpack(pack(m)) == m` holds for
//! every input, not only for the trees this build writes. Text without `"$default"` is the
//! full form (what version 14 and earlier stored), and [`unpack`] returns it unchanged.

use serde_json::{Map, Value};

/// The key of the packed form's default stamp (no value key can start with `$`).
pub const DEFAULT_KEY: &str = "$default";
const LAST_UPDATED: &str = "$lastUpdated";
const LAST_UPDATED_VERSION: &str = "$lastUpdatedVersion";

/// One node's stamp: `$lastUpdated` and, in desired, `$lastUpdatedVersion`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Stamp<'a> {
    at: &'a str,
    version: Option<u64>,
}

/// Whether the nodes carry `$lastUpdatedVersion` (desired) or not (reported).
#[derive(Clone, Copy)]
struct Shape {
    versioned: bool,
}

impl Shape {
    fn stamp_keys(self) -> usize {
        1 + usize::from(self.versioned)
    }

    /// The node's stamp, if its first keys are exactly the stamp's, in the order they are
    /// written, with the types they are written with.
    fn stamp_of(self, node: &Map<String, Value>) -> Option<Stamp<'_>> {
        let mut keys = node.iter();
        let (k, at) = keys.next()?;
        if k != LAST_UPDATED {
            return None;
        }
        let at = at.as_str()?;
        let version = if self.versioned {
            let (k, v) = keys.next()?;
            if k != LAST_UPDATED_VERSION {
                return None;
            }
            Some(v.as_u64()?)
        } else {
            None
        };
        Some(Stamp { at, version })
    }
}

/// Distinct stamps a section may have and still be packed. Past it the tree is stored in full:
/// its nodes share few stamps, so packing would save little, and counting stays a short scan.
const MOST_STAMPS: usize = 32;

/// How often each stamp occurs, in the order first seen (ties go to the first).
#[derive(Default)]
struct Census<'a> {
    stamps: Vec<(Stamp<'a>, usize)>,
}

impl<'a> Census<'a> {
    /// Counts `stamp`; `false` once there are more distinct stamps than [`MOST_STAMPS`].
    fn count(&mut self, stamp: Stamp<'a>) -> bool {
        if let Some((_, n)) = self.stamps.iter_mut().find(|(s, _)| *s == stamp) {
            *n += 1;
            return true;
        }
        self.stamps.push((stamp, 1));
        self.stamps.len() <= MOST_STAMPS
    }

    /// The stamp most nodes carry.
    fn most_common(&self) -> Option<Stamp<'a>> {
        let mut best: Option<(Stamp<'a>, usize)> = None;
        for &(stamp, n) in &self.stamps {
            if best.is_none_or(|(_, m)| n > m) {
                best = Some((stamp, n));
            }
        }
        best.map(|(stamp, _)| stamp)
    }
}

/// The metadata of a section with `values`, in its stored form, as JSON text.
pub fn pack(
    values: &Map<String, Value>,
    metadata: &Map<String, Value>,
) -> Result<String, serde_json::Error> {
    let shape = Shape {
        versioned: metadata.get(LAST_UPDATED_VERSION).is_some(),
    };
    let mut census = Census::default();
    if !mirrors(shape, values, metadata, &mut census) {
        return serde_json::to_string(metadata);
    }
    let Some(default) = census.most_common() else {
        return serde_json::to_string(metadata);
    };
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"$default\":{");
    write_stamp(&mut out, default)?;
    out.push(b'}');
    write_node(&mut out, shape, default, values, metadata, false)?;
    out.push(b'}');
    String::from_utf8(out).or_else(|_| serde_json::to_string(metadata))
}

/// Whether `meta` is exactly the metadata tree of `values` (stamp first, then one node per
/// value key in the values' order, leaves with the stamp alone); counts every node's stamp.
fn mirrors<'a>(
    shape: Shape,
    values: &Map<String, Value>,
    meta: &'a Map<String, Value>,
    census: &mut Census<'a>,
) -> bool {
    let Some(stamp) = shape.stamp_of(meta) else {
        return false;
    };
    if !census.count(stamp) || meta.len() != shape.stamp_keys() + values.len() {
        return false;
    }
    let children = meta.iter().skip(shape.stamp_keys());
    for ((key, value), (meta_key, node)) in values.iter().zip(children) {
        let Value::Object(node) = node else {
            return false;
        };
        if key != meta_key {
            return false;
        }
        let fits = match value {
            Value::Object(inner) => mirrors(shape, inner, node, census),
            _ => leaf_stamp(shape, node, census),
        };
        if !fits {
            return false;
        }
    }
    true
}

fn leaf_stamp<'a>(shape: Shape, node: &'a Map<String, Value>, census: &mut Census<'a>) -> bool {
    match shape.stamp_of(node) {
        Some(stamp) if node.len() == shape.stamp_keys() => census.count(stamp),
        _ => false,
    }
}

/// Writes the members of one packed node (its stamp if it differs from `default`, then its
/// children that are not all default) after an opening `{` and, unless `first`, members already
/// written. Returns whether it wrote anything.
fn write_node(
    out: &mut Vec<u8>,
    shape: Shape,
    default: Stamp<'_>,
    values: &Map<String, Value>,
    meta: &Map<String, Value>,
    first: bool,
) -> Result<bool, serde_json::Error> {
    let mut wrote = false;
    let comma = |out: &mut Vec<u8>, wrote: bool| {
        if !first || wrote {
            out.push(b',');
        }
    };
    if let Some(stamp) = shape.stamp_of(meta).filter(|s| *s != default) {
        comma(out, wrote);
        write_stamp(out, stamp)?;
        wrote = true;
    }
    // `meta` mirrors `values` (checked by `mirrors`): its children follow its stamp, in order.
    for ((key, value), node) in values.iter().zip(meta.values().skip(shape.stamp_keys())) {
        let Value::Object(node) = node else {
            continue;
        };
        let mark = out.len();
        comma(out, wrote);
        serde_json::to_writer(&mut *out, key)?;
        out.extend_from_slice(b":{");
        let inner_wrote = match value {
            Value::Object(inner) => write_node(out, shape, default, inner, node, true)?,
            _ => match shape.stamp_of(node).filter(|s| *s != default) {
                Some(stamp) => {
                    write_stamp(out, stamp)?;
                    true
                }
                None => false,
            },
        };
        if inner_wrote {
            out.push(b'}');
            wrote = true;
        } else {
            out.truncate(mark);
        }
    }
    Ok(wrote)
}

fn write_stamp(out: &mut Vec<u8>, stamp: Stamp<'_>) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"\"$lastUpdated\":");
    serde_json::to_writer(&mut *out, stamp.at)?;
    if let Some(version) = stamp.version {
        out.extend_from_slice(b",\"$lastUpdatedVersion\":");
        out.extend_from_slice(version.to_string().as_bytes());
    }
    Ok(())
}

/// Whether stored metadata text is in the packed form (else it is the full tree).
pub fn is_packed(stored: &str) -> bool {
    stored.contains("\"$default\"")
}

/// The full metadata tree of a section with `values`, from its stored form (packed or full).
pub fn unpack(
    values: &Map<String, Value>,
    stored: &str,
) -> Result<Map<String, Value>, serde_json::Error> {
    let mut packed: Map<String, Value> = serde_json::from_str(stored)?;
    let Some(Value::Object(default)) = packed.remove(DEFAULT_KEY) else {
        return Ok(packed);
    };
    Ok(expand(values, Some(&packed), &default))
}

/// The full node of `values` from its packed node (if stored) and the default stamp.
fn expand(
    values: &Map<String, Value>,
    node: Option<&Map<String, Value>>,
    default: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = stamp_of(node, default);
    for (key, value) in values {
        let child = node.and_then(|n| n.get(key)).and_then(Value::as_object);
        let full = match value {
            Value::Object(inner) => expand(inner, child, default),
            _ => stamp_of(child, default),
        };
        out.insert(key.clone(), Value::Object(full));
    }
    out
}

/// A node's own stamp fields, or the default's when it stores none.
fn stamp_of(node: Option<&Map<String, Value>>, default: &Map<String, Value>) -> Map<String, Value> {
    let own = node.filter(|n| n.contains_key(LAST_UPDATED));
    let from = own.unwrap_or(default);
    let mut out = Map::new();
    for key in [LAST_UPDATED, LAST_UPDATED_VERSION] {
        if let Some(v) = from.get(key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::obj;
    use crate::twin::{Section, TwinProperties};
    use proptest::prelude::*;
    use serde_json::json;

    fn round_trip(p: &TwinProperties) -> String {
        let packed = pack(&p.values, &p.metadata).unwrap();
        let back = unpack(&p.values, &packed).unwrap();
        // Equal as values and as text: the key order the twin shows is kept too.
        assert_eq!(back, p.metadata, "{packed}");
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&p.metadata).unwrap()
        );
        packed
    }

    const T1: &str = "2026-12-03T14:03:49.9312696Z";
    const T2: &str = "2026-12-03T15:00:00.0000000Z";

    #[test]
    fn a_twin_stamped_once_stores_one_stamp() {
        let mut p = TwinProperties::default();
        let values = json!({"a": 1, "cfg": {"x": 1, "y": {"z": "s"}}, "e": {}});
        p.replace(Section::Desired, &obj(values), T1).unwrap();
        let packed = round_trip(&p);
        assert_eq!(
            packed,
            format!(r#"{{"$default":{{"$lastUpdated":"{T1}","$lastUpdatedVersion":1}}}}"#)
        );
    }

    #[test]
    fn a_report_stores_the_path_it_touched() {
        let mut p = TwinProperties::default();
        let values = json!({"fw": {"v": "1.0", "s": "ok"}, "sensors": {"t": 1, "h": 2}});
        p.apply_patch(Section::Reported, &obj(values), T1).unwrap();
        p.apply_patch(Section::Reported, &obj(json!({"sensors": {"t": 5}})), T2)
            .unwrap();
        let packed = round_trip(&p);
        let want = format!(
            r#"{{"$default":{{"$lastUpdated":"{T1}"}},"$lastUpdated":"{T2}","sensors":{{"$lastUpdated":"{T2}","t":{{"$lastUpdated":"{T2}"}}}}}}"#
        );
        assert_eq!(packed, want);
    }

    #[test]
    fn a_never_updated_section_is_stored_as_it_is() {
        let p = TwinProperties::default();
        assert_eq!(round_trip(&p), "{}");
    }

    #[test]
    fn a_tree_that_does_not_mirror_its_values_is_stored_in_full() {
        let values = obj(json!({"a": 1, "b": {"c": 2}}));
        for metadata in [
            // A node the values lack, one they have missing, keys out of the values' order,
            // a leaf with children, a stamp of the wrong type, a reported node with a version.
            json!({"$lastUpdated": T1, "a": {"$lastUpdated": T1}, "b": {"$lastUpdated": T1,
                   "c": {"$lastUpdated": T1}}, "x": {"$lastUpdated": T1}}),
            json!({"$lastUpdated": T1, "a": {"$lastUpdated": T1}}),
            json!({"$lastUpdated": T1, "b": {"$lastUpdated": T1, "c": {"$lastUpdated": T1}},
                   "a": {"$lastUpdated": T1}}),
            json!({"$lastUpdated": T1, "a": {"$lastUpdated": T1, "q": {}}, "b": {
                   "$lastUpdated": T1, "c": {"$lastUpdated": T1}}}),
            json!({"$lastUpdated": 5, "a": {"$lastUpdated": T1}, "b": {"$lastUpdated": T1,
                   "c": {"$lastUpdated": T1}}}),
            json!({"$lastUpdated": T1, "a": {"$lastUpdated": T1, "$lastUpdatedVersion": 2},
                   "b": {"$lastUpdated": T1, "c": {"$lastUpdated": T1}}}),
        ] {
            let metadata = obj(metadata);
            let packed = pack(&values, &metadata).unwrap();
            assert!(!is_packed(&packed), "{packed}");
            assert_eq!(unpack(&values, &packed).unwrap(), metadata);
        }
    }

    #[test]
    fn a_tree_of_many_different_stamps_is_stored_in_full() {
        let mut p = TwinProperties::default();
        for i in 0..=MOST_STAMPS {
            let now = format!("2026-12-03T15:{:02}:00.0000000Z", i);
            let patch = obj(json!({ format!("k{i}"): i }));
            p.apply_patch(Section::Reported, &patch, &now).unwrap();
        }
        let packed = round_trip(&p);
        assert!(!is_packed(&packed), "{packed}");
        // Replaced, the section has one stamp again.
        let values = p.values.clone();
        p.replace(Section::Reported, &values, T1).unwrap();
        assert!(is_packed(&round_trip(&p)));
    }

    #[test]
    fn full_text_from_an_older_build_reads_back_unchanged() {
        let values = obj(json!({"a": 1}));
        let full = format!(r#"{{"$lastUpdated":"{T1}","a":{{"$lastUpdated":"{T1}"}}}}"#);
        let back = unpack(&values, &full).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), full);
    }

    #[test]
    fn keys_that_need_escaping_survive() {
        let mut p = TwinProperties::default();
        let values = json!({"quo\"te": {"back\\slash": 1, "ünï": 2}});
        p.apply_patch(Section::Reported, &obj(values), T1).unwrap();
        p.apply_patch(Section::Reported, &obj(json!({"quo\"te": {"ünï": 3}})), T2)
            .unwrap();
        round_trip(&p);
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            2 => Just(Value::Null),
            1 => any::<i32>().prop_map(Value::from),
            1 => "[a-z]{0,3}".prop_map(Value::from),
            1 => Just(json!([1, {"x": 2}])),
        ]
    }

    /// A patch over a small key space, so that patches overwrite, delete and turn objects into
    /// leaves and back.
    fn patch() -> impl Strategy<Value = Map<String, Value>> {
        let value = leaf().prop_recursive(3, 16, 3, |inner| {
            prop::collection::vec(("[a-c]", inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect()))
        });
        prop::collection::vec(("[a-d]", value), 0..4).prop_map(|kv| kv.into_iter().collect())
    }

    #[derive(Debug, Clone)]
    enum Step {
        Patch(Map<String, Value>),
        Replace(Map<String, Value>),
    }

    fn steps() -> impl Strategy<Value = Vec<(Step, u8)>> {
        let step = prop_oneof![
            4 => patch().prop_map(Step::Patch),
            1 => patch().prop_map(Step::Replace),
        ];
        prop::collection::vec((step, 0u8..4), 1..8)
    }

    proptest! {
        /// Random patches and replacements in sequence, each at one of a few times (so stamps
        /// repeat and differ): after every step the packed metadata reads back as the full tree
        /// the model keeps, key order included.
        #[test]
        fn packed_metadata_reads_back_as_the_full_tree(
            steps in steps(),
            desired in any::<bool>(),
        ) {
            let section = if desired { Section::Desired } else { Section::Reported };
            let mut p = TwinProperties::default();
            for (step, minute) in steps {
                let now = format!("2026-12-03T15:0{minute}:00.0000000Z");
                let _ = match &step {
                    Step::Patch(patch) => p.apply_patch(section, patch, &now),
                    Step::Replace(values) => p.replace(section, values, &now),
                };
                let packed = pack(&p.values, &p.metadata).unwrap();
                let back = unpack(&p.values, &packed).unwrap();
                prop_assert_eq!(&back, &p.metadata);
                prop_assert_eq!(
                    serde_json::to_string(&back).unwrap(),
                    serde_json::to_string(&p.metadata).unwrap()
                );
                // Whatever this build wrote is packed (a section never updated has no stamp).
                prop_assert_eq!(is_packed(&packed), p.version > 0, "{}", packed);
            }
        }
    }
}
