//! Which hub the simulation runs against: one named by a service connection string, one whose
//! `serve --ready-file` we read, or a hub started in this process on ephemeral ports.

use anyhow::{anyhow, bail, Context, Result};
use fleethub_client::HubClient;
use fleethub_core::connection_string::ConnectionString;
use fleethub_scenario::processes::ConnectPlan;
use std::path::{Path, PathBuf};

/// Flags that say where the hub is. They are global: a command with verbs (`fleethub firmware`)
/// takes them before or after its verb.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HubArgs {
    /// The hub's service connection string
    /// (`HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…`). Scenarios without it
    /// (and without --ready-file) start a hub in this process.
    #[arg(long, env = "FLEETHUB_CONNECTION_STRING", global = true)]
    pub hub: Option<String>,
    /// The JSON file `fleethub serve --ready-file` wrote: connection string, CA and ports.
    #[arg(long, conflicts_with = "hub", global = true)]
    pub ready_file: Option<PathBuf>,
    /// The CA (PEM) the hub's certificate chains to [default: the ready file's, else
    /// $FLEETHUB_DATA_DIR/tls/ca.pem or ./fleethub-data/tls/ca.pem].
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// The hub's MQTT/TLS port [default: the ready file's, else 8883].
    #[arg(long, global = true)]
    pub mqtt_port: Option<u16>,
    /// The hub's HTTPS (REST) port [default: the port in HostName, else 443].
    #[arg(long, global = true)]
    pub https_port: Option<u16>,
    /// The address devices dial [default: HostName's host; localhost dials 127.0.0.1].
    #[arg(long, global = true)]
    pub mqtt_host: Option<String>,
}

/// The hub a run talks to.
pub struct HubTarget {
    pub rest: HubClient,
    /// Where devices connect (trusting only the hub's CA so far).
    pub connect: ConnectPlan,
    /// For the report: `embedded hub` or the HostName.
    pub description: String,
    /// True when this process started the hub (and devices must be registered).
    pub embedded: bool,
    hub: Option<(crate::RunningHub, tempfile::TempDir)>,
}

impl HubTarget {
    /// Resolves the flags; with neither --hub nor --ready-file, the profile `fleethub login`
    /// saved, else (when `embed_allowed`) a hub started in this process. A scenario run
    /// (`embed_allowed`) never reads the profile: it is self-contained unless told a hub.
    pub async fn resolve(args: &HubArgs, embed_allowed: bool) -> Result<HubTarget> {
        if let Some(file) = &args.ready_file {
            return Self::from_ready_file(args, file);
        }
        if let Some(conn) = &args.hub {
            let ca = match args.ca.clone().or_else(default_ca) {
                Some(path) => read_ca(Some(&path))?,
                None => profile_ca_for(conn)?,
            };
            return Self::external(args, conn, ca, None);
        }
        if embed_allowed {
            return Self::embedded_with(|_| {}).await;
        }
        match crate::cli::profile::Profile::load()? {
            Some(profile) => {
                let ca = match &args.ca {
                    Some(path) => read_ca(Some(path))?,
                    None => profile.ca_pem.clone().map(String::into_bytes),
                };
                Self::external(args, &profile.hub, ca, profile.mqtt_port)
            }
            None => bail!(
                "say which hub: --hub \"HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…\" \
                 (printed by `fleethub serve`), --ready-file, or save it once with `fleethub login`"
            ),
        }
    }

    fn from_ready_file(args: &HubArgs, file: &Path) -> Result<HubTarget> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the ready file {}", file.display()))?;
        let info: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        let conn = info["ownerConnectionString"]
            .as_str()
            .ok_or_else(|| anyhow!("{} has no ownerConnectionString", file.display()))?;
        let ca = args
            .ca
            .clone()
            .or_else(|| info["caFile"].as_str().map(PathBuf::from));
        let mqtt = args.mqtt_port.or_else(|| {
            info["mqttPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
        });
        Self::external(args, conn, read_ca(ca.as_deref())?, mqtt)
    }

    /// A hub named by a connection string, trusted by `ca_pem`.
    pub fn connect(args: &HubArgs, conn: &str, ca_pem: Option<Vec<u8>>) -> Result<HubTarget> {
        Self::external(args, conn, ca_pem, None)
    }

    fn external(
        args: &HubArgs,
        conn: &str,
        ca_pem: Option<Vec<u8>>,
        mqtt_port: Option<u16>,
    ) -> Result<HubTarget> {
        let cs = ConnectionString::parse(conn).map_err(|e| anyhow!("--hub: {e}"))?;
        let (host, port_in_name) = split_host(&cs.host_name);
        let https_port = args.https_port.or(port_in_name).unwrap_or(443);
        let Some(ca_pem) = ca_pem else {
            bail!("no CA to trust the hub with: pass --ca <pem> (`fleethub serve` prints its CA path)");
        };
        let rest = HubClient::from_connection_string(
            &cs,
            format!("https://{host}:{https_port}"),
            Some(&ca_pem),
        )?;
        let connect = ConnectPlan {
            host: args.mqtt_host.clone().unwrap_or_else(|| dial_host(&host)),
            port: args.mqtt_port.or(mqtt_port).unwrap_or(8883),
            hub_host_name: host,
            trust_pem: String::from_utf8(ca_pem).context("the CA PEM is not text")?,
            firmware_key_pem: None,
            sas_lifetime_secs: None,
        };
        Ok(HubTarget {
            description: format!("hub {}", cs.host_name),
            rest,
            connect,
            embedded: false,
            hub: None,
        })
    }

    /// A hub started in this process on ephemeral ports in a temporary directory, its
    /// configuration adjusted by `configure` first.
    pub async fn embedded_with(
        configure: impl FnOnce(&mut crate::ServeConfig),
    ) -> Result<HubTarget> {
        Self::embedded_on(&tokio::runtime::Handle::current(), configure).await
    }

    /// As [`HubTarget::embedded_with`], the hub's tasks on `runtime` (`fleethub demo` gives its
    /// hub a runtime of its own, to tell the hub's CPU from the devices').
    pub async fn embedded_on(
        runtime: &tokio::runtime::Handle,
        configure: impl FnOnce(&mut crate::ServeConfig),
    ) -> Result<HubTarget> {
        let dir = tempfile::tempdir()?;
        let mut cfg = crate::ServeConfig::ephemeral(dir.path());
        cfg.plain_mqtt_port = None;
        configure(&mut cfg);
        // `start` spawns the listeners and engines on the runtime it runs on.
        let running = runtime
            .spawn(crate::start(cfg))
            .await
            .context("the embedded hub's runtime stopped")?
            .context("starting the embedded hub")?;
        let ca_file = running
            .ca_file
            .clone()
            .ok_or_else(|| anyhow!("the embedded hub has no CA file"))?;
        let args = HubArgs {
            mqtt_port: Some(running.mqtt_addr.port()),
            ..HubArgs::default()
        };
        let mut target = Self::external(
            &args,
            &running.owner_connection_string,
            read_ca(Some(&ca_file))?,
            None,
        )?;
        target.description = format!("embedded hub ({})", target.rest.base());
        target.embedded = true;
        target.hub = Some((running, dir));
        Ok(target)
    }

    /// Stops the embedded hub, if this process started one.
    pub fn close(self) {
        if let Some((running, _dir)) = self.hub {
            running.shutdown();
        }
    }
}

/// The saved profile's CA when the profile names the same hub as `conn` (a connection string
/// from the environment for another policy of the hub `fleethub login` saved).
fn profile_ca_for(conn: &str) -> Result<Option<Vec<u8>>> {
    let host = |c: &str| {
        ConnectionString::parse(c)
            .ok()
            .map(|cs| cs.host_name.to_ascii_lowercase())
    };
    let Some(profile) = crate::cli::profile::Profile::load()? else {
        return Ok(None);
    };
    if host(conn).is_some() && host(conn) == host(&profile.hub) {
        return Ok(profile.ca_pem.map(String::into_bytes));
    }
    Ok(None)
}

/// The CA file's PEM, if one is named.
pub fn read_ca(path: Option<&Path>) -> Result<Option<Vec<u8>>> {
    path.map(|p| std::fs::read(p).with_context(|| format!("reading the CA {}", p.display())))
        .transpose()
}

/// The CA `fleethub serve` generates in its default data directory, if it is there.
pub fn default_ca() -> Option<PathBuf> {
    let data = std::env::var_os("FLEETHUB_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./fleethub-data"));
    let ca = data.join("tls").join("ca.pem");
    ca.exists().then_some(ca)
}

/// `host:port` → (`host`, port).
pub fn split_host(host_name: &str) -> (String, Option<u16>) {
    match host_name.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_string(), Some(port)),
            Err(_) => (host_name.to_string(), None),
        },
        _ => (host_name.to_string(), None),
    }
}

/// "localhost" may resolve to ::1, where source addresses in 127.0.0.0/8 cannot reach: dial
/// IPv4 loopback so connections can be spread over it.
fn dial_host(host: &str) -> String {
    if host.eq_ignore_ascii_case("localhost") {
        "127.0.0.1".into()
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_split_into_host_and_port() {
        assert_eq!(
            split_host("localhost:8443"),
            ("localhost".into(), Some(8443))
        );
        assert_eq!(
            split_host("hub.example.com"),
            ("hub.example.com".into(), None)
        );
        assert_eq!(split_host("hub:x"), ("hub:x".into(), None));
        assert_eq!(dial_host("LOCALHOST"), "127.0.0.1");
        assert_eq!(dial_host("10.0.0.2"), "10.0.0.2");
    }

    #[tokio::test]
    async fn a_missing_ca_is_named_with_the_flag_that_fixes_it() {
        let args = HubArgs {
            hub: Some("HostName=h:1;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5".into()),
            ..HubArgs::default()
        };
        let err = HubTarget::external(&args, args.hub.as_deref().unwrap(), None, None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("--ca"), "{err}");
        let err = HubTarget::resolve(&HubArgs::default(), false)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("--hub"), "{err}");
    }
}
