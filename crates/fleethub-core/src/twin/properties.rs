//! One twin property section (desired or reported) with its `$version` and `$metadata`.

use super::limits::{validate_merge, validate_patch, validate_section};
use super::patch::merge_patch;
use crate::error::HubError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A part of the twin that has its own limits: tags, desired or reported properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    Tags,
    Desired,
    Reported,
}

impl Section {
    /// The section's path in the twin and in query language: `tags`, `properties.desired`, …
    pub fn name(self) -> &'static str {
        match self {
            Section::Tags => "tags",
            Section::Desired => "properties.desired",
            Section::Reported => "properties.reported",
        }
    }

    /// IoT Hub's size limit for the section, in bytes as `limits::section_size` counts them.
    pub fn size_limit(self) -> usize {
        match self {
            Section::Tags => 8192,
            Section::Desired | Section::Reported => 32768,
        }
    }
}

/// Desired or reported properties: the values, their `$metadata` and the section's `$version`.
///
/// `metadata` mirrors `values`: every object level holds `$lastUpdated` (desired also
/// `$lastUpdatedVersion`) and every leaf key maps to an object with the same fields.
/// A default (never updated) section has version 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinProperties {
    pub values: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub version: u64,
}

/// The metadata written for one update.
struct Stamp<'a> {
    section: Section,
    now: &'a str,
    version: u64,
}

impl Stamp<'_> {
    /// Writes `$lastUpdated` (and for desired `$lastUpdatedVersion`) into a metadata node.
    fn write(&self, node: &mut Map<String, Value>) {
        node.insert("$lastUpdated".into(), Value::from(self.now));
        if self.section == Section::Desired {
            node.insert("$lastUpdatedVersion".into(), Value::from(self.version));
        }
    }

    fn leaf(&self) -> Value {
        let mut node = Map::new();
        self.write(&mut node);
        Value::Object(node)
    }
}

impl TwinProperties {
    /// Merge-patches the section after checking the patch and the result against IoT Hub's
    /// limits; bumps the version and stamps every touched path. On error nothing changes.
    pub fn apply_patch(
        &mut self,
        section: Section,
        patch: &Map<String, Value>,
        now: &str,
    ) -> Result<(), HubError> {
        validate_merge(section, &self.values, patch)?;
        merge_patch(&mut self.values, patch);
        let stamp = Stamp {
            section,
            now,
            version: self.version + 1,
        };
        touch(&mut self.metadata, patch, &stamp);
        self.version = stamp.version;
        Ok(())
    }

    /// Replaces every value (nulls in `new` are dropped, as a stored twin never holds them);
    /// bumps the version and rebuilds the metadata with `now`. On error nothing changes.
    pub fn replace(
        &mut self,
        section: Section,
        new: &Map<String, Value>,
        now: &str,
    ) -> Result<(), HubError> {
        validate_patch(section, new)?;
        let mut values = Map::new();
        merge_patch(&mut values, new);
        validate_section(section, &values)?;
        let stamp = Stamp {
            section,
            now,
            version: self.version + 1,
        };
        self.metadata = rebuild(&values, &stamp);
        self.values = values;
        self.version = stamp.version;
        Ok(())
    }

    /// The section as the service twin shows it: values, `$metadata` and `$version`.
    pub fn to_twin_json(&self) -> Value {
        let mut metadata = Map::new();
        if !self.metadata.contains_key("$lastUpdated") {
            metadata.insert("$lastUpdated".into(), Value::from(crate::time::NEVER));
        }
        metadata.extend(self.metadata.clone());
        let mut out = self.values.clone();
        out.insert("$metadata".into(), Value::Object(metadata));
        out.insert("$version".into(), Value::from(self.version));
        Value::Object(out)
    }

    /// The metadata in the form the store keeps ([`super::stored_metadata::pack`]), as JSON
    /// text.
    pub fn stored_metadata(&self) -> Result<String, serde_json::Error> {
        super::stored_metadata::pack(&self.values, &self.metadata)
    }

    /// The section as the store takes it, `{"values":…,"metadata":…,"version":N}` with the
    /// metadata packed: what a write hands the store (the serde form has the full tree).
    pub fn to_stored_text(&self) -> Result<String, serde_json::Error> {
        let values = serde_json::to_string(&self.values)?;
        let metadata = self.stored_metadata()?;
        Ok(format!(
            r#"{{"values":{values},"metadata":{metadata},"version":{}}}"#,
            self.version
        ))
    }

    /// The section as a device sees it on twin GET: values and `$version`, no metadata.
    pub fn to_device_json(&self) -> Value {
        Self::patch_to_device_json(&self.values, self.version)
    }

    /// The body of a desired-property notification: the patch plus `"$version": version`.
    pub fn patch_to_device_json(patch: &Map<String, Value>, version: u64) -> Value {
        let mut out = patch.clone();
        out.insert("$version".into(), Value::from(version));
        Value::Object(out)
    }
}

/// Updates `meta` for the paths `patch` touched: deleted keys lose their metadata, objects and
/// their parents are stamped, leaves get fresh metadata.
fn touch(meta: &mut Map<String, Value>, patch: &Map<String, Value>, stamp: &Stamp<'_>) {
    stamp.write(meta);
    for (key, value) in patch {
        match value {
            Value::Null => {
                meta.remove(key);
            }
            Value::Object(inner) => {
                let slot = meta
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(child) = slot {
                    touch(child, inner, stamp);
                }
            }
            _ => {
                meta.insert(key.clone(), stamp.leaf());
            }
        }
    }
}

/// Metadata for `values` with every node stamped.
fn rebuild(values: &Map<String, Value>, stamp: &Stamp<'_>) -> Map<String, Value> {
    let mut meta = Map::new();
    stamp.write(&mut meta);
    for (key, value) in values {
        let node = match value {
            Value::Object(inner) => Value::Object(rebuild(inner, stamp)),
            _ => stamp.leaf(),
        };
        meta.insert(key.clone(), node);
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::twin::obj;
    use serde_json::json;

    const T1: &str = "2026-11-22T10:00:00.0000000Z";
    const T2: &str = "2026-11-22T11:00:00.0000000Z";

    #[test]
    fn section_names_and_limits() {
        assert_eq!(Section::Tags.name(), "tags");
        assert_eq!(Section::Desired.name(), "properties.desired");
        assert_eq!(Section::Reported.name(), "properties.reported");
        assert_eq!(Section::Tags.size_limit(), 8192);
        assert_eq!(Section::Desired.size_limit(), 32768);
        assert_eq!(Section::Reported.size_limit(), 32768);
    }

    #[test]
    fn desired_patch_bumps_version_and_stamps_touched_paths() {
        let mut p = TwinProperties::default();
        p.apply_patch(
            Section::Desired,
            &obj(json!({"a": 1, "cfg": {"x": 1, "y": 2}})),
            T1,
        )
        .unwrap();
        p.apply_patch(Section::Desired, &obj(json!({"cfg": {"y": 3}})), T2)
            .unwrap();
        assert_eq!(p.version, 2);
        assert_eq!(
            Value::Object(p.values.clone()),
            json!({"a": 1, "cfg": {"x": 1, "y": 3}})
        );
        let expected = json!({
            "$lastUpdated": T2, "$lastUpdatedVersion": 2,
            "a": {"$lastUpdated": T1, "$lastUpdatedVersion": 1},
            "cfg": {
                "$lastUpdated": T2, "$lastUpdatedVersion": 2,
                "x": {"$lastUpdated": T1, "$lastUpdatedVersion": 1},
                "y": {"$lastUpdated": T2, "$lastUpdatedVersion": 2},
            },
        });
        assert_eq!(Value::Object(p.metadata), expected);
    }

    #[test]
    fn reported_metadata_has_no_last_updated_version() {
        let mut p = TwinProperties::default();
        p.apply_patch(Section::Reported, &obj(json!({"t": {"c": 21.5}})), T1)
            .unwrap();
        let expected = json!({
            "$lastUpdated": T1,
            "t": {"$lastUpdated": T1, "c": {"$lastUpdated": T1}},
        });
        assert_eq!(Value::Object(p.metadata), expected);
    }

    #[test]
    fn deleting_a_key_removes_its_metadata() {
        let mut p = TwinProperties::default();
        p.apply_patch(Section::Reported, &obj(json!({"a": {"b": 1}, "c": 2})), T1)
            .unwrap();
        p.apply_patch(Section::Reported, &obj(json!({"a": null})), T2)
            .unwrap();
        assert_eq!(Value::Object(p.values), json!({"c": 2}));
        let expected = json!({"$lastUpdated": T2, "c": {"$lastUpdated": T1}});
        assert_eq!(Value::Object(p.metadata), expected);
    }

    #[test]
    fn replacing_an_object_with_a_scalar_drops_child_metadata() {
        let mut p = TwinProperties::default();
        p.apply_patch(Section::Reported, &obj(json!({"a": {"b": 1}})), T1)
            .unwrap();
        p.apply_patch(Section::Reported, &obj(json!({"a": 5})), T2)
            .unwrap();
        assert_eq!(p.metadata["a"], json!({"$lastUpdated": T2}));
    }

    #[test]
    fn a_rejected_patch_changes_nothing() {
        let mut p = TwinProperties::default();
        p.apply_patch(Section::Desired, &obj(json!({"a": 1})), T1)
            .unwrap();
        let before = p.clone();
        let e = p
            .apply_patch(Section::Desired, &obj(json!({"a.b": 1})), T2)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTwinKey);
        let big: Map<String, Value> = (0..9)
            .map(|i| (format!("k{i}"), Value::from("x".repeat(4000))))
            .collect();
        let e = p.apply_patch(Section::Desired, &big, T2).unwrap_err();
        assert_eq!(e.code, ErrorCode::TwinSizeExceeded);
        assert!(
            e.message.starts_with("'Properties.Desired' size"),
            "{}",
            e.message
        );
        assert_eq!(p, before);
    }

    #[test]
    fn replace_swaps_values_drops_nulls_and_rebuilds_metadata() {
        let mut p = TwinProperties::default();
        p.apply_patch(Section::Desired, &obj(json!({"old": 1})), T1)
            .unwrap();
        p.replace(
            Section::Desired,
            &obj(json!({"new": {"x": 1, "gone": null}})),
            T2,
        )
        .unwrap();
        assert_eq!(p.version, 2);
        assert_eq!(Value::Object(p.values), json!({"new": {"x": 1}}));
        let expected = json!({
            "$lastUpdated": T2, "$lastUpdatedVersion": 2,
            "new": {
                "$lastUpdated": T2, "$lastUpdatedVersion": 2,
                "x": {"$lastUpdated": T2, "$lastUpdatedVersion": 2},
            },
        });
        assert_eq!(Value::Object(p.metadata), expected);
    }

    #[test]
    fn a_rejected_replace_changes_nothing() {
        let mut p = TwinProperties::default();
        let e = p
            .replace(Section::Reported, &obj(json!({"$bad": 1})), T1)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTwinKey);
        assert_eq!(p, TwinProperties::default());
    }

    #[test]
    fn twin_json_of_a_never_updated_section_shows_the_zero_time() {
        let json = TwinProperties::default().to_twin_json();
        assert_eq!(
            json,
            json!({"$metadata": {"$lastUpdated": "0001-01-01T00:00:00Z"}, "$version": 0})
        );
    }

    #[test]
    fn twin_json_shows_values_metadata_and_version() {
        let mut p = TwinProperties::default();
        p.apply_patch(
            Section::Desired,
            &obj(json!({"telemetry": {"interval": 30}})),
            T1,
        )
        .unwrap();
        insta::assert_json_snapshot!(p.to_twin_json());
    }

    #[test]
    fn device_json_has_values_and_version_only() {
        let mut p = TwinProperties::default();
        p.apply_patch(Section::Desired, &obj(json!({"temp": 25})), T1)
            .unwrap();
        assert_eq!(p.to_device_json(), json!({"temp": 25, "$version": 1}));
        let body = TwinProperties::patch_to_device_json(&obj(json!({"temp": null})), 7);
        assert_eq!(body, json!({"temp": null, "$version": 7}));
    }

    #[test]
    fn properties_round_trip_through_serde() {
        let mut p = TwinProperties::default();
        p.apply_patch(Section::Reported, &obj(json!({"a": [1, {"b": "c"}]})), T1)
            .unwrap();
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<TwinProperties>(&text).unwrap(), p);
    }

    /// Found by the twin_patch fuzz target: without serde_json's `float_roundtrip`, a number
    /// such as `4503599627370E97` parsed one ULP off what its stored text parses to, so a
    /// reported value changed each time the twin was stored and loaded.
    #[test]
    fn reported_floats_survive_the_store_unchanged() {
        for patch in [
            r#"{"big": 4503599627370E97}"#,
            r#"{"n": 111111111111111111111111}"#,
            r#"{"x": 4503599627333333333333333333370497}"#,
        ] {
            let mut p = TwinProperties::default();
            let patch: Map<String, Value> = serde_json::from_str(patch).unwrap();
            p.apply_patch(Section::Reported, &patch, T1).unwrap();
            let stored = serde_json::to_string(&p).unwrap();
            let loaded: TwinProperties = serde_json::from_str(&stored).unwrap();
            assert_eq!(loaded, p, "{stored}");
        }
    }
}
