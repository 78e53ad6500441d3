//! The profile `fleethub login` saves: which hub the CLI talks to when no `--hub`,
//! `--ready-file` or `FLEETHUB_CONNECTION_STRING` says, with the CA to trust it by. It holds a
//! policy key, so the file is written 0600 and read only by its owner.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What `fleethub login` saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The service connection string: the hub's address (HostName, with its HTTPS port) and
    /// the policy's name and key.
    pub hub: String,
    /// The CA (PEM) the hub's certificate chains to, copied so the profile still works when
    /// the file it came from moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The hub's MQTT/TLS port, when it is not 8883 (for `fleethub simulate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_port: Option<u16>,
}

impl Profile {
    /// Where the profile lives: `$FLEETHUB_PROFILE`, else `$XDG_CONFIG_HOME/fleethub/profile.json`,
    /// else `~/.config/fleethub/profile.json`.
    pub fn path() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("FLEETHUB_PROFILE") {
            return Ok(PathBuf::from(p));
        }
        let config = match std::env::var_os("XDG_CONFIG_HOME") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".config"))
                .context(
                    "no home directory for the profile: set FLEETHUB_PROFILE to a file path",
                )?,
        };
        Ok(config.join("fleethub").join("profile.json"))
    }

    /// The saved profile, or `None` when there is none.
    pub fn load() -> Result<Option<Profile>> {
        let path = Self::path()?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let profile = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a profile: run `fleethub login` again to rewrite it",
                path.display()
            )
        })?;
        Ok(Some(profile))
    }

    /// Writes the profile readable by its owner only (0600), replacing any earlier one whole.
    pub fn save(&self) -> Result<PathBuf> {
        let path = Self::path()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        let tmp = path.with_extension("json.tmp");
        write_private(&tmp, text.as_bytes())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Removes the profile; answers whether there was one.
    pub fn remove() -> Result<bool> {
        let path = Self::path()?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

/// Creates (or truncates) `path` with mode 0600 before anything is written to it, so the key
/// is never readable by others, not even for a moment.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // An existing file keeps its mode through open(): set it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}
