//! `fleethub config create|list|show|delete`: configurations (IoT Hub automatic device
//! management) over REST, as tables for people or `--json` for scripts.

use crate::simulate::target::{HubArgs, HubTarget};
use crate::table::text;
use anyhow::{bail, Context, Result};
use fleethub_client::HubClient;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// `fleethub config` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Print the hub's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What to do with configurations.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigCommand {
    /// Create a configuration, from flags or from a JSON file in IoT Hub's shape.
    Create {
        /// Its id: lowercase letters, digits and -+%_*!' (up to 128).
        id: String,
        /// A JSON file with the whole configuration (content, targetCondition, priority, …);
        /// the flags below add to it.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The devices it targets: a query condition, or '*' for every device.
        #[arg(long)]
        target: Option<String>,
        /// Per twin path, the highest priority wins.
        #[arg(long)]
        priority: Option<u32>,
        /// A setting, `properties.desired.PATH=VALUE` (VALUE as JSON, else a string); repeat.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        settings: Vec<String>,
        /// A custom metric, `NAME=SELECT deviceId FROM devices WHERE …`; up to 5.
        #[arg(long = "metric", value_name = "NAME=QUERY")]
        metrics: Vec<String>,
        /// A label, `NAME=VALUE`; repeat.
        #[arg(long = "label", value_name = "NAME=VALUE")]
        labels: Vec<String>,
    },
    /// List configurations with their counts.
    List {
        /// At most this many.
        #[arg(long)]
        top: Option<u64>,
    },
    /// Show one configuration and its metrics.
    Show { id: String },
    /// Delete a configuration; its devices lose its settings and get the next one's.
    Delete { id: String },
}

/// Runs one config command.
pub async fn run(args: ConfigArgs) -> Result<()> {
    let target = HubTarget::resolve(&args.hub, false).await?;
    let result = command(&target.rest, &args).await;
    target.close();
    result
}

async fn command(rest: &HubClient, args: &ConfigArgs) -> Result<()> {
    let out = match &args.command {
        ConfigCommand::Create { id, .. } => {
            let body = create_body(&args.command)?;
            rest.put_configuration(id, &body, None).await?
        }
        ConfigCommand::List { top } => rest.list_configurations(*top).await?,
        ConfigCommand::Show { id } => match rest.configuration(id).await? {
            Some(c) => c,
            None => bail!("configuration '{id}' does not exist"),
        },
        ConfigCommand::Delete { id } => {
            rest.delete_configuration(id).await?;
            if !args.json {
                println!("deleted {id}");
            }
            return Ok(());
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    match &args.command {
        ConfigCommand::List { .. } => {
            print!("{}", table(out.as_array().map_or(&[][..], Vec::as_slice)))
        }
        _ => print!("{}", details(&out)),
    }
    Ok(())
}

/// `NAME=VALUE` split at the first `=`.
fn pair<'a>(flag: &str, s: &'a str) -> Result<(&'a str, &'a str)> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .with_context(|| format!("--{flag} '{s}' must be NAME=VALUE"))
}

/// The configuration a `create` sends: the file's, with the flags added.
fn create_body(command: &ConfigCommand) -> Result<Value> {
    let ConfigCommand::Create {
        id,
        file,
        target,
        priority,
        settings,
        metrics,
        labels,
    } = command
    else {
        bail!("not a create command");
    };
    let mut body = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?
        }
        None => json!({}),
    };
    let Value::Object(obj) = &mut body else {
        bail!("the configuration file must hold a JSON object");
    };
    obj.insert("id".into(), json!(id));
    if let Some(t) = target {
        obj.insert("targetCondition".into(), json!(t));
    }
    if let Some(p) = priority {
        obj.insert("priority".into(), json!(p));
    }
    let mut add = |section: &[&str], key: &str, value: Value| {
        let mut node = &mut *obj;
        for s in section {
            let entry = node.entry(s.to_string()).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            let Value::Object(next) = entry else { return };
            node = next;
        }
        node.insert(key.to_string(), value);
    };
    for s in settings {
        let (path, value) = pair("set", s)?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
        add(&["content", "deviceContent"], path, value);
    }
    for m in metrics {
        let (name, query) = pair("metric", m)?;
        add(&["metrics", "queries"], name, json!(query));
    }
    for l in labels {
        let (name, value) = pair("label", l)?;
        add(&["labels"], name, json!(value));
    }
    Ok(body)
}

fn result(c: &Value, section: &str, name: &str) -> String {
    text(&c[section]["results"][name])
}

/// One line per configuration, in columns.
fn table(items: &[Value]) -> String {
    let columns = [
        "id",
        "priority",
        "targeted",
        "applied",
        "targetCondition",
        "createdTimeUtc",
    ];
    crate::table::columns(&columns, items, |c, name| match name {
        "targeted" => result(c, "systemMetrics", "targetedCount"),
        "applied" => result(c, "systemMetrics", "appliedCount"),
        other => text(&c[other]),
    })
}

/// One configuration, a field per line, then its settings and metrics.
fn details(c: &Value) -> String {
    let mut out = String::new();
    for key in [
        "id",
        "priority",
        "targetCondition",
        "createdTimeUtc",
        "lastUpdatedTimeUtc",
        "etag",
    ] {
        out.push_str(&format!("{key:<20}{}\n", text(&c[key])));
    }
    let empty = Map::new();
    let map = |v: &Value| v.as_object().cloned().unwrap_or_else(|| empty.clone());
    for (name, value) in map(&c["labels"]) {
        out.push_str(&format!("label               {name}={}\n", text(&value)));
    }
    for (path, value) in map(&c["content"]["deviceContent"]) {
        out.push_str(&format!("set                 {path} = {value}\n"));
    }
    for name in ["targetedCount", "appliedCount"] {
        out.push_str(&format!("{name:<20}{}\n", result(c, "systemMetrics", name)));
    }
    for (name, query) in map(&c["metrics"]["queries"]) {
        out.push_str(&format!(
            "metric              {name} = {} ({})\n",
            result(c, "metrics", &name),
            text(&query)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_flags_build_iot_hubs_shape() {
        let command = ConfigCommand::Create {
            id: "prod-interval".into(),
            file: None,
            target: Some("tags.environment = 'prod'".into()),
            priority: Some(10),
            settings: vec![
                "properties.desired.config.telemetryIntervalSeconds=60".into(),
                "properties.desired.config.mode=eco".into(),
            ],
            metrics: vec!["old=SELECT deviceId FROM devices WHERE tags.x = 'a=b'".into()],
            labels: vec!["team=ops".into()],
        };
        assert_eq!(
            create_body(&command).unwrap(),
            json!({
                "id": "prod-interval",
                "targetCondition": "tags.environment = 'prod'",
                "priority": 10,
                "content": {"deviceContent": {
                    "properties.desired.config.telemetryIntervalSeconds": 60,
                    "properties.desired.config.mode": "eco"
                }},
                "metrics": {"queries": {"old": "SELECT deviceId FROM devices WHERE tags.x = 'a=b'"}},
                "labels": {"team": "ops"}
            })
        );
    }
}
