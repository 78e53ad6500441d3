//! The reference file server: nginx (Debian package) on loopback with TLS under the hub's own
//! certificate, serving one directory, so the firmware benchmark downloads the same file with
//! the same clients from both.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx, stopped (master and workers) when dropped.
pub struct Nginx {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx in the foreground on its own port, serving `root` over HTTPS (HTTP/1.1, as
    /// `esp_https_ota` speaks it) with `cert`/`key`, logging nothing but errors.
    pub fn start(tmp: &Path, root: &Path, cert: &Path, key: &Path) -> Result<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("nginx is not installed (apt-get install nginx-light)")?;
        let dir = tempfile::tempdir_in(tmp)?;
        let port = super::ports::free_loopback_port()?;
        let conf = dir.path().join("nginx.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process on;\nuser root;\nworker_processes auto;\n\
                 worker_rlimit_nofile 16384;\npid {d}/nginx.pid;\nerror_log {d}/error.log error;\n\
                 events {{ worker_connections 8192; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 100000;\n\
                   client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                   fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
                   scgi_temp_path {d}/scgi;\n  types {{ application/octet-stream bin; }}\n\
                   server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n\
                     ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
                     root {};\n  }}\n}}\n",
                cert.display(),
                key.display(),
                root.display()
            ),
        )?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Nginx {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx._dir.path().join("error.log"))
                    .unwrap_or_default();
                bail!("nginx exited ({status}): {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT would wait for open connections; the benchmark is done with them. The master
        // takes its workers down on SIGTERM.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
