//! A rollout written as a file: the spec of docs/rollouts.md in TOML or JSON. The extension
//! decides (`.toml`, `.json`); any other is read as JSON when it starts with `{`, else as TOML.
//! Unknown keys are refused, so a misspelt field is named instead of silently ignored.

use anyhow::{Context, Result};
use fleethub_rollout::RolloutSpec;
use std::path::Path;

/// The spec in `path`, checked for shape (the hub checks the rest when it is created).
pub fn read(path: &Path) -> Result<RolloutSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let toml = match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("toml") => true,
        Some(e) if e.eq_ignore_ascii_case("json") => false,
        _ => !text.trim_start().starts_with('{'),
    };
    parse(&text, toml).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses a spec from TOML or JSON text; the error names the line and the field. An artifact
/// named by its version alone (no `sha256`) is read with an empty SHA-256, which `create` looks
/// up in the hub's firmware store.
pub fn parse(text: &str, toml: bool) -> Result<RolloutSpec, String> {
    let parsed = if toml {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())
    };
    match parsed {
        Err(e) if e.contains("missing field `sha256`") => without_sha256(text, toml, e),
        other => other,
    }
}

/// The spec with `artifact.sha256` set to "" where the file leaves it out; `missing` (the
/// first error) when that is not what is wrong.
fn without_sha256(text: &str, toml: bool, missing: String) -> Result<RolloutSpec, String> {
    let value: Option<serde_json::Value> = if toml {
        toml::from_str(text).ok()
    } else {
        serde_json::from_str(text).ok()
    };
    let Some(mut value) = value else {
        return Err(missing);
    };
    match value.get_mut("artifact").and_then(|a| a.as_object_mut()) {
        Some(artifact) if !artifact.contains_key("sha256") => {
            artifact.insert("sha256".into(), serde_json::Value::String(String::new()));
        }
        _ => return Err(missing),
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIGHT_TOML: &str = include_str!("../../../../examples/rollouts/night.toml");

    /// `rollout create` finds the SHA-256 of an artifact named by version alone; a file that
    /// leaves it out must read, and one with another mistake still names it.
    #[test]
    fn an_artifact_named_by_version_alone_reads_with_an_empty_sha256() {
        let without = NIGHT_TOML
            .lines()
            .filter(|l| !l.trim_start().starts_with("sha256"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(without, NIGHT_TOML.trim_end(), "the example names a sha256");
        let spec = parse(&without, true).unwrap();
        assert_eq!(spec.artifact.sha256, "");
        assert_eq!(
            spec.artifact.version,
            parse(NIGHT_TOML, true).unwrap().artifact.version
        );
        let mut json: serde_json::Value = toml::from_str(&without).unwrap();
        assert_eq!(parse(&json.to_string(), false).unwrap().artifact.sha256, "");
        json.as_object_mut().unwrap().remove("target");
        let e = parse(&json.to_string(), false).unwrap_err();
        assert!(e.contains("missing field `target`"), "{e}");
    }

    #[test]
    fn toml_and_json_read_the_same_spec() {
        let from_toml = parse(NIGHT_TOML, true).unwrap();
        assert_eq!(from_toml.waves.len(), 3);
        assert_eq!(from_toml.retry.retries, 2);
        assert_eq!(
            from_toml.retry.backoff_secs, 600,
            "the rest of retry defaults"
        );
        let json = serde_json::to_string(&from_toml).unwrap();
        assert_eq!(parse(&json, false).unwrap(), from_toml);
        from_toml.plan("night").unwrap();
    }

    #[test]
    fn a_misspelt_key_is_named_with_its_line() {
        let bad = NIGHT_TOML.replace("soak_secs", "soak_sec");
        let err = parse(&bad, true).unwrap_err();
        assert!(err.contains("soak_sec") && err.contains("line"), "{err}");
        let err = parse(r#"{"artifact": {"version": "2.1.0", "sha": "x"}}"#, false).unwrap_err();
        assert!(err.contains("sha") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn the_extension_decides_and_json_is_recognised_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("night.toml");
        std::fs::write(&toml_path, NIGHT_TOML).unwrap();
        let spec = read(&toml_path).unwrap();
        let bare = dir.path().join("night");
        std::fs::write(&bare, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
        assert_eq!(read(&bare).unwrap(), spec);
        let err = read(&dir.path().join("missing.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("missing.toml"), "{err:#}");
    }
}
