//! Firmware artifacts the simulator serves itself (`generate = { size = … }`): deterministic
//! blobs over HTTPS with Range requests, under a CA generated for the run that the virtual
//! devices are told to trust.

use crate::roster::splitmix64;
use crate::scenario::{Firmware, FirmwareSource};
use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fleethub_core::firmware::{sha256_hex, DesiredFirmware};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// The deterministic content of a generated artifact: the same seed and version always give
/// the same bytes.
pub fn blob(seed: u64, version: &str, size: u64) -> Vec<u8> {
    let mut state = version
        .bytes()
        .fold(splitmix64(seed), |s, b| splitmix64(s ^ u64::from(b)));
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        state = splitmix64(state);
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size as usize);
    out
}

/// A requested byte range, resolved against the blob's length.
#[derive(Debug, PartialEq)]
pub enum RangeAnswer {
    /// No (usable) Range header: the whole body, 200.
    Full,
    /// 206 with `first..=last`.
    Partial(u64, u64),
    /// 416: nothing of the blob lies in the range.
    Unsatisfiable,
}

/// Reads a `Range: bytes=…` header (one range; several are answered with the whole body,
/// which RFC 9110 allows).
pub fn parse_range(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(first), Ok(last)) if first <= last => Some((first, last.min(len.saturating_sub(1)))),
        (Ok(first), Err(_)) if b.is_empty() => Some((first, len.saturating_sub(1))),
        (Err(_), Ok(suffix)) if a.is_empty() => {
            if suffix == 0 {
                return RangeAnswer::Unsatisfiable;
            }
            Some((len.saturating_sub(suffix), len.saturating_sub(1)))
        }
        _ => None,
    };
    match parsed {
        None => RangeAnswer::Full,
        Some((first, _)) if first >= len => RangeAnswer::Unsatisfiable,
        Some((first, last)) => RangeAnswer::Partial(first, last),
    }
}

/// Bytes and requests served, for the report.
#[derive(Debug, Default)]
pub struct ServedCounters {
    pub requests: AtomicU64,
    pub range_requests: AtomicU64,
    pub bytes: AtomicU64,
}

struct Served {
    blobs: BTreeMap<String, Arc<Vec<u8>>>,
    counters: Arc<ServedCounters>,
}

/// The simulator's HTTPS file server.
pub struct FirmwareServer {
    /// The CA that signed the server's certificate (PEM): devices must trust it.
    pub ca_pem: String,
    pub counters: Arc<ServedCounters>,
    task: JoinHandle<()>,
}

impl Drop for FirmwareServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resolves every artifact of a scenario; starts the HTTPS server if any is generated.
pub async fn prepare(
    seed: u64,
    firmware: &[Firmware],
) -> Result<(Vec<DesiredFirmware>, Option<FirmwareServer>)> {
    let mut artifacts = Vec::new();
    let mut blobs = BTreeMap::new();
    for f in firmware {
        match &f.source {
            FirmwareSource::External { url, sha256, size } => artifacts.push(DesiredFirmware {
                version: f.version.clone(),
                url: url.clone(),
                sha256: sha256.clone(),
                size: *size,
                signature: None,
                models: Vec::new(),
            }),
            FirmwareSource::Generated(g) => {
                let bytes = blob(seed, &f.version, g.size);
                artifacts.push(DesiredFirmware {
                    version: f.version.clone(),
                    url: String::new(),
                    sha256: sha256_hex(&bytes),
                    size: g.size,
                    signature: None,
                    models: Vec::new(),
                });
                blobs.insert(f.version.clone(), Arc::new(bytes));
            }
        }
    }
    if blobs.is_empty() {
        return Ok((artifacts, None));
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the firmware server on 127.0.0.1")?;
    let port = listener.local_addr()?.port();
    for a in artifacts.iter_mut().filter(|a| a.url.is_empty()) {
        a.url = format!("https://127.0.0.1:{port}/firmware/{}.bin", a.version);
    }
    let (ca_pem, tls) = certificates()?;
    let counters = Arc::new(ServedCounters::default());
    let state = Arc::new(Served {
        blobs,
        counters: counters.clone(),
    });
    let router = Router::new()
        .route("/firmware/{file}", get(download))
        .with_state(state);
    let task = tokio::spawn(serve(listener, tls, router));
    Ok((
        artifacts,
        Some(FirmwareServer {
            ca_pem,
            counters,
            task,
        }),
    ))
}

/// A CA for this run and a server certificate for 127.0.0.1 and localhost signed by it.
fn certificates() -> Result<(String, TlsAcceptor)> {
    let ca = fleethub_tls::LocalCa::generate("FleetHub simulator firmware CA")?;
    let names = ["127.0.0.1".to_string(), "localhost".to_string()];
    let server = ca.issue_server("FleetHub simulator firmware", &names)?;
    let config = fleethub_tls::server_config(&server, &[b"http/1.1"])?;
    Ok((ca.cert_pem(), TlsAcceptor::from(config)))
}

async fn download(
    State(state): State<Arc<Served>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(bytes) = file
        .strip_suffix(".bin")
        .and_then(|v| state.blobs.get(v))
        .cloned()
    else {
        return (StatusCode::NOT_FOUND, format!("no firmware '{file}' here")).into_response();
    };
    let c = &state.counters;
    c.requests.fetch_add(1, Ordering::Relaxed);
    let len = bytes.len() as u64;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, first, last) = match parse_range(range, len) {
        RangeAnswer::Full => (StatusCode::OK, 0, len.saturating_sub(1)),
        RangeAnswer::Partial(a, b) => (StatusCode::PARTIAL_CONTENT, a, b),
        RangeAnswer::Unsatisfiable => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes */{len}")),
            );
            return r;
        }
    };
    if status == StatusCode::PARTIAL_CONTENT {
        c.range_requests.fetch_add(1, Ordering::Relaxed);
    }
    let body = if len == 0 {
        Vec::new()
    } else {
        bytes[first as usize..=last as usize].to_vec()
    };
    c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            header_value(format!("bytes {first}-{last}/{len}")),
        );
    }
    r
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).expect("ASCII header value")
}

async fn serve(listener: TcpListener, tls: TlsAcceptor, router: Router) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (tls, router) = (tls.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let service = TowerToHyperService::new(router);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_repeat_under_the_seed() {
        let a = blob(7, "2.1.0", 1000);
        assert_eq!(a.len(), 1000);
        assert_eq!(a, blob(7, "2.1.0", 1000));
        assert_ne!(a, blob(8, "2.1.0", 1000));
        assert_ne!(a, blob(7, "2.1.1", 1000));
        assert_eq!(&blob(7, "2.1.0", 10)[..], &a[..10]);
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeAnswer::*;
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Partial(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Partial(90, 99));
        assert_eq!(parse_range(Some("bytes=90-200"), 100), Partial(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Partial(90, 99));
        assert_eq!(parse_range(Some("bytes=-500"), 100), Partial(0, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), Full);
    }

    #[tokio::test]
    async fn the_server_answers_ranges_over_tls_that_its_ca_vouches_for() {
        let fw = Firmware {
            version: "2.1.0".into(),
            source: FirmwareSource::Generated(crate::scenario::Generate { size: 5000 }),
        };
        let (artifacts, server) = prepare(3, &[fw]).await.unwrap();
        let server = server.unwrap();
        let a = &artifacts[0];
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let full = client.get(&a.url).send().await.unwrap();
        assert_eq!(full.status(), 200);
        let body = full.bytes().await.unwrap();
        assert_eq!(body.len(), 5000);
        assert_eq!(sha256_hex(&body), a.sha256);
        let part = client
            .get(&a.url)
            .header("Range", "bytes=4990-")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.headers()["content-range"], "bytes 4990-4999/5000");
        assert_eq!(&part.bytes().await.unwrap()[..], &body[4990..]);
        let none = client
            .get(&a.url)
            .header("Range", "bytes=6000-")
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 416);
        assert_eq!(none.headers()["content-range"], "bytes */5000");
        let missing = client
            .get(a.url.replace("2.1.0", "9.9.9"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(server.counters.bytes.load(Ordering::Relaxed), 5010);
    }
}
