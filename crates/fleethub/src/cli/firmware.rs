//! `fleethub firmware upload|list|show|delete|key|url`: the firmware store over REST, as tables
//! for people or `--json` for scripts.

use super::table::text;
use super::{Common, Output};
use anyhow::{Context, Result};
use base64::Engine;
use fleethub_client::{FirmwareUpload, HubClient};
use serde_json::Value;
use std::path::PathBuf;

/// `fleethub firmware` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  fleethub firmware upload app.bin --version 2.1.0 --model esp32-c3"
)]
pub struct FirmwareArgs {
    #[command(subcommand)]
    pub command: FirmwareCommand,
    #[command(flatten)]
    pub common: Common,
}

/// What to do with the firmware store.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FirmwareCommand {
    /// Upload an image; prints its SHA-256, size and signature.
    #[command(
        after_help = "Example:\n  fleethub firmware upload build/app-2.1.0.bin --version 2.1.0 --model esp32-c3,esp32-s3"
    )]
    Upload {
        /// The image file.
        file: PathBuf,
        /// Its semantic version, e.g. 2.1.0.
        #[arg(long)]
        version: String,
        /// A model it runs on (repeat, or separate with commas).
        #[arg(long = "model", required = true, value_delimiter = ',')]
        models: Vec<String>,
        /// Free text kept with the artifact.
        #[arg(long)]
        notes: Option<String>,
        /// A detached signature made offline over the manifest: DER, or its base64.
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// List every artifact.
    #[command(after_help = "Example:\n  fleethub firmware list --json")]
    List,
    /// Show one artifact (SHA-256 or version) and the bytes served per device.
    #[command(after_help = "Example:\n  fleethub firmware show 2.1.0")]
    Show { id: String },
    /// Delete an artifact nothing points at.
    #[command(after_help = "Example:\n  fleethub firmware delete 2.0.0")]
    Delete { id: String },
    /// Print the public key firmware should pin (PEM).
    #[command(after_help = "Example:\n  fleethub firmware key > firmware-signing.pub.pem")]
    Key,
    /// Mint a download URL for one device.
    #[command(
        after_help = "Example:\n  fleethub firmware url 2.1.0 --device sensor-17 --expires-in 3600"
    )]
    Url {
        id: String,
        #[arg(long)]
        device: String,
        /// Seconds the URL stays good [default: the hub's, a day].
        #[arg(long)]
        expires_in: Option<u64>,
    },
}

/// Runs one firmware command.
pub async fn run(args: FirmwareArgs) -> Result<()> {
    let common = args.common.clone();
    common
        .with_hub(|rest, out| async move { command(&rest, &args.command, out).await })
        .await
}

async fn command(rest: &HubClient, verb: &FirmwareCommand, out: Output) -> Result<()> {
    let value = match verb {
        FirmwareCommand::Upload {
            file,
            version,
            models,
            notes,
            signature,
        } => {
            let signature = signature.as_ref().map(read_signature).transpose()?;
            let upload = FirmwareUpload {
                version: version.clone(),
                models: models.clone(),
                notes: notes.clone(),
                signature,
                sha256: None,
            };
            let spinner = super::progress::spinner(format!("uploading {}", file.display()));
            let uploaded = rest.upload_firmware(file, &upload).await;
            spinner.finish_and_clear();
            let (created, artifact) = uploaded?;
            if !out.json && !created {
                eprintln!("already stored: the same version with the same bytes");
            }
            artifact
        }
        FirmwareCommand::List => rest.list_firmware().await?,
        FirmwareCommand::Show { id } => rest.firmware(id).await?,
        FirmwareCommand::Delete { id } => {
            rest.delete_firmware(id).await?;
            out.done(&format!("deleted {id}"));
            return Ok(());
        }
        FirmwareCommand::Key => {
            let key = rest.firmware_key().await?;
            if !out.json {
                print!("{}", key["publicKeyPem"].as_str().unwrap_or_default());
                return Ok(());
            }
            key
        }
        FirmwareCommand::Url {
            id,
            device,
            expires_in,
        } => rest.firmware_url(id, device, *expires_in).await?,
    };
    out.print(&value, |v| match verb {
        FirmwareCommand::List => table(v.as_array().map_or(&[][..], Vec::as_slice)),
        FirmwareCommand::Url { .. } => format!("{}\n", v["url"].as_str().unwrap_or_default()),
        _ => details(v),
    })
}

/// A signature file as the hub takes it: base64 text kept as is, raw DER encoded.
fn read_signature(path: &PathBuf) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let engine = base64::engine::general_purpose::STANDARD;
    if !text.is_empty() && engine.decode(&text).is_ok() {
        return Ok(text);
    }
    Ok(engine.encode(&bytes))
}

/// One line per artifact, in columns.
fn table(items: &[Value]) -> String {
    let columns = [
        "version",
        "models",
        "size",
        "sha256",
        "signedBy",
        "uploadedTimeUtc",
    ];
    super::table::columns(&columns, items, |a, c| text(&a[c]))
}

/// One artifact, a field per line, then its downloads.
fn details(a: &Value) -> String {
    let mut out = String::new();
    for key in [
        "id",
        "version",
        "models",
        "size",
        "sha256",
        "signature",
        "signedBy",
        "uploadedTimeUtc",
        "notes",
    ] {
        out.push_str(&format!("{key:<16}{}\n", text(&a[key])));
    }
    if let Some(downloads) = a["downloads"].as_array() {
        for d in downloads {
            out.push_str(&format!(
                "download        {} {} bytes in {} requests, last {}\n",
                text(&d["deviceId"]),
                text(&d["bytesServed"]),
                text(&d["requests"]),
                text(&d["lastRequestTimeUtc"])
            ));
        }
    }
    out
}
