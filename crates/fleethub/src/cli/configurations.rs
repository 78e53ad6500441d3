//! `fleethub configurations create|update|list|show|delete` (alias `config`): configurations
//! (IoT Hub automatic device management) over REST, as tables for people or `--json` for
//! scripts.

use super::table::text;
use super::{pair, Common, Output};
use anyhow::{bail, Context, Result};
use fleethub_client::HubClient;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// `fleethub config` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example:\n  fleethub configurations list")]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
    #[command(flatten)]
    pub common: Common,
}

/// What to do with configurations.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigCommand {
    /// Create a configuration, from flags or from a JSON file in IoT Hub's shape.
    #[command(
        after_help = "Examples:\n  fleethub configurations create prod-interval --target \"tags.environment = 'prod'\" --priority 10 \\\n    --set properties.desired.config.telemetryIntervalSeconds=60 \\\n    --metric \"slow=SELECT deviceId FROM devices WHERE properties.reported.config.telemetryIntervalSeconds > 60\"\n  fleethub configurations create night-mode --file night-mode.json"
    )]
    Create {
        /// Its id: lowercase letters, digits and -+%_*!' (up to 128).
        id: String,
        /// A JSON file with the whole configuration (content, targetCondition, priority, …);
        /// the flags below add to it.
        #[arg(long)]
        file: Option<PathBuf>,
        /// A setting, `properties.desired.PATH=VALUE` (VALUE as JSON, else a string); repeat.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        settings: Vec<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Change a configuration's target, priority, metrics or labels (its settings cannot
    /// change: create a new configuration for new settings). Sends the etag it read, so a
    /// change made in between is refused, not overwritten.
    #[command(
        after_help = "Examples:\n  fleethub configurations update prod-interval --priority 20 --label owner=ops\n  \
                      fleethub configurations update prod-interval --target \"tags.environment IN ['prod', 'staging']\" --remove-metric slow"
    )]
    Update {
        id: String,
        #[command(flatten)]
        fields: Fields,
        /// Remove a custom metric by name; repeat.
        #[arg(long = "remove-metric", value_name = "NAME")]
        remove_metrics: Vec<String>,
        /// Remove a label by name; repeat.
        #[arg(long = "remove-label", value_name = "NAME")]
        remove_labels: Vec<String>,
    },
    /// List configurations with their counts.
    #[command(after_help = "Example:\n  fleethub configurations list --top 20")]
    List {
        /// At most this many.
        #[arg(long)]
        top: Option<u64>,
    },
    /// Show one configuration and its metrics.
    #[command(after_help = "Example:\n  fleethub configurations show prod-interval --json")]
    Show { id: String },
    /// Delete a configuration; its devices lose its settings and get the next one's.
    #[command(after_help = "Example:\n  fleethub configurations delete prod-interval")]
    Delete { id: String },
}

/// What `create` and `update` both set.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Fields {
    /// The devices it targets: a query condition, or '*' for every device.
    #[arg(long)]
    target: Option<String>,
    /// Per twin path, the highest priority wins.
    #[arg(long)]
    priority: Option<u32>,
    /// A custom metric, `NAME=SELECT deviceId FROM devices WHERE …`; up to 5.
    #[arg(long = "metric", value_name = "NAME=QUERY")]
    metrics: Vec<String>,
    /// A label, `NAME=VALUE`; repeat.
    #[arg(long = "label", value_name = "NAME=VALUE")]
    labels: Vec<String>,
}

impl Fields {
    fn is_empty(&self) -> bool {
        self.target.is_none()
            && self.priority.is_none()
            && self.metrics.is_empty()
            && self.labels.is_empty()
    }

    /// Writes these fields into a configuration in IoT Hub's shape.
    fn apply(&self, obj: &mut Map<String, Value>) -> Result<()> {
        if let Some(t) = &self.target {
            obj.insert("targetCondition".into(), json!(t));
        }
        if let Some(p) = self.priority {
            obj.insert("priority".into(), json!(p));
        }
        for m in &self.metrics {
            let (name, query) = pair("metric", m)?;
            insert_at(obj, &["metrics", "queries"], name, json!(query));
        }
        for l in &self.labels {
            let (name, value) = pair("label", l)?;
            insert_at(obj, &["labels"], name, json!(value));
        }
        Ok(())
    }
}

/// Sets `key` in the object at `section` under `obj`, making the objects on the way.
fn insert_at(obj: &mut Map<String, Value>, section: &[&str], key: &str, value: Value) {
    let mut node = obj;
    for s in section {
        let entry = node.entry(s.to_string()).or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        let Value::Object(next) = entry else { return };
        node = next;
    }
    node.insert(key.to_string(), value);
}

/// Runs one config command.
pub async fn run(args: ConfigArgs) -> Result<()> {
    let common = args.common.clone();
    common
        .with_hub(|rest, out| async move { command(&rest, &args.command, out).await })
        .await
}

async fn command(rest: &HubClient, verb: &ConfigCommand, out: Output) -> Result<()> {
    let value = match verb {
        ConfigCommand::Create { id, .. } => {
            let body = create_body(verb)?;
            rest.put_configuration(id, &body, None).await?
        }
        ConfigCommand::Update {
            id,
            fields,
            remove_metrics,
            remove_labels,
        } => {
            if fields.is_empty() && remove_metrics.is_empty() && remove_labels.is_empty() {
                bail!(
                    "nothing to change: give --target, --priority, --metric, --label, \
                     --remove-metric or --remove-label (settings cannot change: create a new \
                     configuration for new settings)"
                );
            }
            let current = existing(rest, id).await?;
            let body = update_body(&current, fields, remove_metrics, remove_labels)?;
            rest.put_configuration(id, &body, current["etag"].as_str())
                .await?
        }
        ConfigCommand::List { top } => rest.list_configurations(*top).await?,
        ConfigCommand::Show { id } => existing(rest, id).await?,
        ConfigCommand::Delete { id } => {
            rest.delete_configuration(id).await?;
            out.done(&format!("deleted {id}"));
            return Ok(());
        }
    };
    out.print(&value, |v| match verb {
        ConfigCommand::List { .. } => table(v.as_array().map_or(&[][..], Vec::as_slice)),
        _ => details(v),
    })
}

/// A configuration as the hub has it now, or an error that says how to find the ids.
async fn existing(rest: &HubClient, id: &str) -> Result<Value> {
    match rest.configuration(id).await? {
        Some(c) => Ok(c),
        None => bail!(
            "configuration '{id}' does not exist: `fleethub configurations list` shows the ones that do"
        ),
    }
}

/// The configuration a `create` sends: the file's, with the flags added.
fn create_body(command: &ConfigCommand) -> Result<Value> {
    let ConfigCommand::Create {
        id,
        file,
        settings,
        fields,
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
    fields.apply(obj)?;
    for s in settings {
        let (path, value) = pair("set", s)?;
        insert_at(
            obj,
            &["content", "deviceContent"],
            path,
            super::json_or_string(value),
        );
    }
    Ok(body)
}

/// The configuration an `update` sends: what the hub answered (without its counts), with the
/// flags applied. A metric or label named for removal that is not there is an error, so a
/// typo does not pass for a change.
fn update_body(
    current: &Value,
    fields: &Fields,
    remove_metrics: &[String],
    remove_labels: &[String],
) -> Result<Value> {
    let mut obj = Map::new();
    for key in ["id", "content", "targetCondition", "priority", "labels"] {
        if let Some(v) = current.get(key) {
            obj.insert(key.into(), v.clone());
        }
    }
    obj.insert(
        "metrics".into(),
        json!({"queries": current["metrics"]["queries"].as_object().cloned().unwrap_or_default()}),
    );
    let id = text(&current["id"]);
    for (section, names, what) in [
        (&["metrics", "queries"][..], remove_metrics, "metric"),
        (&["labels"][..], remove_labels, "label"),
    ] {
        for name in names {
            let mut node = Some(&mut obj);
            for s in section {
                node = node
                    .and_then(|n| n.get_mut(*s))
                    .and_then(Value::as_object_mut);
            }
            if node.and_then(|n| n.remove(name)).is_none() {
                bail!("configuration '{id}' has no {what} named '{name}'");
            }
        }
    }
    fields.apply(&mut obj)?;
    Ok(Value::Object(obj))
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
    super::table::columns(&columns, items, |c, name| match name {
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
            settings: vec![
                "properties.desired.config.telemetryIntervalSeconds=60".into(),
                "properties.desired.config.mode=eco".into(),
            ],
            fields: Fields {
                target: Some("tags.environment = 'prod'".into()),
                priority: Some(10),
                metrics: vec!["old=SELECT deviceId FROM devices WHERE tags.x = 'a=b'".into()],
                labels: vec!["team=ops".into()],
            },
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

    #[test]
    fn update_keeps_what_it_is_not_told_to_change_and_drops_the_counts() {
        let current = json!({
            "id": "eco", "schemaVersion": "1.0", "etag": "AAAAAAAAAAE=",
            "content": {"deviceContent": {"properties.desired.mode": "eco"}},
            "targetCondition": "tags.city = 'denver'", "priority": 5,
            "labels": {"team": "ops", "old": "x"},
            "systemMetrics": {"results": {"appliedCount": 1}, "queries": {}},
            "metrics": {"results": {"slow": 3}, "queries": {
                "slow": "SELECT deviceId FROM devices WHERE tags.slow = true",
                "gone": "SELECT deviceId FROM devices WHERE tags.gone = true"}},
        });
        let fields = Fields {
            priority: Some(7),
            labels: vec!["owner=field".into()],
            ..Fields::default()
        };
        let body = update_body(&current, &fields, &["gone".into()], &["old".into()]).unwrap();
        assert_eq!(
            body,
            json!({
                "id": "eco",
                "content": {"deviceContent": {"properties.desired.mode": "eco"}},
                "targetCondition": "tags.city = 'denver'", "priority": 7,
                "labels": {"team": "ops", "owner": "field"},
                "metrics": {"queries": {"slow": "SELECT deviceId FROM devices WHERE tags.slow = true"}},
            })
        );
        let typo = update_body(&current, &Fields::default(), &["slwo".into()], &[]);
        assert_eq!(
            typo.unwrap_err().to_string(),
            "configuration 'eco' has no metric named 'slwo'"
        );
    }
}
