//! Fetching a firmware image over HTTPS with a Range request, throttled to the group's
//! bandwidth cap in simulated time. Runs as its own task so the device keeps answering
//! methods meanwhile; dropping the [`Download`] stops it at once.

use super::clock::{secs, SimClock};
use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A chunk must arrive within this real time, or the attempt fails.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the download task tells the device.
#[derive(Debug)]
pub(crate) enum Fetched {
    Data(Bytes),
    /// The server sent everything it was asked for.
    End,
    Failed(String),
}

/// A running download; dropping it aborts the task.
#[derive(Debug)]
pub(crate) struct Download {
    pub rx: mpsc::Receiver<Fetched>,
    task: JoinHandle<()>,
}

impl Drop for Download {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What to fetch and how fast.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub url: String,
    pub offset: u64,
    pub size: u64,
    pub bandwidth_bytes_per_s: Option<u64>,
}

/// Starts fetching bytes `offset..size` of `url`.
pub(crate) fn start(http: reqwest::Client, clock: SimClock, req: Request) -> Download {
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(async move {
        let last = match fetch(&http, &clock, &req, &tx).await {
            Ok(()) => Fetched::End,
            Err(error) => Fetched::Failed(error),
        };
        let _ = tx.send(last).await;
    });
    Download { rx, task }
}

async fn fetch(
    http: &reqwest::Client,
    clock: &SimClock,
    req: &Request,
    tx: &mpsc::Sender<Fetched>,
) -> Result<(), String> {
    let range = format!("bytes={}-{}", req.offset, req.size.saturating_sub(1));
    let send = http.get(&req.url).header(RANGE, range).send();
    let mut resp = tokio::time::timeout(CHUNK_TIMEOUT, send)
        .await
        .map_err(|_| format!("GET {} got no answer within {CHUNK_TIMEOUT:?}", req.url))?
        .map_err(|e| format!("GET {} failed: {e}", req.url))?;
    // A server that ignores Range sends the whole image: skip what is already in flash.
    let mut skip = match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            check_content_range(&resp, req.offset)?;
            0
        }
        StatusCode::OK => req.offset,
        status => return Err(format!("GET {} answered HTTP {status}", req.url)),
    };
    let mut remaining = req.size.saturating_sub(req.offset);
    while remaining > 0 {
        let chunk = tokio::time::timeout(CHUNK_TIMEOUT, resp.chunk())
            .await
            .map_err(|_| format!("GET {} stalled for {CHUNK_TIMEOUT:?}", req.url))?
            .map_err(|e| format!("GET {} broke off: {e}", req.url))?;
        let Some(mut chunk) = chunk else {
            return Err(format!(
                "GET {} ended {remaining} bytes short of the image's size",
                req.url
            ));
        };
        let dropped = skip.min(chunk.len() as u64);
        skip -= dropped;
        let _ = chunk.split_to(usize::try_from(dropped).unwrap_or(chunk.len()));
        if chunk.is_empty() {
            continue;
        }
        if chunk.len() as u64 > remaining {
            chunk.truncate(usize::try_from(remaining).unwrap_or(chunk.len()));
        }
        remaining -= chunk.len() as u64;
        if let Some(rate) = req.bandwidth_bytes_per_s.filter(|r| *r > 0) {
            clock.sleep(secs(chunk.len() as f64 / rate as f64)).await;
        }
        if tx.send(Fetched::Data(chunk)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// A 206 must start where we asked: `Content-Range: bytes {offset}-…/…`.
fn check_content_range(resp: &reqwest::Response, offset: u64) -> Result<(), String> {
    let header = resp
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let start = header
        .strip_prefix("bytes ")
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if start == Some(offset) {
        Ok(())
    } else {
        Err(format!(
            "asked for bytes from {offset}, got Content-Range '{header}'"
        ))
    }
}

/// One HTTP client per TLS configuration, shared by every device using it: a fleet of ten
/// thousand needs one connection pool, not ten thousand.
pub(crate) fn shared_client(tls: Option<&Arc<rustls::ClientConfig>>) -> Option<reqwest::Client> {
    type Cache = Vec<(Option<Arc<rustls::ClientConfig>>, reqwest::Client)>;
    static CLIENTS: Mutex<Cache> = Mutex::new(Vec::new());
    let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    let same = |cached: &Option<Arc<rustls::ClientConfig>>| match (cached, tls) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    if let Some((_, client)) = clients.iter().find(|(cached, _)| same(cached)) {
        return Some(client.clone());
    }
    let client = http_client(tls).ok()?;
    clients.push((tls.cloned(), client.clone()));
    Some(client)
}

/// An HTTP client trusting what `tls` trusts (the hub's CA, plus any the caller added).
pub fn http_client(tls: Option<&Arc<rustls::ClientConfig>>) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
    }
    builder.build()
}
