//! `fleethub firmware upload|list|show|delete|key|url`: the firmware store over REST, as tables
//! for people or `--json` for scripts.

use crate::simulate::target::{HubArgs, HubTarget};
use crate::table::text;
use anyhow::{Context, Result};
use base64::Engine;
use fleethub_client::{FirmwareUpload, HubClient};
use serde_json::Value;
use std::path::PathBuf;

/// `fleethub firmware` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct FirmwareArgs {
    #[command(subcommand)]
    pub command: FirmwareCommand,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Print the hub's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What to do with the firmware store.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FirmwareCommand {
    /// Upload an image; prints its SHA-256, size and signature.
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
    List,
    /// Show one artifact (SHA-256 or version) and the bytes served per device.
    Show { id: String },
    /// Delete an artifact nothing points at.
    Delete { id: String },
    /// Print the public key firmware should pin (PEM).
    Key,
    /// Mint a download URL for one device.
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
    let target = HubTarget::resolve(&args.hub, false).await?;
    let result = command(&target.rest, &args).await;
    target.close();
    result
}

async fn command(rest: &HubClient, args: &FirmwareArgs) -> Result<()> {
    let out = match &args.command {
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
            let (created, artifact) = rest.upload_firmware(file, &upload).await?;
            if !args.json && !created {
                eprintln!("already stored: the same version with the same bytes");
            }
            artifact
        }
        FirmwareCommand::List => rest.list_firmware().await?,
        FirmwareCommand::Show { id } => rest.firmware(id).await?,
        FirmwareCommand::Delete { id } => {
            rest.delete_firmware(id).await?;
            if !args.json {
                println!("deleted {id}");
            }
            return Ok(());
        }
        FirmwareCommand::Key => {
            let key = rest.firmware_key().await?;
            if !args.json {
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    match &args.command {
        FirmwareCommand::List => print!("{}", table(out.as_array().map_or(&[][..], Vec::as_slice))),
        FirmwareCommand::Url { .. } => println!("{}", out["url"].as_str().unwrap_or_default()),
        _ => print!("{}", details(&out)),
    }
    Ok(())
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
    crate::table::columns(&columns, items, |a, c| text(&a[c]))
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
