//! The registry as a file: `POST /v1/devices/import` reads newline-delimited registry entries
//! (hand-written NDJSON, or the `devices.txt` IoT Hub's export job writes) from a streamed body
//! and applies them as it reads, and `GET /v1/devices/export` streams the registry back in IoT
//! Hub's export format. Neither holds the file in memory: the import keeps at most one line and
//! two batches, the export one page.

use crate::auth::{Authorized, RegistryRead, RegistryWrite};
use crate::{ApiError, ApiState};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleethub_core::{HubError, HubResult};
use fleethub_hub::registry::{ExportImportDevice, IMPORT_BATCH_LIMIT};
use fleethub_hub::{BulkOutcome, Hub, Twin};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinHandle;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The import and export routes, each with its description.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(import))
        .routes(routes!(export))
}

/// The longest line an import accepts: IoT Hub's twin limits (tags 8 KiB, desired and reported
/// 32 KiB each) with room for the registry entry, keys and JSON escapes.
const MAX_LINE: usize = 256 * 1024;
/// Failed lines listed in full in an import's answer; past this they are only counted, so the
/// answer stays bounded for a file of any size.
const MAX_LISTED_ERRORS: usize = 1000;
/// Devices per page of an export.
const EXPORT_PAGE: usize = 1000;

/// Imports devices from a file.
///
/// Creates or updates devices from a file, one registry entry per line: hand-written NDJSON
/// (`{"id": "sensor-1", "tags": {…}}`) or the `devices.txt` IoT Hub's export writes (and
/// `GET /v1/devices/export` answers). Entries are applied as they are read, 1,000 per store
/// write; a failed line is reported with its number and the good lines are applied. An entry
/// that matches what is stored writes nothing, so the same file sent again changes nothing.
#[utoipa::path(
    post,
    path = "/v1/devices/import",
    tag = "devices",
    request_body(
        description = "One registry entry (IoT Hub's ExportImportDevice) per line; lines up to 256 KiB.",
        content_type = "application/x-ndjson",
        content = String,
    ),
    responses((status = 200, description = "What the import did, line by line.", body = ImportReport)),
    security(("sas" = ["RegistryWrite"]), ("session" = ["RegistryWrite"])),
)]
async fn import(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    let mut import = Import::new(state.hub.clone());
    let mut lines = LineSplitter::default();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                import.finish_batches().await?;
                return Err(import
                    .stopped(HubError::format(format!("the import body broke off ({e})")))
                    .into());
            }
        };
        for line in lines.push(&chunk) {
            import.line(line).await?;
        }
    }
    if let Some(line) = lines.finish() {
        import.line(line).await?;
    }
    import.finish_batches().await?;
    Ok(Json(import.report.finished()))
}

/// One line of the body: its number (from 1) and its bytes, or the fact that it was too long.
enum Line {
    Text(u64, Vec<u8>),
    TooLong(u64),
}

/// Cuts a byte stream into lines, holding at most [`MAX_LINE`] bytes of the current one.
#[derive(Default)]
struct LineSplitter {
    current: Vec<u8>,
    /// The line number of `current`, from 0 before the first.
    number: u64,
    /// The current line passed the limit: its bytes are dropped until its newline.
    too_long: bool,
}

impl LineSplitter {
    /// The lines `chunk` completes.
    fn push(&mut self, mut chunk: &[u8]) -> Vec<Line> {
        let mut done = Vec::new();
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..end]);
            done.extend(self.end_line());
            chunk = &chunk[end + 1..];
        }
        self.take(chunk);
        done
    }

    /// The last line, when the body does not end with a newline.
    fn finish(&mut self) -> Option<Line> {
        if self.current.is_empty() && !self.too_long {
            return None;
        }
        self.end_line()
    }

    fn take(&mut self, bytes: &[u8]) {
        if self.too_long {
            return;
        }
        if self.current.len() + bytes.len() > MAX_LINE {
            self.too_long = true;
            self.current = Vec::new();
            return;
        }
        self.current.extend_from_slice(bytes);
    }

    fn end_line(&mut self) -> Option<Line> {
        self.number += 1;
        if std::mem::take(&mut self.too_long) {
            return Some(Line::TooLong(self.number));
        }
        let text = std::mem::take(&mut self.current);
        Some(Line::Text(self.number, text))
    }
}

/// An import in progress: the batch being filled, the one being written, and the report.
struct Import {
    hub: Hub,
    batch: Vec<ExportImportDevice>,
    batch_lines: Vec<u64>,
    in_flight: Option<(Vec<u64>, JoinHandle<HubResult<BulkOutcome>>)>,
    report: ImportReport,
}

impl Import {
    fn new(hub: Hub) -> Import {
        Import {
            hub,
            batch: Vec::new(),
            batch_lines: Vec::new(),
            in_flight: None,
            report: ImportReport::default(),
        }
    }

    async fn line(&mut self, line: Line) -> Result<(), HubError> {
        let (number, text) = match line {
            Line::Text(number, text) => (number, text),
            Line::TooLong(number) => {
                self.report.lines = number;
                let error = HubError::new(
                    fleethub_core::ErrorCode::MessageTooLarge,
                    format!("line is longer than {MAX_LINE} bytes; one registry entry per line"),
                );
                self.report.fail(number, None, error);
                return Ok(());
            }
        };
        self.report.lines = number;
        let text = trim(&text, number);
        if text.is_empty() {
            return Ok(());
        }
        self.report.entries += 1;
        match parse_entry(text) {
            Ok(entry) => {
                self.batch.push(entry);
                self.batch_lines.push(number);
            }
            Err((device_id, error)) => self.report.fail(number, device_id, error),
        }
        if self.batch.len() >= IMPORT_BATCH_LIMIT {
            self.send_batch().await?;
        }
        Ok(())
    }

    /// Starts writing the filled batch once the one before it is written: one batch is parsed
    /// while the other is written, and no more than two are held.
    async fn send_batch(&mut self) -> Result<(), HubError> {
        self.wait_in_flight().await?;
        let entries = std::mem::take(&mut self.batch);
        let lines = std::mem::take(&mut self.batch_lines);
        let hub = self.hub.clone();
        let write = tokio::spawn(async move { hub.import_devices(entries).await });
        self.in_flight = Some((lines, write));
        Ok(())
    }

    async fn wait_in_flight(&mut self) -> Result<(), HubError> {
        let Some((lines, write)) = self.in_flight.take() else {
            return Ok(());
        };
        let outcome = write
            .await
            .map_err(|e| HubError::server(format!("an import batch failed: {e}")))
            .and_then(|written| written);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                let first = lines.first().copied().unwrap_or_default();
                return Err(self.stopped_at(first, error));
            }
        };
        self.report.created += outcome.created as u64;
        self.report.updated += outcome.changed as u64;
        self.report.unchanged += outcome.unchanged as u64;
        for e in outcome.errors {
            let line = lines.get(e.index).copied().unwrap_or_default();
            self.report.fail(line, Some(e.device_id), e.error);
        }
        if let Some(&last) = lines.last() {
            self.report.settle_through(last);
        }
        Ok(())
    }

    /// Writes what is left and waits for every write.
    async fn finish_batches(&mut self) -> Result<(), HubError> {
        if !self.batch.is_empty() {
            self.send_batch().await?;
        }
        self.wait_in_flight().await
    }

    /// `error` ended the import at the line being read.
    fn stopped(&self, error: HubError) -> HubError {
        self.stopped_at(self.report.lines + 1, error)
    }

    /// `error` ended the import at `line`: what was applied before it stays, and the same file
    /// can be sent again.
    fn stopped_at(&self, line: u64, error: HubError) -> HubError {
        HubError::new(
            error.code,
            format!(
                "the import stopped at line {line}: {}; entries on earlier lines were applied \
                 ({} created, {} updated, {} unchanged, {} failed); send the same file again \
                 (entries already applied change nothing)",
                error.message,
                self.report.created,
                self.report.updated,
                self.report.unchanged,
                self.report.failed_before(line),
            ),
        )
    }
}

/// A line without its trailing `\r` and surrounding spaces, and the first line without a UTF-8
/// byte-order mark.
fn trim(text: &[u8], number: u64) -> &[u8] {
    let text = if number == 1 {
        text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text)
    } else {
        text
    };
    text.trim_ascii()
}

/// One line as a registry entry, or why not (with the device id, when the line names one).
fn parse_entry(text: &[u8]) -> Result<ExportImportDevice, (Option<String>, HubError)> {
    let mut value: Value = serde_json::from_slice(text)
        .map_err(|e| (None, HubError::format(format!("line is not JSON: {e}"))))?;
    // A hand-written line may name its device `deviceId`, as a twin does; IoT Hub's entry says `id`.
    if let Some(fields) = value.as_object_mut() {
        if !fields.contains_key("id") {
            if let Some(id) = fields.get("deviceId").cloned() {
                fields.insert("id".into(), id);
            }
        }
    }
    let Some(fields) = value.as_object() else {
        let error = HubError::format(
            "line is not a registry entry: expected a JSON object such as {\"id\": \"sensor-1\"}",
        );
        return Err((None, error));
    };
    let id = ["id", "deviceId"]
        .iter()
        .find_map(|k| fields.get(*k).and_then(Value::as_str))
        .map(str::to_string);
    ExportImportDevice::deserialize(&value).map_err(|e| {
        let error = HubError::format(format!("line is not a registry entry: {e}"));
        (id, error)
    })
}

/// What an import did, line by line.
#[derive(Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ImportReport {
    /// No line failed.
    is_successful: bool,
    /// Lines read (blank ones included).
    lines: u64,
    /// Lines that were not blank.
    entries: u64,
    created: u64,
    updated: u64,
    /// Entries that matched what is stored: nothing was written.
    unchanged: u64,
    failed: u64,
    /// The first 1,000 failed lines, in line order.
    errors: Vec<ImportError>,
    /// Failed lines past the first 1,000, counted only.
    errors_not_listed: u64,
    /// The lines of failures that lie in a batch not yet written (or after it): if that batch
    /// stops the import, they come after the stop line. At most two batches' worth.
    #[serde(skip)]
    unsettled: Vec<u64>,
}

/// A line that was not applied, and why.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ImportError {
    /// Its line number, from 1.
    line: u64,
    /// The device it names, when it names one.
    device_id: Option<String>,
    /// The numeric code from the error table, as a failed call's `errorCode`.
    error_code: u32,
    /// The error's name, e.g. `DeviceInvalid`.
    error_name: String,
    message: String,
}

impl ImportReport {
    fn fail(&mut self, line: u64, device_id: Option<String>, error: HubError) {
        self.failed += 1;
        self.unsettled.push(line);
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(ImportError {
                line,
                device_id,
                error_code: error.code.code(),
                error_name: error.code.name().to_string(),
                message: error.message,
            });
        }
    }

    /// Every line up to `line` has been written (or failed): its failures stay counted.
    fn settle_through(&mut self, line: u64) {
        self.unsettled.retain(|&l| l > line);
    }

    /// The failures on lines before `line`, where an import that stopped there stopped.
    fn failed_before(&self, line: u64) -> u64 {
        let after = self.unsettled.iter().filter(|&&l| l >= line).count() as u64;
        self.failed - after
    }

    /// The report as answered: errors in line order, the unlisted ones counted.
    fn finished(mut self) -> ImportReport {
        self.errors.sort_by_key(|e| e.line);
        self.is_successful = self.failed == 0;
        self.errors_not_listed = self.failed.saturating_sub(self.errors.len() as u64);
        self
    }
}

/// Exports the registry.
///
/// The whole registry in IoT Hub's export format (`devices.txt`), one device per line, streamed
/// a page at a time; `POST /v1/devices/import` reads it back whole.
#[utoipa::path(
    get,
    path = "/v1/devices/export",
    tag = "devices",
    responses((
        status = 200,
        description = "One ExportedDevice per line.",
        content_type = "application/x-ndjson",
        body = ExportLine<'static>,
    )),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
async fn export(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
) -> Result<Response, ApiError> {
    // The first page is read before answering, so a hub that cannot read answers an error.
    let first = state.hub.export_devices(None, EXPORT_PAGE).await?;
    let hub = state.hub.clone();
    let pages = futures_util::stream::unfold(Some(first), move |page| {
        let hub = hub.clone();
        async move {
            let page = page?;
            if page.is_empty() {
                return None;
            }
            let bytes = export_lines(&page);
            let next = match page.last() {
                Some(last) if page.len() == EXPORT_PAGE => {
                    let after = Some(last.device.device_id.clone());
                    match hub.export_devices(after, EXPORT_PAGE).await {
                        Ok(next) => Some(next),
                        // The body breaks off: the client sees a cut export, not a short one.
                        Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
                    }
                }
                _ => None,
            };
            Some((Ok(bytes), next))
        }
    });
    let mut response = Body::from_stream(pages).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

fn export_lines(page: &[Twin]) -> Bytes {
    let mut out = Vec::with_capacity(page.len() * 1024);
    for twin in page {
        if serde_json::to_writer(&mut out, &ExportLine::of(twin)).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

/// One device in IoT Hub's export format (`ExportImportDevice`, as its export job writes
/// `devices.txt`): the registry entry with its keys, and the twin with its metadata. An import
/// reads it back whole.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ExportedDevice)]
struct ExportLine<'a> {
    id: &'a str,
    e_tag: String,
    /// `enabled` or `disabled`.
    status: &'static str,
    status_reason: &'a Option<String>,
    /// IoT Hub's `AuthenticationMechanism`: its `type` (`sas`, `selfSigned`,
    /// `certificateAuthority`) and the keys or thumbprints.
    #[schema(value_type = Object)]
    authentication: &'a fleethub_hub::device::Authentication,
    twin_e_tag: String,
    tags: &'a serde_json::Map<String, Value>,
    properties: ExportedProperties,
    /// `{"iotEdge": false}`.
    #[schema(value_type = Object)]
    capabilities: &'a fleethub_hub::device::Capabilities,
}

/// A twin's properties with their `$metadata` and `$version`, as IoT Hub's export writes them.
#[derive(Serialize, ToSchema)]
struct ExportedProperties {
    #[schema(value_type = Object)]
    desired: Value,
    #[schema(value_type = Object)]
    reported: Value,
}

impl<'a> ExportLine<'a> {
    fn of(twin: &'a Twin) -> ExportLine<'a> {
        let d = &twin.device;
        ExportLine {
            id: &d.device_id,
            e_tag: fleethub_hub::device::etag_for(d.revision),
            status: d.status.as_str(),
            status_reason: &d.status_reason,
            authentication: &d.authentication,
            twin_e_tag: twin.etag(),
            tags: &twin.tags,
            properties: ExportedProperties {
                desired: twin.desired.to_twin_json(),
                reported: twin.reported.to_twin_json(),
            },
            capabilities: &d.capabilities,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: Vec<Line>) -> Vec<(u64, String)> {
        lines
            .into_iter()
            .map(|l| match l {
                Line::Text(n, t) => (n, String::from_utf8(t).unwrap()),
                Line::TooLong(n) => (n, "<too long>".into()),
            })
            .collect()
    }

    #[test]
    fn lines_split_across_chunks_keep_their_numbers() {
        let mut s = LineSplitter::default();
        let mut got = texts(s.push(b"{\"id\":\"a\"}\n{\"id\""));
        got.extend(texts(s.push(b":\"b\"}\r\n\n{\"id\":")));
        got.extend(texts(s.push(b"\"c\"}")));
        got.extend(texts(s.finish().into_iter().collect()));
        assert_eq!(
            got,
            [
                (1, "{\"id\":\"a\"}".to_string()),
                (2, "{\"id\":\"b\"}\r".to_string()),
                (3, String::new()),
                (4, "{\"id\":\"c\"}".to_string()),
            ]
        );
    }

    #[test]
    fn an_over_long_line_is_dropped_as_it_streams_and_the_next_line_is_read() {
        let mut s = LineSplitter::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut got = Vec::new();
        for _ in 0..8 {
            got.extend(texts(s.push(&chunk)));
            assert!(s.current.len() <= MAX_LINE);
        }
        got.extend(texts(s.push(b"\n{\"id\":\"ok\"}\n")));
        assert_eq!(
            got,
            [(1, "<too long>".into()), (2, "{\"id\":\"ok\"}".to_string())]
        );
    }

    #[test]
    fn a_stopped_import_counts_only_the_failures_before_its_stop_line() {
        let mut report = ImportReport::default();
        let bad = || HubError::format("line is not JSON");
        // Lines 1-1,000 were written (line 7 failed to parse); line 1,200 failed while the batch
        // of lines 1,001-2,000 was being filled, and line 2,300 in the batch after it.
        report.fail(7, None, bad());
        report.settle_through(1_000);
        report.fail(1_200, None, bad());
        report.fail(2_300, Some("d".into()), bad());
        assert_eq!(report.failed, 3);
        // The batch starting at line 1,001 failed whole: lines 1,200 and 2,300 are after it.
        assert_eq!(report.failed_before(1_001), 1);
        // Had it been written, the stop would be at the next batch: line 1,200 is before it.
        report.settle_through(2_000);
        assert_eq!(report.failed_before(2_001), 2);
        assert_eq!(report.unsettled, [2_300]);
    }

    #[test]
    fn a_bad_line_names_its_device_when_it_can() {
        let (id, e) = parse_entry(b"{\"id\": \"d1\", \"status\": \"sleeping\"}").unwrap_err();
        assert_eq!(id.as_deref(), Some("d1"));
        assert_eq!(e.code.name(), "IotHubFormatError");
        assert!(e.message.contains("sleeping"), "{}", e.message);
        let (id, e) = parse_entry(b"{\"id\": ").unwrap_err();
        assert_eq!(id, None);
        assert!(e.message.starts_with("line is not JSON"), "{}", e.message);
        let (_, e) = parse_entry(b"[1, 2]").unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
        let entry = parse_entry(
            b"\xEF\xBB\xBF{\"deviceId\": \"d2\"}"
                .strip_prefix(b"\xEF\xBB\xBF")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(entry.id, "d2");
        assert_eq!(trim(b"\xEF\xBB\xBF {} \r", 1), b"{}");
    }
}
