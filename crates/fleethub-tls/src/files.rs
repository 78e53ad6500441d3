//! Certificate files on disk: the hub's generated (or supplied) CA and server certificate.

use crate::{LocalCa, TlsError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// Where a server's certificate files live.
#[derive(Debug, Clone)]
pub struct CertificatePaths {
    /// The CA that devices and services trust (absent when the operator supplied a certificate).
    pub ca: Option<PathBuf>,
    /// The server certificate's chain, PEM, server first.
    pub server_cert: PathBuf,
    /// The server's private key, PEM.
    pub server_key: PathBuf,
    /// Where the listeners keep their session-ticket keys, so that devices resume across a
    /// restart (see [`crate::tickets`]); `None` keeps them in memory only.
    pub ticket_keys_dir: Option<PathBuf>,
}

/// Uses the supplied certificate, or generates (once) a CA and an ECDSA P-256 server
/// certificate in `<data_dir>/tls` with SANs localhost, 127.0.0.1, `host_name` and the machine's
/// host name.
pub fn ensure_certificates(
    data_dir: &Path,
    host_name: &str,
    supplied: Option<(PathBuf, PathBuf)>,
) -> Result<CertificatePaths, TlsError> {
    let dir = data_dir.join("tls");
    if let Some((cert, key)) = supplied {
        std::fs::create_dir_all(&dir).map_err(TlsError::file("creating", &dir))?;
        return Ok(CertificatePaths {
            ca: None,
            server_cert: cert,
            server_key: key,
            ticket_keys_dir: Some(dir),
        });
    }
    let ca = dir.join("ca.pem");
    let paths = CertificatePaths {
        ca: Some(ca.clone()),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        ticket_keys_dir: Some(dir.clone()),
    };
    if paths.server_cert.exists() && paths.server_key.exists() && ca.exists() {
        return Ok(paths);
    }
    std::fs::create_dir_all(&dir).map_err(TlsError::file("creating", &dir))?;
    generate(&dir, host_name)?;
    Ok(paths)
}

fn generate(dir: &Path, host_name: &str) -> Result<(), TlsError> {
    let ca = LocalCa::generate("FleetHub local CA")?;
    let machine = hostname::get().ok().and_then(|h| h.into_string().ok());
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for name in std::iter::once(host_name.to_string()).chain(machine) {
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    let server = ca.issue_server(host_name, &names)?;
    write_private(&dir.join("ca.key"), &ca.key_pem())?;
    write_public(&dir.join("ca.pem"), &ca.cert_pem())?;
    write_private(&dir.join("server.key"), &server.key_pem)?;
    write_public(&dir.join("server.pem"), &server.chain_pem)
}

fn write_public(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(TlsError::file("writing", path))
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(TlsError::file("writing", path))
}

/// The server certificate chain and private key that `paths` name.
pub fn load_server_certificate(
    paths: &CertificatePaths,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(TlsError::file("reading", p));
    let cert_pem = read(&paths.server_cert)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::file("parsing", &paths.server_cert))?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: paths.server_cert.clone(),
            what: "certificate",
            label: "CERTIFICATE",
        });
    }
    let key = rustls_pemfile::private_key(&mut read(&paths.server_key)?.as_slice())
        .map_err(TlsError::file("parsing", &paths.server_key))?
        .ok_or_else(|| TlsError::Missing {
            path: paths.server_key.clone(),
            what: "private key",
            label: "PRIVATE KEY",
        })?;
    Ok((certs, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_generated_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ensure_certificates(dir.path(), "hub.example", None).unwrap();
        let first = std::fs::read(&paths.server_cert).unwrap();
        let (chain, _) = load_server_certificate(&paths).unwrap();
        assert_eq!(chain.len(), 2, "server then CA");
        let again = ensure_certificates(dir.path(), "hub.example", None).unwrap();
        assert_eq!(std::fs::read(&again.server_cert).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&paths.server_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_supplied_file_without_a_key_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let generated = ensure_certificates(dir.path(), "localhost", None).unwrap();
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "not a key").unwrap();
        let supplied = ensure_certificates(
            dir.path(),
            "localhost",
            Some((generated.server_cert, empty)),
        )
        .unwrap();
        let err = load_server_certificate(&supplied).unwrap_err().to_string();
        assert!(err.contains("empty.key holds no private key"), "{err}");
        let missing = CertificatePaths {
            ca: None,
            server_cert: dir.path().join("absent.pem"),
            server_key: dir.path().join("absent.key"),
            ticket_keys_dir: None,
        };
        let err = load_server_certificate(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with("reading ") && err.contains("absent.pem"),
            "{err}"
        );
    }
}
