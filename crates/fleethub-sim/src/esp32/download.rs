//! Fetching a firmware image over HTTPS the way ESP-IDF's `esp_https_ota` does with partial
//! downloads (the request sequence is core's `firmware::download`): a probe for the length
//! (`HEAD`, or `Range: bytes=0-0` when HEAD does not say), then ranged requests of 64 KiB
//! (`bytes=a-b`, the last one open-ended), and after a dropped link or a power loss one
//! `bytes=N-` from the bytes already in flash. Throttled to the group's bandwidth cap in simulated time. Runs as its own task so
//! the device keeps answering methods meanwhile; dropping the [`Download`] stops it at once.

use super::clock::{secs, SimClock};
use bytes::Bytes;
use fleethub_core::firmware::download::{range_requests, RangeRequest, PROBE_RANGE};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A chunk must arrive within this real time, or the attempt fails.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// The most of an error body quoted in a device's report.
const MAX_QUOTED: usize = 300;

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

impl Request {
    /// The URL without its query (a hub's URL carries a signature nobody needs to read).
    fn short_url(&self) -> &str {
        self.url.split('?').next().unwrap_or(&self.url)
    }
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

/// Downloads a whole image exactly as a device does (probe, ranged chunks), without a device:
/// the bytes are counted and dropped. For benchmarks of a firmware server.
pub async fn fetch_image(http: &reqwest::Client, url: &str, size: u64) -> Result<u64, String> {
    let (tx, mut rx) = mpsc::channel(4);
    let req = Request {
        url: url.to_string(),
        offset: 0,
        size,
        bandwidth_bytes_per_s: None,
    };
    let clock = SimClock::new(1.0);
    let fetching = async move { fetch(http, &clock, &req, &tx).await };
    let counting = async {
        let mut received = 0u64;
        while let Some(Fetched::Data(data)) = rx.recv().await {
            received += data.len() as u64;
        }
        received
    };
    let (fetched, received) = tokio::join!(fetching, counting);
    fetched?;
    if received == size {
        Ok(received)
    } else {
        Err(format!("received {received} of {size} bytes"))
    }
}

async fn fetch(
    http: &reqwest::Client,
    clock: &SimClock,
    req: &Request,
    tx: &mpsc::Sender<Fetched>,
) -> Result<(), String> {
    probe(http, req).await?;
    for range in range_requests(req.offset, req.size) {
        if !get_range(http, clock, req, range, tx).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends a request with a deadline; the error names what was asked.
async fn send(builder: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response, String> {
    tokio::time::timeout(CHUNK_TIMEOUT, builder.send())
        .await
        .map_err(|_| format!("{what} got no answer within {CHUNK_TIMEOUT:?}"))?
        .map_err(|e| format!("{what} failed: {e}"))
}

/// An answer that is not the image: the status and what the server said, for the report.
async fn refused(resp: reqwest::Response, what: &str) -> String {
    let status = resp.status();
    let body = tokio::time::timeout(CHUNK_TIMEOUT, resp.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let said = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("Message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or(body);
    let said: String = said.chars().take(MAX_QUOTED).collect();
    if said.trim().is_empty() {
        format!("{what} answered HTTP {status}")
    } else {
        format!("{what} answered HTTP {status}: {said}")
    }
}

/// The image's length as the server states it: `HEAD`, or `Range: bytes=0-0` when HEAD does not
/// answer 200 with a Content-Length; it must be the size `desired.firmware` names.
async fn probe(http: &reqwest::Client, req: &Request) -> Result<(), String> {
    let url = req.short_url();
    let head = send(http.head(&req.url), &format!("HEAD {url}")).await?;
    let stated = (head.status() == StatusCode::OK)
        .then(|| header_u64(&head, CONTENT_LENGTH.as_str()))
        .flatten();
    let length = if stated.is_some() {
        stated
    } else {
        let what = format!("GET {url} ({PROBE_RANGE})");
        let resp = send(http.get(&req.url).header(RANGE, PROBE_RANGE), &what).await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('/').next())
                .and_then(|n| n.trim().parse::<u64>().ok()),
            StatusCode::OK => header_u64(&resp, CONTENT_LENGTH.as_str()),
            _ => return Err(refused(resp, &what).await),
        }
    };
    match length {
        Some(n) if n == req.size => Ok(()),
        Some(n) => Err(format!(
            "{url} serves {n} bytes, but desired.firmware.size is {}",
            req.size
        )),
        None => Err(format!("{url} did not say how long the image is")),
    }
}

fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Fetches one range and hands its bytes to the device; false when the device stopped
/// listening.
async fn get_range(
    http: &reqwest::Client,
    clock: &SimClock,
    req: &Request,
    range: RangeRequest,
    tx: &mpsc::Sender<Fetched>,
) -> Result<bool, String> {
    let (first, header) = (range.first, range.header());
    let what = format!("GET {} ({header})", req.short_url());
    let mut resp = send(http.get(&req.url).header(RANGE, &header), &what).await?;
    // A server that ignores Range sends the whole image: skip what is already in flash.
    let mut skip = match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            check_content_range(&resp, first)?;
            0
        }
        StatusCode::OK => first,
        _ => return Err(refused(resp, &what).await),
    };
    let mut remaining = range.end(req.size).saturating_sub(first);
    while remaining > 0 {
        let chunk = tokio::time::timeout(CHUNK_TIMEOUT, resp.chunk())
            .await
            .map_err(|_| format!("{what} stalled for {CHUNK_TIMEOUT:?}"))?
            .map_err(|e| format!("{what} broke off: {e}"))?;
        let Some(mut chunk) = chunk else {
            return Err(format!("{what} ended {remaining} bytes short"));
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
            return Ok(false);
        }
    }
    Ok(true)
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
