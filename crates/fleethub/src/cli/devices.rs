//! `fleethub devices list|show|create|update|delete`: the device registry.

use super::table::{columns, fields, text};
use super::{Common, Output};
use anyhow::{bail, Result};
use fleethub_client::HubClient;
use serde_json::{json, Value};

/// `fleethub devices` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  fleethub devices list --where \"connectionState = 'Connected'\""
)]
pub struct DevicesArgs {
    #[command(subcommand)]
    pub command: DevicesCommand,
    #[command(flatten)]
    pub common: Common,
}

/// What to do with the registry.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DevicesCommand {
    /// List devices (all, or those a query condition selects), a page at a time.
    #[command(after_help = "Examples:\n  fleethub devices list\n  \
                            fleethub devices list --where \"tags.city = 'boston'\" --limit 50 --json")]
    List {
        /// A query condition, e.g. "tags.city = 'boston' AND connectionState = 'Connected'".
        #[arg(long = "where", value_name = "CONDITION")]
        condition: Option<String>,
        /// Stop after this many devices [default: every one].
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Create or update devices from a file with one registry entry per line: NDJSON such as
    /// {"id":"sensor-1","tags":{"site":"north"}}, or the devices.txt IoT Hub's export job wrote,
    /// in one streamed request. Good lines are applied even when others fail; running the same
    /// file again changes nothing.
    #[command(after_help = "Example:\n  fleethub devices import fleet.ndjson")]
    Import {
        /// The file ("-" reads standard input).
        file: std::path::PathBuf,
    },
    /// Write every device with its keys and twin, one per line in IoT Hub's export format.
    #[command(after_help = "Example:\n  fleethub devices export --output devices.txt")]
    Export {
        /// Where to write [default: standard output].
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Show one device's registry entry.
    #[command(after_help = "Example:\n  fleethub devices show sensor-17")]
    Show { id: String },
    /// Register a device; a SAS device gets generated keys unless given, and its connection
    /// string is printed.
    #[command(after_help = "Examples:\n  fleethub devices create sensor-17\n  \
                            fleethub devices create cam-2 --auth x509 --primary-thumbprint 9F3C…\n  \
                            fleethub devices create spare-1 --status disabled --json")]
    Create {
        id: String,
        #[command(flatten)]
        settings: DeviceSettings,
    },
    /// Change a device's status or credentials; what is not named stays as it is.
    #[command(
        after_help = "Examples:\n  fleethub devices update sensor-17 --status disabled --status-reason \"stolen\"\n  \
                            fleethub devices update sensor-17 --primary-key \"$(head -c 32 /dev/urandom | base64)\""
    )]
    Update {
        id: String,
        #[command(flatten)]
        settings: DeviceSettings,
        /// Only if the device is still at this etag (what `show` printed) [default: any].
        #[arg(long)]
        etag: Option<String>,
    },
    /// Delete a device and its twin.
    #[command(after_help = "Example:\n  fleethub devices delete sensor-17")]
    Delete {
        id: String,
        /// Only if the device is still at this etag [default: any].
        #[arg(long)]
        etag: Option<String>,
    },
}

/// Registry settings a create or update may give.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeviceSettings {
    /// How the device authenticates [create's default: sas].
    #[arg(long, value_enum)]
    pub auth: Option<AuthKind>,
    /// `enabled` or `disabled` (a disabled device cannot connect).
    #[arg(long, value_parser = ["enabled", "disabled"])]
    pub status: Option<String>,
    /// Why the status is what it is (free text).
    #[arg(long)]
    pub status_reason: Option<String>,
    /// A SAS device's primary key (base64) [default: generated].
    #[arg(long)]
    pub primary_key: Option<String>,
    /// A SAS device's secondary key (base64) [default: generated].
    #[arg(long)]
    pub secondary_key: Option<String>,
    /// A self-signed X.509 device's certificate thumbprint (SHA-1 or SHA-256, hex).
    #[arg(long)]
    pub primary_thumbprint: Option<String>,
    /// A second thumbprint, for rolling certificates.
    #[arg(long)]
    pub secondary_thumbprint: Option<String>,
}

/// How a device proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthKind {
    /// Symmetric keys and SAS tokens.
    Sas,
    /// A self-signed certificate, known by its thumbprint.
    X509,
    /// A certificate signed by a CA uploaded to the hub.
    Ca,
}

/// Runs one devices command.
pub async fn run(args: DevicesArgs) -> Result<()> {
    args.common
        .clone()
        .with_hub(|rest, out| command(rest, args.command, out))
        .await
}

async fn command(rest: HubClient, command: DevicesCommand, out: Output) -> Result<()> {
    match command {
        DevicesCommand::List { condition, limit } => {
            let query = match condition {
                Some(c) => format!("SELECT * FROM devices WHERE {c}"),
                None => "SELECT * FROM devices".to_string(),
            };
            let devices = super::query::collect(&rest, &query, limit).await?;
            out.print(&Value::Array(devices), |v| {
                list_table(v.as_array().map_or(&[][..], Vec::as_slice))
            })
        }
        DevicesCommand::Import { file } => {
            super::registry_file::import(&rest, &file, out.json).await
        }
        DevicesCommand::Export { output } => {
            super::registry_file::export(&rest, output.as_ref()).await
        }
        DevicesCommand::Show { id } => {
            let device = must_exist(&rest, &id).await?;
            out.print(&device, details)
        }
        DevicesCommand::Create { id, settings } => {
            if rest.device(&id).await?.is_some() {
                bail!("device '{id}' already exists: `fleethub devices update {id}` changes it");
            }
            let body = apply(json!({ "deviceId": id }), &settings)?;
            let device = rest.put_device(&id, &body).await?;
            let host = device_host(&rest);
            out.print(&device, |d| {
                let mut text = details(d);
                let key = d
                    .pointer("/authentication/symmetricKey/primaryKey")
                    .and_then(Value::as_str)
                    .filter(|_| d["authentication"]["type"] == "sas");
                if let Some(key) = key {
                    text.push_str(&format!(
                        "{:<22}HostName={host};DeviceId={id};SharedAccessKey={key}\n",
                        "connection string",
                    ));
                }
                text
            })
        }
        DevicesCommand::Update { id, settings, etag } => {
            let current = must_exist(&rest, &id).await?;
            let etag = match etag {
                Some(e) => e,
                None => current["etag"].as_str().unwrap_or("*").to_string(),
            };
            let body = apply(current, &settings)?;
            let device = rest.update_device(&id, &body, &etag).await?;
            out.print(&device, details)
        }
        DevicesCommand::Delete { id, etag } => {
            must_exist(&rest, &id).await?;
            match etag {
                Some(etag) => rest.delete_device_if(&id, &etag).await?,
                None => rest.delete_device(&id).await?,
            }
            out.done(&format!("deleted {id}"));
            Ok(())
        }
    }
}

/// The device's registry entry, or an error that says how to find the registered ones.
async fn must_exist(rest: &HubClient, id: &str) -> Result<Value> {
    match rest.device(id).await? {
        Some(device) => Ok(device),
        None => {
            bail!("device '{id}' does not exist: `fleethub devices list` shows the registered ones")
        }
    }
}

/// `settings` written into a registry entry (a new one, or the one read for an update).
fn apply(mut device: Value, settings: &DeviceSettings) -> Result<Value> {
    if let Some(status) = &settings.status {
        device["status"] = json!(status);
    }
    if let Some(reason) = &settings.status_reason {
        device["statusReason"] = json!(reason);
    }
    let keys = settings.primary_key.is_some() || settings.secondary_key.is_some();
    let prints = settings.primary_thumbprint.is_some() || settings.secondary_thumbprint.is_some();
    let current = device["authentication"]["type"]
        .as_str()
        .map(str::to_string);
    let kind = match (settings.auth, current.as_deref()) {
        (Some(kind), _) => kind,
        (None, Some("selfSigned")) => AuthKind::X509,
        (None, Some("certificateAuthority")) => AuthKind::Ca,
        (None, _) if prints => AuthKind::X509,
        (None, _) => AuthKind::Sas,
    };
    match kind {
        AuthKind::Sas if prints => bail!("--primary-thumbprint is for --auth x509 devices"),
        AuthKind::X509 if keys => bail!("--primary-key is for --auth sas devices"),
        AuthKind::Ca if keys || prints => {
            bail!("a --auth ca device has neither keys nor thumbprints: its certificate's CA vouches for it")
        }
        _ => {}
    }
    let changed_kind = current.as_deref() != Some(kind_name(kind));
    let auth = &mut device["authentication"];
    if changed_kind || !auth.is_object() {
        *auth = json!({ "type": kind_name(kind) });
    }
    auth["type"] = json!(kind_name(kind));
    match kind {
        AuthKind::Sas => {
            if let Some(k) = &settings.primary_key {
                auth["symmetricKey"]["primaryKey"] = json!(k);
            }
            if let Some(k) = &settings.secondary_key {
                auth["symmetricKey"]["secondaryKey"] = json!(k);
            }
        }
        AuthKind::X509 => {
            if settings.primary_thumbprint.is_none() && changed_kind {
                bail!("an --auth x509 device needs --primary-thumbprint <hex>");
            }
            if let Some(t) = &settings.primary_thumbprint {
                auth["x509Thumbprint"]["primaryThumbprint"] = json!(t);
            }
            if let Some(t) = &settings.secondary_thumbprint {
                auth["x509Thumbprint"]["secondaryThumbprint"] = json!(t);
            }
        }
        AuthKind::Ca => {}
    }
    Ok(device)
}

fn kind_name(kind: AuthKind) -> &'static str {
    match kind {
        AuthKind::Sas => "sas",
        AuthKind::X509 => "selfSigned",
        AuthKind::Ca => "certificateAuthority",
    }
}

/// The host devices put in their connection string: the REST address's host.
fn device_host(rest: &HubClient) -> String {
    let host = rest.base().trim_start_matches("https://");
    crate::simulate::target::split_host(host).0
}

/// One line per device, in columns.
pub fn list_table(devices: &[Value]) -> String {
    let names = [
        "deviceId",
        "status",
        "connectionState",
        "authenticationType",
        "firmware",
        "lastActivityTime",
    ];
    columns(&names, devices, |d, name| match name {
        "firmware" => text(&d["properties"]["reported"]["firmware"]["current_version"]),
        other => text(&d[other]),
    })
}

/// One registry entry, a field per line.
pub fn details(d: &Value) -> String {
    fields(
        d,
        &[
            ("deviceId", "/deviceId"),
            ("status", "/status"),
            ("statusReason", "/statusReason"),
            ("connectionState", "/connectionState"),
            ("lastActivityTime", "/lastActivityTime"),
            ("authentication", "/authentication/type"),
            (
                "primaryThumbprint",
                "/authentication/x509Thumbprint/primaryThumbprint",
            ),
            ("cloudToDevice queued", "/cloudToDeviceMessageCount"),
            ("etag", "/etag"),
        ],
        22,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_build_iot_hubs_registry_entry() {
        let sas = apply(
            json!({"deviceId": "d1"}),
            &DeviceSettings {
                status: Some("disabled".into()),
                primary_key: Some("a2V5".into()),
                ..DeviceSettings::default()
            },
        )
        .unwrap();
        assert_eq!(
            sas,
            json!({"deviceId": "d1", "status": "disabled",
                   "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "a2V5"}}})
        );
        let x509 = DeviceSettings {
            primary_thumbprint: Some("AB".into()),
            ..DeviceSettings::default()
        };
        let entry = apply(json!({"deviceId": "d2"}), &x509).unwrap();
        assert_eq!(entry["authentication"]["type"], "selfSigned");
        // An update that names nothing about credentials keeps them.
        let kept = apply(entry.clone(), &DeviceSettings::default()).unwrap();
        assert_eq!(kept, entry);
        let err = apply(
            json!({}),
            &DeviceSettings {
                auth: Some(AuthKind::X509),
                ..DeviceSettings::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("--primary-thumbprint"), "{err}");
    }
}
