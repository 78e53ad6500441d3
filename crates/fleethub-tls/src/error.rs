//! What can go wrong with certificate files and TLS configurations.

use std::path::PathBuf;

/// A certificate could not be generated, read or used; each says which file or what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{action} {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no {what} ('-----BEGIN {label}-----' block)")]
    Missing {
        path: PathBuf,
        what: &'static str,
        label: &'static str,
    },
    #[error("CA PEM holds no '-----BEGIN CERTIFICATE-----' block")]
    NoCaCertificate,
    #[error("CA PEM is not readable: {0}")]
    CaPem(std::io::Error),
    #[error("CA certificate is not usable: {0}")]
    CaCertificate(rustls::Error),
    #[error("{path} is not a TLS ticket key file (lines of '<unix seconds> <64 hex digits>'); delete it and the hub writes a fresh one (devices then do one full handshake)")]
    TicketKeys { path: PathBuf },
    #[error("the system's random source failed while making a TLS ticket key")]
    Random,
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsError {
    pub(crate) fn file(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> TlsError {
        let path = path.to_path_buf();
        move |source| TlsError::File {
            action,
            path,
            source,
        }
    }
}
