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

/// Parses a spec from TOML or JSON text; the error names the line and the field.
pub fn parse(text: &str, toml: bool) -> Result<RolloutSpec, String> {
    if toml {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIGHT_TOML: &str = include_str!("../../../../examples/rollouts/night.toml");

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
