//! `fleethub methods invoke`: a direct method on one device, waiting for its answer.

use super::{json_arg, Common, Output};
use anyhow::Result;
use fleethub_client::{HubClient, MethodCall};
use serde_json::{json, Value};

/// `fleethub methods` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  fleethub methods invoke sensor-17 reboot --payload '{\"delay\": 5}'"
)]
pub struct MethodsArgs {
    #[command(subcommand)]
    pub command: MethodsCommand,
    #[command(flatten)]
    pub common: Common,
}

/// What to do with direct methods.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MethodsCommand {
    /// Call a method on a connected device and print its status and payload.
    #[command(
        after_help = "Examples:\n  fleethub methods invoke sensor-17 reboot\n  \
                            fleethub methods invoke sensor-17 setInterval --payload '{\"seconds\": 30}' --response-timeout 10"
    )]
    Invoke {
        /// The device.
        id: String,
        /// The method's name.
        method: String,
        /// The payload, as JSON (or @file) [default: null].
        #[arg(long)]
        payload: Option<String>,
        /// Seconds the device has to answer (5 to 300).
        #[arg(long, default_value_t = 30)]
        response_timeout: u64,
        /// Seconds to wait for the device to connect (0: it must be connected now).
        #[arg(long, default_value_t = 0)]
        connect_timeout: u64,
    },
}

/// Runs one methods command.
pub async fn run(args: MethodsArgs) -> Result<()> {
    let common = args.common.clone();
    common
        .with_hub(|rest, out| command(rest, args.command, out))
        .await
}

async fn command(rest: HubClient, verb: MethodsCommand, out: Output) -> Result<()> {
    let MethodsCommand::Invoke {
        id,
        method,
        payload,
        response_timeout,
        connect_timeout,
    } = verb;
    let payload = match payload {
        Some(p) => json_arg("payload", &p)?,
        None => Value::Null,
    };
    let call = MethodCall {
        method_name: method.clone(),
        payload,
        response_timeout_in_seconds: response_timeout,
        connect_timeout_in_seconds: connect_timeout,
    };
    let spinner = super::progress::spinner(format!("{method} on {id}: waiting for the device"));
    let answer = rest.invoke_method(&id, &call).await;
    spinner.finish_and_clear();
    let answer = answer?;
    let value = json!({ "status": answer.status, "payload": answer.payload });
    out.print(&value, |v| {
        let payload = serde_json::to_string_pretty(&v["payload"]).unwrap_or_default();
        format!(
            "status   {}\npayload  {}\n",
            v["status"],
            payload.replace('\n', "\n         ")
        )
    })
}
