//! `fleethub login` and `fleethub logout`: save (or forget) which hub the CLI talks to.

use super::profile::Profile;
use crate::simulate::target::{default_ca, read_ca, HubArgs, HubTarget};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// `fleethub login` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  fleethub login --hub \"HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=…\" --ca fleethub-data/tls/ca.pem
  fleethub login --ready-file /run/fleethub/ready.json

The connection string and --ca given to a later command, or FLEETHUB_CONNECTION_STRING, still
win over the profile. The profile file is FLEETHUB_PROFILE, else
$XDG_CONFIG_HOME/fleethub/profile.json or ~/.config/fleethub/profile.json, mode 0600.")]
pub struct LoginArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Save without checking the hub answers (it may be down now).
    #[arg(long)]
    pub no_check: bool,
}

/// Checks that the hub answers with these credentials, then writes the profile.
pub async fn login(args: LoginArgs) -> Result<()> {
    let profile = profile_from(&args.hub)?;
    if !args.no_check {
        let flags = HubArgs {
            hub: Some(profile.hub.clone()),
            ready_file: None,
            ..args.hub.clone()
        };
        check(&flags, &profile).await?;
    }
    let path = profile.save()?;
    let host = profile
        .hub
        .split(';')
        .find_map(|p| p.strip_prefix("HostName="))
        .unwrap_or("the hub");
    println!(
        "logged in to {host}; saved in {} (mode 0600)",
        path.display()
    );
    Ok(())
}

/// Forgets the profile.
pub fn logout() -> Result<()> {
    let path = Profile::path()?;
    if Profile::remove()? {
        println!("removed {}", path.display());
    } else {
        println!("no profile at {}", path.display());
    }
    Ok(())
}

/// The profile the flags describe: a connection string (flag, environment or ready file) and
/// the CA's PEM copied from its file.
fn profile_from(args: &HubArgs) -> Result<Profile> {
    let (hub, ca, mqtt_port) = match (&args.ready_file, &args.hub) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading the ready file {}", file.display()))?;
            let info: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let Some(conn) = info["ownerConnectionString"].as_str() else {
                bail!("{} has no ownerConnectionString", file.display());
            };
            let ca = args
                .ca
                .clone()
                .or_else(|| info["caFile"].as_str().map(PathBuf::from));
            let mqtt = info["mqttPort"].as_u64().and_then(|p| u16::try_from(p).ok());
            (conn.to_string(), ca, mqtt)
        }
        (None, Some(conn)) => (conn.clone(), args.ca.clone().or_else(default_ca), None),
        (None, None) => bail!(
            "say which hub to save: --hub \"HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…\" \
             (printed by `fleethub serve`) with --ca <pem>, or --ready-file"
        ),
    };
    let hub = with_https_port(&hub, args.https_port);
    let ca_pem = read_ca(ca.as_deref())?
        .map(String::from_utf8)
        .transpose()
        .context("the CA file is not PEM text")?;
    Ok(Profile {
        hub,
        ca_pem,
        mqtt_port: args.mqtt_port.or(mqtt_port),
    })
}

/// The connection string with `--https-port` written into its HostName, so the profile alone
/// says where the hub is.
fn with_https_port(conn: &str, port: Option<u16>) -> String {
    let Some(port) = port else {
        return conn.to_string();
    };
    conn.split(';')
        .map(|part| match part.strip_prefix("HostName=") {
            Some(host) => {
                let (host, _) = crate::simulate::target::split_host(host);
                format!("HostName={host}:{port}")
            }
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// One signed call the policy may make whatever its rights, so a wrong key or address fails
/// here rather than at the next command.
async fn check(flags: &HubArgs, profile: &Profile) -> Result<()> {
    let ca = profile.ca_pem.clone().map(String::into_bytes);
    let flags = HubArgs {
        ca: None,
        ..flags.clone()
    };
    let target = HubTarget::connect(&flags, &profile.hub, ca)?;
    let result = target.rest.device_statistics().await;
    target.close();
    match result {
        Ok(_) => Ok(()),
        // The key is right; the policy only lacks registry read.
        Err(e) if e.status().is_some_and(|s| s.as_u16() == 403) => Ok(()),
        Err(e) => {
            Err(e).context("not saved: the hub did not accept this login (--no-check saves anyway)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_port_goes_into_the_host_name() {
        assert_eq!(
            with_https_port(
                "HostName=h:443;SharedAccessKeyName=o;SharedAccessKey=k",
                Some(8443)
            ),
            "HostName=h:8443;SharedAccessKeyName=o;SharedAccessKey=k"
        );
        assert_eq!(with_https_port("HostName=h", None), "HostName=h");
    }
}
