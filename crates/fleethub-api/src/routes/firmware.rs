//! The firmware store over `/v1/firmware`: upload (the image as the body, metadata in the query
//! or `x-firmware-*` headers), list, show, delete, the signing key, per-device download URLs,
//! and the download itself (`GET`/`HEAD …/download`, authorized by the URL, with Range). The hub
//! answers typed values; the bodies are written here.

use super::byte_range::{self, ByteRange};
use crate::auth::{Authorized, RegistryRead, RegistryWrite};
use crate::extract::{HubQuery, PathId};
use crate::{ApiError, ApiState};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{
    ACCEPT_RANGES, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE,
    RANGE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleethub_core::error::ErrorBody;
use fleethub_core::firmware::MAX_IMAGE_BYTES;
use fleethub_core::time::format_timestamp;
use fleethub_core::{ErrorCode, HubError};
use fleethub_hub::firmware::signing::ALGORITHM;
use fleethub_hub::{
    Artifact, ArtifactDetails, DeviceDownloads, DownloadGrant, Hub, MintedUrl, PublishedKey,
    UploadRequest,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Bytes read from disk and sent per body chunk.
const CHUNK: usize = 64 * 1024;

/// The firmware routes, each with its description.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(upload, list))
        .routes(routes!(key))
        .routes(routes!(show, remove))
        .routes(routes!(mint_url))
        .routes(routes!(download))
}

/// Upload metadata from the query string; each may instead come as an `x-firmware-*` header.
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// The image's semantic version, e.g. `2.1.0` (or an `x-firmware-version` header). Required.
    version: Option<String>,
    /// Comma-separated compatible models, e.g. `esp32-s3,esp32-s3-n8` (or `x-firmware-model`).
    /// Required.
    model: Option<String>,
    /// Release notes (or `x-firmware-notes`).
    notes: Option<String>,
    /// The image's SHA-256 as the uploader computed it; a mismatch refuses the upload (or
    /// `x-firmware-sha256`).
    sha256: Option<String>,
    /// An operator's detached signature of the manifest, checked on upload; without one the hub
    /// signs (or `x-firmware-signature`).
    signature: Option<String>,
}

fn header_text(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                ApiError(HubError::invalid(format!(
                    "header {name} is not ASCII text"
                )))
            })
        })
        .transpose()
}

fn upload_request(query: UploadQuery, headers: &HeaderMap) -> Result<UploadRequest, ApiError> {
    let pick = |q: Option<String>, name: &str| -> Result<Option<String>, ApiError> {
        match q {
            Some(v) => Ok(Some(v)),
            None => header_text(headers, name),
        }
    };
    let version = pick(query.version, "x-firmware-version")?.ok_or_else(|| {
        ApiError(HubError::new(
            ErrorCode::ArgumentNull,
            "an upload needs its version: ?version=2.1.0 (or an x-firmware-version header)",
        ))
    })?;
    let models = pick(query.model, "x-firmware-model")?.ok_or_else(|| {
        ApiError(HubError::new(
            ErrorCode::ArgumentNull,
            "an upload needs the models it runs on: ?model=esp32-s3[,esp32-s3-n8] (or an \
             x-firmware-model header)",
        ))
    })?;
    Ok(UploadRequest {
        version,
        models: models.split(',').map(|m| m.trim().to_string()).collect(),
        notes: pick(query.notes, "x-firmware-notes")?.unwrap_or_default(),
        sha256: pick(query.sha256, "x-firmware-sha256")?,
        signature: pick(query.signature, "x-firmware-signature")?,
    })
}

/// Uploads a firmware image.
///
/// 201 with the new artifact, or 200 with the stored one when the same
/// version and bytes were uploaded before. The body streams to a temporary file; a cut
/// connection leaves nothing.
#[utoipa::path(
    post,
    path = "/v1/firmware",
    tag = "firmware",
    params(UploadQuery),
    request_body(
        description = "The image, at most 64 MiB.",
        content_type = "application/octet-stream",
        content = Vec<u8>,
    ),
    responses(
        (status = 201, description = "Stored and signed.", body = ArtifactBody),
        (status = 200, description = "The same version and bytes were stored before.", body = ArtifactBody),
    ),
    security(("sas" = ["RegistryWrite"]), ("session" = ["RegistryWrite"])),
)]
async fn upload(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    HubQuery(query): HubQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = upload_request(query, &headers)?;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_IMAGE_BYTES) {
        return Err(ApiError(HubError::new(
            ErrorCode::MessageTooLarge,
            format!("a firmware image may be at most {MAX_IMAGE_BYTES} bytes"),
        )));
    }
    let mut upload = state.hub.begin_firmware_upload(request).await?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError(HubError::invalid(format!(
                "the upload body broke off ({e}); nothing was stored"
            )))
        })?;
        upload.write(&chunk).await?;
    }
    let uploaded = upload.finish().await?;
    let status = if uploaded.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ArtifactBody::from(uploaded.artifact))).into_response())
}

/// Every stored artifact.
#[utoipa::path(
    get,
    path = "/v1/firmware",
    tag = "firmware",
    responses((status = 200, description = "The artifacts.", body = Vec<ArtifactBody>)),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
async fn list(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
) -> Result<Json<Vec<ArtifactBody>>, ApiError> {
    let artifacts = state.hub.list_firmware().await?;
    Ok(Json(
        artifacts.into_iter().map(ArtifactBody::from).collect(),
    ))
}

/// The hub's firmware signing key, which devices check an artifact's signature against.
#[utoipa::path(
    get,
    path = "/v1/firmware/key",
    tag = "firmware",
    responses((status = 200, description = "The public key.", body = KeyBody)),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
async fn key(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
) -> Result<Json<KeyBody>, ApiError> {
    Ok(Json(KeyBody::from(state.hub.firmware_key()?)))
}

/// One artifact and the bytes served of it per device.
#[utoipa::path(
    get,
    path = "/v1/firmware/{id}",
    tag = "firmware",
    params(("id" = String, Path, description = "The artifact's id: its SHA-256.")),
    responses((status = 200, description = "The artifact.", body = DetailsBody)),
    security(("sas" = ["RegistryRead"]), ("session" = ["RegistryRead"])),
)]
async fn show(
    _: Authorized<RegistryRead>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<DetailsBody>, ApiError> {
    Ok(Json(DetailsBody::from(state.hub.get_firmware(&id).await?)))
}

/// Deletes an artifact nothing references; a referenced one is refused with what references it.
#[utoipa::path(
    delete,
    path = "/v1/firmware/{id}",
    tag = "firmware",
    params(("id" = String, Path, description = "The artifact's id: its SHA-256.")),
    responses((status = 204, description = "Deleted.")),
    security(("sas" = ["RegistryWrite"]), ("session" = ["RegistryWrite"])),
)]
async fn remove(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state.hub.delete_firmware(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct UrlQuery {
    /// The device the URL is for. Required.
    device_id: Option<String>,
    /// How long the URL stays valid (the hub's default when absent).
    expires_in_seconds: Option<u64>,
}

/// A download URL for one device, and the `desired.firmware` that carries it.
#[utoipa::path(
    post,
    path = "/v1/firmware/{id}/url",
    tag = "firmware",
    params(("id" = String, Path, description = "The artifact's id: its SHA-256."), UrlQuery),
    responses((status = 200, description = "The URL.", body = UrlBody)),
    security(("sas" = ["RegistryWrite"]), ("session" = ["RegistryWrite"])),
)]
async fn mint_url(
    _: Authorized<RegistryWrite>,
    State(state): State<ApiState>,
    PathId(id): PathId,
    HubQuery(query): HubQuery<UrlQuery>,
) -> Result<Json<UrlBody>, ApiError> {
    let device = query.device_id.ok_or_else(|| {
        ApiError(HubError::new(
            ErrorCode::ArgumentNull,
            "a download URL is for one device: add ?deviceId=…",
        ))
    })?;
    let ttl = query.expires_in_seconds.map(Duration::from_secs);
    let minted = state.hub.mint_firmware_url(&id, &device, ttl).await?;
    Ok(Json(UrlBody::from(minted)))
}

/// An artifact: `{id, version, models, size, sha256, signature, signedBy, manifest,
/// uploadedTimeUtc, notes}`, `manifest` being the canonical text the signature covers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FirmwareArtifact)]
struct ArtifactBody {
    id: String,
    version: String,
    models: Vec<String>,
    size: u64,
    sha256: String,
    signature: String,
    signed_by: String,
    manifest: String,
    uploaded_time_utc: String,
    notes: String,
}

impl From<Artifact> for ArtifactBody {
    fn from(a: Artifact) -> ArtifactBody {
        let manifest = a.manifest.canonical();
        ArtifactBody {
            id: a.manifest.sha256.clone(),
            version: a.manifest.version,
            models: a.manifest.models,
            size: a.manifest.size,
            sha256: a.manifest.sha256,
            signature: a.signature,
            signed_by: a.signed_by,
            manifest,
            uploaded_time_utc: format_timestamp(a.uploaded),
            notes: a.notes,
        }
    }
}

/// `GET /v1/firmware/{id}`: the artifact and `downloads`, the bytes served per device.
#[derive(Serialize, ToSchema)]
#[schema(as = FirmwareDetails)]
struct DetailsBody {
    #[serde(flatten)]
    artifact: ArtifactBody,
    downloads: Vec<DownloadsBody>,
}

/// What one device downloaded of an artifact.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FirmwareDownloads)]
struct DownloadsBody {
    device_id: String,
    bytes_served: u64,
    requests: u64,
    last_request_time_utc: String,
}

impl From<ArtifactDetails> for DetailsBody {
    fn from(d: ArtifactDetails) -> DetailsBody {
        let downloads = |d: DeviceDownloads| DownloadsBody {
            device_id: d.device_id,
            bytes_served: d.bytes_served,
            requests: d.requests,
            last_request_time_utc: format_timestamp(d.last_request),
        };
        DetailsBody {
            artifact: ArtifactBody::from(d.artifact),
            downloads: d.downloads.into_iter().map(downloads).collect(),
        }
    }
}

/// `GET /v1/firmware/key`: `{algorithm, keyId, publicKeyPem, manifestFormat}`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FirmwareKey)]
struct KeyBody {
    /// `ECDSA-P256-SHA256`.
    #[schema(value_type = String)]
    algorithm: &'static str,
    key_id: String,
    public_key_pem: String,
    /// The first line of every manifest the key signs.
    #[schema(value_type = String)]
    manifest_format: &'static str,
}

impl From<PublishedKey> for KeyBody {
    fn from(k: PublishedKey) -> KeyBody {
        KeyBody {
            algorithm: ALGORITHM,
            key_id: k.key_id,
            public_key_pem: k.public_key_pem,
            manifest_format: fleethub_core::firmware::manifest::MANIFEST_HEADER,
        }
    }
}

/// `{url, deviceId, expiresAt, expiryTimeUtc, desiredFirmware}`: a URL for one device, and the
/// `desired.firmware` (core's contract) that carries it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FirmwareUrl)]
struct UrlBody {
    url: String,
    device_id: String,
    expires_at: i64,
    expiry_time_utc: String,
    desired_firmware: fleethub_core::firmware::DesiredFirmware,
}

impl From<MintedUrl> for UrlBody {
    fn from(m: MintedUrl) -> UrlBody {
        UrlBody {
            url: m.url,
            device_id: m.device_id,
            expires_at: m.expiry.timestamp(),
            expiry_time_utc: format_timestamp(m.expiry),
            desired_firmware: m.desired,
        }
    }
}

/// A download URL's own query: it authorizes the download (no `Authorization` needed).
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct DownloadQuery {
    /// The device the URL was minted for.
    device_id: Option<String>,
    /// The URL's expiry, Unix seconds.
    se: Option<String>,
    /// The hub's signature over the artifact, device and expiry.
    sig: Option<String>,
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError(HubError::new(ErrorCode::FirmwareUrlForbidden, message))
}

/// Downloads an image by its URL.
///
/// The image, for the device the URL names: 200 whole, 206 for a Range, 416 past the end. Use
/// the URL exactly as `POST /v1/firmware/{id}/url` minted it.
#[utoipa::path(
    method(get, head),
    path = "/v1/firmware/{id}/download",
    tag = "firmware",
    params(
        ("id" = String, Path, description = "The artifact's id: its SHA-256."),
        DownloadQuery,
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=4096-`."),
        ("If-Range" = Option<String>, Header, description = "The artifact's ETag: the range applies only if it still matches."),
    ),
    responses(
        (status = 200, description = "The whole image.", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The range asked for.", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 416, description = "The range starts past the end.", body = ErrorBody),
    ),
    security(()),
)]
async fn download(
    State(state): State<ApiState>,
    Path(sha256): Path<String>,
    method: Method,
    headers: HeaderMap,
    query: Result<HubQuery<DownloadQuery>, ApiError>,
) -> Result<Response, ApiError> {
    let HubQuery(query) = query.map_err(|e| forbidden(e.0.message))?;
    let (Some(device), Some(se), Some(sig)) = (query.device_id, query.se, query.sig) else {
        return Err(forbidden(
            "a download URL carries deviceId, se and sig; use the URL exactly as the hub minted it",
        ));
    };
    let expiry = se
        .parse::<u64>()
        .map_err(|_| forbidden(format!("se '{se}' is not a Unix time in seconds")))?;
    let token = header_text(&headers, AUTHORIZATION.as_str())?;
    let grant = state
        .hub
        .authorize_firmware_download(&sha256, &device, expiry, &sig, token.as_deref())
        .await?;
    let etag = format!("\"{}\"", grant.sha256);
    let mut range = match header_text(&headers, RANGE.as_str())? {
        None => ByteRange::Full,
        Some(text) => byte_range::parse(&text, grant.size)
            .map_err(|m| ApiError(HubError::new(ErrorCode::InvalidRange, m)))?,
    };
    // A client holding another version of the file gets it whole (RFC 9110 §13.1.5); an
    // artifact's URL never changes meaning, so this only matters to generic HTTP clients.
    if header_text(&headers, IF_RANGE.as_str())?.is_some_and(|v| v.trim() != etag) {
        range = ByteRange::Full;
    }
    let (status, start, end) = match range {
        ByteRange::Full => (StatusCode::OK, 0, grant.size - 1),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        ByteRange::Unsatisfiable => {
            let mut response = ApiError(HubError::new(
                ErrorCode::RangeNotSatisfiable,
                format!(
                    "the range starts past the end of the {}-byte image",
                    grant.size
                ),
            ))
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", grant.size)) {
                response.headers_mut().insert(CONTENT_RANGE, v);
            }
            return Ok(response);
        }
    };
    let length = end - start + 1;
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        file_body(&state.hub, grant.clone(), start, length).await?
    };
    state.hub.firmware_request_served(&grant);
    let mut response = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, length)
        .header(ACCEPT_RANGES, "bytes")
        .header(ETAG, etag);
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(CONTENT_RANGE, format!("bytes {start}-{end}/{}", grant.size));
    }
    response.body(body).map_err(|e| {
        ApiError(HubError::new(
            ErrorCode::ServerError,
            format!("building the download response: {e}"),
        ))
    })
}

/// `length` bytes of the artifact from `start`, each counted for the device as the client takes
/// it: slices of the image the hub holds in memory for every download of it (no copy, no buffer
/// per download), or, for an image too large to hold, read from disk a chunk at a time.
async fn file_body(
    hub: &Hub,
    grant: DownloadGrant,
    start: u64,
    length: u64,
) -> Result<Body, ApiError> {
    match hub.firmware_image(&grant).await? {
        Some(image) => Ok(held_body(hub, grant, image, start, length)),
        None => disk_body(hub, grant, start, length).await,
    }
}

/// `length` bytes of `image` from `start`, in `CHUNK`-sized slices of it.
fn held_body(hub: &Hub, grant: DownloadGrant, image: Bytes, start: u64, length: u64) -> Body {
    let hub = hub.clone();
    // The range was checked against the artifact's size, which is the image's length.
    let end = (start + length).min(image.len() as u64) as usize;
    let start = start.min(end as u64) as usize;
    let slices = futures_util::stream::iter((start..end).step_by(CHUNK)).map(move |at| {
        let to = (at + CHUNK).min(end);
        hub.firmware_bytes_served(&grant, (to - at) as u64);
        Ok::<_, std::convert::Infallible>(image.slice(at..to))
    });
    Body::from_stream(slices)
}

/// `length` bytes of the artifact's file from `start`, read a chunk at a time as the client
/// takes them.
async fn disk_body(
    hub: &Hub,
    grant: DownloadGrant,
    start: u64,
    length: u64,
) -> Result<Body, ApiError> {
    let mut file = tokio::fs::File::open(&grant.path).await.map_err(|e| {
        ApiError(HubError::new(
            ErrorCode::FirmwareNotFound,
            format!("firmware {} cannot be read: {e}", grant.sha256),
        ))
    })?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError(HubError::new(ErrorCode::ServerError, e.to_string())))?;
    let reader = file.take(length);
    let hub = hub.clone();
    // The state is `None` once the file failed: the body ends with that error, never retries.
    let stream = futures_util::stream::unfold(Some(reader), move |reader| {
        let (hub, grant) = (hub.clone(), grant.clone());
        async move {
            let mut reader = reader?;
            let mut buf = vec![0u8; CHUNK];
            match reader.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    hub.firmware_bytes_served(&grant, n as u64);
                    Some((Ok(Bytes::from(buf)), Some(reader)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    Ok(Body::from_stream(stream))
}
