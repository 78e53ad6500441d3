//! The operator CLI, `fleethub <noun> <verb>`, over the REST API through `fleethub-client`.
//!
//! Every noun is a module here with an `Args` struct (its verbs as a subcommand plus
//! [`Common`]: the hub flags and `--json`) and a `run`. A verb prints a table or a few lines for
//! people, or the hub's JSON with `--json`, through [`Output`]; anything that waits draws a
//! progress bar on stderr when stderr is a terminal ([`progress`]); a failure is turned into a
//! sentence that says what to do ([`errors`]). Every command's `--help` ends with an example
//! (a unit test walks the command tree).

pub mod configurations;
pub mod devices;
pub mod errors;
pub mod firmware;
pub mod jobs;
pub mod login;
pub mod messages;
pub mod methods;
pub mod profile;
pub mod progress;
pub mod query;
pub mod registry_file;
pub mod table;
pub mod twins;

use crate::simulate::target::{HubArgs, HubTarget};
use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use fleethub_client::HubClient;
use serde_json::Value;
use std::future::Future;

/// FleetHub: a self-hosted device-management hub that speaks Azure IoT Hub's protocols.
#[derive(Parser)]
#[command(name = "fleethub", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  fleethub serve
  fleethub login --hub \"HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=…\" --ca fleethub-data/tls/ca.pem
  fleethub devices list";

/// Every command of the binary.
#[derive(Subcommand)]
pub enum Command {
    /// Run the hub: MQTT/TLS on 8883, HTTPS (REST, WebSocket, metrics) on 443 (8443 when 443
    /// cannot be bound).
    #[command(
        after_help = "Example:\n  fleethub serve --data-dir /var/lib/fleethub --host-name hub.example.com"
    )]
    Serve(crate::ServeConfig),
    /// Run a benchmark against a fresh hub on this machine and print its figures.
    #[command(after_help = "Example:\n  fleethub bench connections --devices 10000")]
    Bench(fleethub_bench::BenchArgs),
    /// One load process of a benchmark (started by `bench`).
    #[command(hide = true)]
    BenchWorker(fleethub_bench::WorkerArgs),
    /// The night a security fix ships: an embedded hub, 2,500 simulated sensors and a phased
    /// rollout in which Boston's Wi-Fi breaks, in under three minutes. Exits 0 when the story
    /// came out as told.
    #[command(after_help = "Example:\n  fleethub demo")]
    Demo(crate::demo::DemoArgs),
    /// Simulate a fleet of virtual devices against a hub, or run a scenario file.
    #[command(
        after_help = "Example:\n  fleethub simulate --scenario examples/scenarios/canary.yaml"
    )]
    Simulate(Box<crate::simulate::SimulateArgs>),
    /// One device process of a simulation (started by `simulate --processes`).
    #[command(hide = true)]
    SimulateWorker,
    #[command(flatten)]
    Noun(Noun),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    #[command(
        after_help = "Examples:\n  fleethub completions bash > /etc/bash_completion.d/fleethub\n  \
                            fleethub completions zsh > \"${fpath[1]}/_fleethub\"\n  \
                            fleethub completions fish > ~/.config/fish/completions/fleethub.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The commands that talk to a running hub over REST.
#[derive(Subcommand)]
pub enum Noun {
    /// Save which hub to talk to (address, CA, policy key) in a 0600 profile file.
    Login(login::LoginArgs),
    /// Forget the saved profile.
    #[command(after_help = "Example:\n  fleethub logout")]
    Logout,
    /// The device registry: list, show, create, update, delete, import, export.
    Devices(devices::DevicesArgs),
    /// Device twins: show, patch, replace.
    Twins(twins::TwinsArgs),
    /// Run a query (IoT Hub's query language), following continuation pages.
    Query(query::QueryArgs),
    /// Direct methods: invoke one on a device and wait for its answer.
    Methods(methods::MethodsArgs),
    /// Cloud-to-device messages: send one.
    Messages(messages::MessagesArgs),
    /// Jobs (twin updates and method calls over many devices): create, list, show, cancel, watch.
    Jobs(jobs::JobsArgs),
    /// Configurations (automatic device management): create, update, list, show, delete.
    #[command(visible_alias = "config")]
    Configurations(configurations::ConfigArgs),
    /// The firmware store: upload, list, show, delete, key, url.
    Firmware(firmware::FirmwareArgs),
    /// Phased firmware rollouts: plan, rehearse, create, list, show, watch, and operator
    /// commands.
    #[command(
        visible_alias = "rollouts",
        after_help = "Example:\n  fleethub rollout create night-2-1-0 --file examples/rollouts/night.toml"
    )]
    Rollout(crate::rollout_cli::RolloutArgs),
}

/// Runs one REST command; a failure comes back as a sentence that says what to do.
pub async fn run(noun: Noun) -> Result<()> {
    let result = match noun {
        Noun::Login(args) => login::login(args).await,
        Noun::Logout => login::logout(),
        Noun::Devices(args) => devices::run(args).await,
        Noun::Twins(args) => twins::run(args).await,
        Noun::Query(args) => query::run(args).await,
        Noun::Methods(args) => methods::run(args).await,
        Noun::Messages(args) => messages::run(args).await,
        Noun::Jobs(args) => jobs::run(args).await,
        Noun::Configurations(args) => configurations::run(args).await,
        Noun::Firmware(args) => firmware::run(args).await,
        Noun::Rollout(args) => crate::rollout_cli::run(args).await,
    };
    result.map_err(errors::explain)
}

/// Writes the completion script for `shell` to stdout (built in memory first: clap_complete
/// panics on a write error such as a closed pipe).
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "fleethub", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// What every REST command takes besides its verb: which hub, and how to print.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Print the hub's JSON instead of a table, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Common {
    /// Connects to the hub, runs `verb` with its client and how to print, and lets go of the
    /// hub whatever the verb answered.
    pub async fn with_hub<F, Fut>(&self, verb: F) -> Result<()>
    where
        F: FnOnce(HubClient, Output) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let target = HubTarget::resolve(&self.hub, false).await?;
        let result = verb(target.rest.clone(), Output { json: self.json }).await;
        target.close();
        result
    }
}

/// How a command prints: the hub's JSON for scripts, or text for people.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json` was given.
    pub json: bool,
}

impl Output {
    /// Prints `value` as pretty JSON with `--json`, else what `human` makes of it.
    pub fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            print!("{}", human(value));
        }
        Ok(())
    }

    /// A change that answers nothing (a delete): `line` for people, `{}` for scripts.
    pub fn done(&self, line: &str) {
        if self.json {
            println!("{{}}");
        } else {
            println!("{line}");
        }
    }
}

/// `NAME=VALUE` split at the first `=`; the flag names the mistake.
pub fn pair<'a>(flag: &str, s: &'a str) -> Result<(&'a str, &'a str)> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--{flag} '{s}' must be NAME=VALUE"))
}

/// A flag's value as JSON when it parses as JSON, else as a string (`60` is a number, `eco`
/// a string, `'"60"'` the string "60").
pub fn json_or_string(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Applies one `--set tags.PATH=VALUE` or `--set desired.PATH=VALUE` (VALUE as JSON, else a
/// string) to the section it names.
pub fn set_twin_path(tags: &mut Value, desired: &mut Value, setting: &str) -> Result<()> {
    let (path, value) = pair("set", setting)?;
    let (section, rest) = match path.split_once('.') {
        Some(("tags", rest)) => (tags, rest),
        Some(("desired", rest)) => (desired, rest),
        _ => anyhow::bail!(
            "--set '{setting}': the path starts with tags. or desired. (reported properties are the device's)"
        ),
    };
    let mut node = section;
    for key in rest.split('.') {
        if key.is_empty() {
            anyhow::bail!("--set '{setting}': name a property, e.g. desired.config.interval=60");
        }
        if !node.is_object() {
            *node = Value::Object(serde_json::Map::new());
        }
        node = &mut node[key];
    }
    *node = json_or_string(value);
    Ok(())
}

/// A JSON object from a flag or a file: `@path` reads the file, anything else is JSON text.
pub fn json_arg(flag: &str, text: &str) -> Result<Value> {
    let (source, text) = match text.strip_prefix('@') {
        Some(path) => (
            path.to_string(),
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--{flag}: reading {path}: {e}"))?,
        ),
        None => (format!("--{flag}"), text.to_string()),
    };
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!("{source} is not JSON ({e}); write it like '{{\"key\": \"value\"}}'")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command a person can type shows an example at the end of its `--help`.
    #[test]
    fn every_command_has_an_example_in_its_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            let help = cmd
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            if !help.contains("Example") {
                missing.push(path.clone());
            }
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                if sub.get_name() != "help" {
                    walk(sub, &path, missing);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no example in --help: {missing:?}");
    }

    /// Every command over the REST API prints JSON for scripts with `--json`, and the nouns are
    /// there as the CLI's description in issue 13 names them.
    #[test]
    fn every_rest_command_takes_json() {
        const NOUNS: [&str; 9] = [
            "devices",
            "twins",
            "query",
            "methods",
            "messages",
            "jobs",
            "configurations",
            "firmware",
            "rollouts",
        ];
        fn leaves(cmd: &clap::Command, path: &str, out: &mut Vec<(String, bool)>) {
            let path = format!("{path} {}", cmd.get_name());
            let subs: Vec<_> = cmd
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                .collect();
            if subs.is_empty() {
                let json = cmd.get_arguments().any(|a| a.get_long() == Some("json"));
                out.push((path.clone(), json));
            }
            for sub in subs {
                leaves(sub, &path, out);
            }
        }
        let mut cli = Cli::command();
        cli.build();
        let mut commands = Vec::new();
        for noun in NOUNS {
            let cmd = cli
                .find_subcommand(noun)
                .unwrap_or_else(|| panic!("no `fleethub {noun}`"));
            leaves(cmd, "fleethub", &mut commands);
        }
        assert!(commands.len() > 35, "{commands:?}");
        let without: Vec<_> = commands.iter().filter(|(_, json)| !json).collect();
        assert!(without.is_empty(), "no --json: {without:?}");
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flag_values_read_as_json_or_text() {
        assert_eq!(json_or_string("60"), serde_json::json!(60));
        assert_eq!(json_or_string("eco"), serde_json::json!("eco"));
        assert_eq!(json_or_string("\"60\""), serde_json::json!("60"));
        assert!(json_arg("tags", "{oops")
            .unwrap_err()
            .to_string()
            .contains("--tags is not JSON"));
        assert!(pair("set", "novalue").is_err());
    }
}
