//! The registry as a file: a streamed import (`POST /v1/devices/import`) of newline-delimited
//! registry entries and a streamed export (`GET /v1/devices/export`), neither held in memory.

use crate::{ClientError, HubClient};
use futures_util::{Stream, StreamExt};
use reqwest::Method;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long one import or export may take: a million devices at a few thousand a second.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Bytes read from the file per body chunk.
const CHUNK: usize = 64 * 1024;

/// How far a streamed import has got, updated as the body is sent; a progress bar reads it.
#[derive(Debug, Default)]
pub struct ImportProgress {
    /// Bytes of the file handed to the connection.
    pub bytes_sent: AtomicU64,
    /// Newlines among them.
    pub lines_sent: AtomicU64,
}

impl HubClient {
    /// Imports the registry entries in `file` (one JSON object per line: hand-written NDJSON or
    /// IoT Hub's export `devices.txt`) in one streamed request; answers the hub's report
    /// (`created`, `updated`, `unchanged`, `failed`, and `errors` with line numbers).
    pub async fn import_devices_file(
        &self,
        file: &Path,
        progress: Arc<ImportProgress>,
    ) -> Result<Value, ClientError> {
        let opened = tokio::fs::File::open(file).await;
        let handle = opened.map_err(|e| ClientError::Local(format!("{}: {e}", file.display())))?;
        let length = handle.metadata().await.map(|m| m.len()).ok();
        self.import_devices(handle, length, progress).await
    }

    /// Imports registry entries read from `source` (see [`HubClient::import_devices_file`]);
    /// `length`, when known, is sent as the body's length.
    pub async fn import_devices(
        &self,
        source: impl AsyncRead + Send + Unpin + 'static,
        length: Option<u64>,
        progress: Arc<ImportProgress>,
    ) -> Result<Value, ClientError> {
        self.import_stream(read_chunks(source, Some(progress)), length)
            .await
    }

    /// Imports registry entries from a stream of body chunks, as it yields them.
    pub async fn import_stream(
        &self,
        chunks: impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
        length: Option<u64>,
    ) -> Result<Value, ClientError> {
        let what = "POST /v1/devices/import";
        let mut req = self
            .http
            .post(format!("{}/v1/devices/import", self.base))
            .timeout(TRANSFER_TIMEOUT)
            .header("Authorization", self.token()?)
            .header("Content-Type", "application/x-ndjson")
            .body(reqwest::Body::wrap_stream(chunks));
        if let Some(length) = length {
            req = req.header("Content-Length", length);
        }
        let reply = crate::send_request(req, what).await?;
        reply.ok(what)
    }

    /// Writes every device, in IoT Hub's export format (one JSON object per line, by id), to
    /// `out` as the hub streams it; answers how many lines were written.
    pub async fn export_devices(
        &self,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        let what = "GET /v1/devices/export";
        let transport = |source| ClientError::Transport {
            what: what.into(),
            source,
        };
        let resp = self
            .http
            .request(Method::GET, format!("{}/v1/devices/export", self.base))
            .timeout(TRANSFER_TIMEOUT)
            .header("Authorization", self.token()?)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            return crate::read_reply(resp, what).await?.ok(what).map(|_| 0);
        }
        let mut body = resp.bytes_stream();
        let mut lines = 0u64;
        let local = |e: std::io::Error| ClientError::Local(format!("writing the export: {e}"));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(transport)?;
            lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            out.write_all(&chunk).await.map_err(local)?;
        }
        out.flush().await.map_err(local)?;
        Ok(lines)
    }
}

/// `source` as body chunks, counted into `progress` (when given) as they are taken.
pub(crate) fn read_chunks(
    source: impl AsyncRead + Send + Unpin + 'static,
    progress: Option<Arc<ImportProgress>>,
) -> impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(source), move |source| {
        let progress = progress.clone();
        async move {
            let mut source = source?;
            let mut buf = vec![0u8; CHUNK];
            match source.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    if let Some(progress) = &progress {
                        let newlines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
                        progress.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                        progress.lines_sent.fetch_add(newlines, Ordering::Relaxed);
                    }
                    Some((Ok(bytes::Bytes::from(buf)), Some(source)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    })
}
