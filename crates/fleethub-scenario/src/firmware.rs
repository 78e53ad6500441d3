//! A run's firmware artifacts. Generated ones (`generate = { size = … }`, deterministic blobs)
//! are uploaded to the hub's firmware store, which signs them; each device is handed its own
//! download URL (`set_firmware`). A job's one twin patch cannot carry per-device URLs, so for
//! `${firmware:…}` in `http` steps the simulator also serves the same bytes itself, over HTTPS
//! with Range requests under a CA generated for the run that the devices are told to trust.

use crate::roster::splitmix64;
use crate::scenario::{Firmware, FirmwareSource};
use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fleethub_client::{FirmwareUpload, HubClient};
use fleethub_core::firmware::{sha256_hex, DesiredFirmware};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
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

/// Bytes and requests served by the simulator's own server.
#[derive(Debug, Default)]
pub struct ServedCounters {
    pub requests: AtomicU64,
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

/// The model generated artifacts are uploaded for: the simulated boards.
pub const SIMULATED_MODEL: &str = "esp32";

/// How long a device's download URL is good for: a hub's longest, so a slow run never outlives
/// one.
const URL_SECONDS: u64 = 7 * 24 * 3600;

/// One `[[firmware]]` artifact as the run hands it out.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// `desired.firmware` as `${firmware:…}` places it: version, SHA-256, size, and the hub's
    /// signature and models for a generated image; `url` is the external URL, or the
    /// simulator's own server's (empty when no step needs that server).
    pub desired: DesiredFirmware,
    /// The artifact's id in the hub's firmware store (its SHA-256) for a generated image:
    /// `set_firmware` gives each device a URL of its own minted by the hub.
    pub store_id: Option<String>,
}

impl Artifact {
    /// The twin patch that asks `device` for this image: with a URL the hub mints for it when
    /// the hub stores the image.
    pub async fn twin_patch(&self, hub: &HubClient, device: &str) -> Result<Value> {
        let Some(id) = &self.store_id else {
            return Ok(self.desired.twin_patch());
        };
        let minted = hub.firmware_url(id, device, Some(URL_SECONDS)).await?;
        Ok(json!({ "properties": { "desired": { "firmware": minted["desiredFirmware"] } } }))
    }
}

/// A run's artifacts, the key devices pin, and the simulator's own server if a step needs it.
pub struct PreparedFirmware {
    pub artifacts: Vec<Artifact>,
    /// The hub's firmware key (PEM) for devices to pin: `None` when the hub publishes none, or
    /// when an artifact is external (unsigned: a device pinning the key would refuse it).
    pub key_pem: Option<String>,
    pub server: Option<FirmwareServer>,
}

impl PreparedFirmware {
    /// Requests and bytes served for this run's generated artifacts: by the hub's store (since
    /// the hub started) and by the simulator's own server; `None` when there are none.
    pub async fn served(&self, hub: &HubClient) -> Option<(u64, u64)> {
        if self.server.is_none() && self.artifacts.iter().all(|a| a.store_id.is_none()) {
            return None;
        }
        let (mut requests, mut bytes) = self.server.as_ref().map_or((0, 0), |s| {
            let c = &s.counters;
            (
                c.requests.load(Ordering::Relaxed),
                c.bytes.load(Ordering::Relaxed),
            )
        });
        for id in self.artifacts.iter().filter_map(|a| a.store_id.as_ref()) {
            let Ok(shown) = hub.firmware(id).await else {
                continue;
            };
            for d in shown["downloads"].as_array().into_iter().flatten() {
                requests += d["requests"].as_u64().unwrap_or(0);
                bytes += d["bytesServed"].as_u64().unwrap_or(0);
            }
        }
        Some((requests, bytes))
    }
}

/// Resolves every artifact of a scenario: uploads the generated ones to the hub's store, and
/// starts the simulator's own server for them when `serve_locally` (a step places
/// `${firmware:…}`).
pub async fn prepare(
    seed: u64,
    firmware: &[Firmware],
    hub: &HubClient,
    serve_locally: bool,
) -> Result<PreparedFirmware> {
    let mut artifacts = Vec::new();
    let mut blobs = BTreeMap::new();
    for f in firmware {
        match &f.source {
            FirmwareSource::External { url, sha256, size } => artifacts.push(Artifact {
                desired: DesiredFirmware {
                    version: f.version.clone(),
                    url: url.clone(),
                    sha256: sha256.clone(),
                    size: *size,
                    signature: None,
                    models: Vec::new(),
                },
                store_id: None,
            }),
            FirmwareSource::Generated(g) => {
                let bytes = blob(seed, &f.version, g.size);
                artifacts.push(upload(hub, seed, &f.version, &bytes).await?);
                blobs.insert(f.version.clone(), Arc::new(bytes));
            }
        }
    }
    let external = artifacts.iter().any(|a| a.store_id.is_none());
    let key_pem = match external {
        true => None,
        false => hub
            .firmware_key()
            .await
            .ok()
            .and_then(|k| k["publicKeyPem"].as_str().map(str::to_string)),
    };
    let server = match serve_locally && !blobs.is_empty() {
        true => Some(serve(blobs, &mut artifacts).await?),
        false => None,
    };
    Ok(PreparedFirmware {
        artifacts,
        key_pem,
        server,
    })
}

/// Uploads a generated image to the hub's store; the hub signs its manifest.
async fn upload(hub: &HubClient, seed: u64, version: &str, bytes: &[u8]) -> Result<Artifact> {
    let dir = tempfile::tempdir().context("a temporary directory for generated firmware")?;
    let file = dir.path().join(format!("{version}.bin"));
    tokio::fs::write(&file, bytes)
        .await
        .with_context(|| format!("writing {}", file.display()))?;
    let request = FirmwareUpload {
        version: version.to_string(),
        models: vec![SIMULATED_MODEL.to_string()],
        notes: Some(format!("generated by fleethub simulate (seed {seed})")),
        signature: None,
        sha256: Some(sha256_hex(bytes)),
    };
    let (_, stored) = hub
        .upload_firmware(&file, &request)
        .await
        .with_context(|| {
            format!(
                "uploading generated firmware {version} to the hub's firmware store (a hub that \
             already holds {version} with other bytes refuses it: use another version or seed)"
            )
        })?;
    let text = |k: &str| stored[k].as_str().map(str::to_string);
    let models = stored["models"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Artifact {
        desired: DesiredFirmware {
            version: version.to_string(),
            url: String::new(),
            sha256: text("sha256").unwrap_or_else(|| sha256_hex(bytes)),
            size: bytes.len() as u64,
            signature: text("signature"),
            models,
        },
        store_id: text("sha256"),
    })
}

/// Starts the simulator's own HTTPS server for `blobs` and points their artifacts' `url` at it.
async fn serve(
    blobs: BTreeMap<String, Arc<Vec<u8>>>,
    artifacts: &mut [Artifact],
) -> Result<FirmwareServer> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the firmware server on 127.0.0.1")?;
    let port = listener.local_addr()?.port();
    for a in artifacts.iter_mut() {
        if blobs.contains_key(&a.desired.version) {
            a.desired.url = format!(
                "https://127.0.0.1:{port}/firmware/{}.bin",
                a.desired.version
            );
        }
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
    let task = tokio::spawn(serve_tls(listener, tls, router));
    Ok(FirmwareServer {
        ca_pem,
        counters,
        task,
    })
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

async fn serve_tls(listener: TcpListener, tls: TlsAcceptor, router: Router) {
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
        let bytes = blob(3, "2.1.0", 5000);
        let mut artifacts = vec![Artifact {
            desired: DesiredFirmware {
                version: "2.1.0".into(),
                url: String::new(),
                sha256: sha256_hex(&bytes),
                size: 5000,
                signature: None,
                models: Vec::new(),
            },
            store_id: None,
        }];
        let blobs = BTreeMap::from([("2.1.0".to_string(), Arc::new(bytes))]);
        let server = serve(blobs, &mut artifacts).await.unwrap();
        let a = &artifacts[0].desired;
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
