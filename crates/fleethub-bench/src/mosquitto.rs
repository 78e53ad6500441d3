//! The reference broker: Mosquitto 2 (Debian package) on loopback with TLS, persisting nothing,
//! driven by the same clients as the hub so the two figures are side by side.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Mosquitto.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto` with a TLS listener using a freshly generated certificate.
    pub fn start(tmp: &Path) -> Result<Mosquitto> {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("mosquitto is not installed (apt-get install mosquitto)")?;
        let dir = tempfile::tempdir_in(tmp)?;
        let certs = fleethub_tls::ensure_certificates(dir.path(), "localhost", None)?;
        let port = super::ports::free_loopback_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence false\nlog_dest stderr\nlog_type error\nmax_inflight_messages 0\n\
                 listener {port} 127.0.0.1\nallow_anonymous true\ncertfile {}\nkeyfile {}\n",
                certs.server_cert.display(),
                certs.server_key.display()
            ),
        )?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let ca_file = certs.ca.context("generated certificates have a CA")?;
        Ok(Mosquitto {
            child,
            port,
            ca_file,
            _dir: dir,
        })
    }
}

impl Mosquitto {
    /// The broker's process id, for reading its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
