//! `fleethub twins show|patch|replace`: device twins (tags, desired and reported properties).

use super::table::fields;
use super::{json_arg, set_twin_path, Common, Output};
use anyhow::{bail, Result};
use fleethub_client::HubClient;
use serde_json::{json, Map, Value};

/// `fleethub twins` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  fleethub twins patch sensor-17 --set desired.config.interval=60"
)]
pub struct TwinsArgs {
    #[command(subcommand)]
    pub command: TwinsCommand,
    #[command(flatten)]
    pub common: Common,
}

/// What to do with a twin.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TwinsCommand {
    /// Show a device's twin: tags, desired and reported properties.
    #[command(after_help = "Examples:\n  fleethub twins show sensor-17\n  \
                            fleethub twins show sensor-17 --json | jq .properties.reported")]
    Show { id: String },
    /// Merge changes into a twin's tags and desired properties (null removes a key).
    #[command(
        after_help = "Examples:\n  fleethub twins patch sensor-17 --set tags.city=boston --set desired.config.interval=60\n  \
                            fleethub twins patch sensor-17 --desired '{\"config\": {\"interval\": null}}'\n  \
                            fleethub twins patch sensor-17 --file patch.json --etag AAAAAAAAAAM="
    )]
    Patch {
        id: String,
        /// `tags.PATH=VALUE` or `desired.PATH=VALUE` (VALUE as JSON, else a string); repeat.
        #[arg(long = "set", value_name = "SECTION.PATH=VALUE")]
        settings: Vec<String>,
        /// Tags to merge, as JSON (or @file).
        #[arg(long)]
        tags: Option<String>,
        /// Desired properties to merge, as JSON (or @file).
        #[arg(long)]
        desired: Option<String>,
        /// A whole patch in IoT Hub's shape: {"tags": …, "properties": {"desired": …}}.
        #[arg(long, value_name = "FILE")]
        file: Option<String>,
        /// Only if the twin is still at this etag [default: any].
        #[arg(long)]
        etag: Option<String>,
    },
    /// Replace a twin's tags and desired properties with a file's.
    #[command(
        after_help = "Example:\n  fleethub twins show sensor-17 --json > twin.json && $EDITOR twin.json && \
                            fleethub twins replace sensor-17 --file twin.json"
    )]
    Replace {
        id: String,
        /// The twin (tags and properties.desired) in IoT Hub's shape.
        #[arg(long, value_name = "FILE")]
        file: String,
        /// Only if the twin is still at this etag [default: any].
        #[arg(long)]
        etag: Option<String>,
    },
}

/// Runs one twins command.
pub async fn run(args: TwinsArgs) -> Result<()> {
    let common = args.common.clone();
    common
        .with_hub(|rest, out| command(rest, args.command, out))
        .await
}

async fn command(rest: HubClient, verb: TwinsCommand, out: Output) -> Result<()> {
    let twin = match verb {
        TwinsCommand::Show { id } => match rest.twin(&id).await? {
            Some(twin) => twin,
            None => bail!(
                "device '{id}' does not exist: `fleethub devices list` shows the registered ones"
            ),
        },
        TwinsCommand::Patch {
            id,
            settings,
            tags,
            desired,
            file,
            etag,
        } => {
            let patch = patch_body(
                &settings,
                tags.as_deref(),
                desired.as_deref(),
                file.as_deref(),
            )?;
            match etag {
                Some(etag) => rest.patch_twin_if(&id, &patch, &etag).await?,
                None => rest.patch_twin(&id, &patch).await?,
            }
        }
        TwinsCommand::Replace { id, file, etag } => {
            let twin = json_arg("file", &format!("@{file}"))?;
            rest.replace_twin(&id, &twin, etag.as_deref()).await?
        }
    };
    out.print(&twin, details)
}

/// The patch the flags describe: the file's, then `--tags`/`--desired`, then each `--set`.
fn patch_body(
    settings: &[String],
    tags: Option<&str>,
    desired: Option<&str>,
    file: Option<&str>,
) -> Result<Value> {
    let mut patch = match file {
        Some(path) => json_arg("file", &format!("@{path}"))?,
        None => json!({}),
    };
    if !patch.is_object() {
        bail!("a twin patch is a JSON object: {{\"tags\": …, \"properties\": {{\"desired\": …}}}}");
    }
    let mut set_tags = Value::Null;
    let mut set_desired = Value::Null;
    for s in settings {
        set_twin_path(&mut set_tags, &mut set_desired, s)?;
    }
    let sections = [
        (tags.map(|t| json_arg("tags", t)).transpose()?, "/tags"),
        (
            desired.map(|d| json_arg("desired", d)).transpose()?,
            "/properties/desired",
        ),
        (Some(set_tags).filter(|v| !v.is_null()), "/tags"),
        (
            Some(set_desired).filter(|v| !v.is_null()),
            "/properties/desired",
        ),
    ];
    for (value, pointer) in sections {
        let Some(value) = value else { continue };
        let slot = match pointer {
            "/tags" => &mut patch["tags"],
            _ => &mut patch["properties"]["desired"],
        };
        merge(slot, value);
    }
    if patch.as_object().is_some_and(Map::is_empty) {
        bail!("nothing to change: give --set, --tags, --desired or --file");
    }
    Ok(patch)
}

/// JSON merge of `from` into `into` (objects key by key, anything else replaced).
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A twin for people: who and which version, then each section as indented JSON without the
/// `$metadata` and `$version` bookkeeping.
pub fn details(t: &Value) -> String {
    let mut out = fields(
        t,
        &[
            ("deviceId", "/deviceId"),
            ("status", "/status"),
            ("connectionState", "/connectionState"),
            ("version", "/version"),
            ("etag", "/etag"),
        ],
        18,
    );
    for (label, pointer) in [
        ("tags", "/tags"),
        ("desired", "/properties/desired"),
        ("reported", "/properties/reported"),
    ] {
        let section = t
            .pointer(pointer)
            .map(without_bookkeeping)
            .unwrap_or(json!({}));
        let text = serde_json::to_string_pretty(&section).unwrap_or_default();
        out.push_str(&format!("{label}:\n"));
        for line in text.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

fn without_bookkeeping(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_bookkeeping(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_one_patch() {
        let patch = patch_body(
            &[
                "tags.city=boston".into(),
                "desired.config.interval=60".into(),
            ],
            Some(r#"{"floor": 3}"#),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            patch,
            json!({"tags": {"floor": 3, "city": "boston"},
                   "properties": {"desired": {"config": {"interval": 60}}}})
        );
        let err = patch_body(&["reported.x=1".into()], None, None, None).unwrap_err();
        assert!(err.to_string().contains("tags. or desired."), "{err}");
        assert!(patch_body(&[], None, None, None).is_err());
    }
}
