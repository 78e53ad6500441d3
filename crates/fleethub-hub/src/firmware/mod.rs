//! The firmware store: immutable artifacts addressed by their SHA-256 (metadata in the store,
//! bytes in files, see [`files`]), each with a manifest signed by the hub's firmware key (or by
//! the operator offline, checked on upload; see [`signing`]), delivered to devices over
//! per-device, time-limited URLs ([`urls`]) with the bytes served per device counted. Images
//! being downloaded are held once in memory for all their downloads ([`cache`]).
//!
//! Uploads, deletes and nothing else change artifacts; both take one lock, so a blob is never
//! removed while an upload of the same bytes is being recorded.

pub mod cache;
pub mod files;
pub mod signing;
pub mod urls;

use crate::events::append_change;
use crate::Hub;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fleethub_core::events::Change;
use fleethub_core::firmware::{DesiredFirmware, Manifest};
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_store::{FirmwareReads, FirmwareRow};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Where the firmware store keeps its files and keys, and how long URLs live.
#[derive(Debug, Clone)]
pub struct FirmwareConfig {
    /// The directory of artifact files (`blobs/`, `tmp/`) and the URL secret (`url.key`).
    pub dir: PathBuf,
    /// The PKCS#8 PEM signing key (ECDSA P-256).
    pub signing_key: PathBuf,
    /// Make the key when `signing_key` does not exist (the hub's own key); off when the
    /// operator named a key file, so a typo is an error rather than a new key.
    pub generate_key: bool,
    /// The start of every download URL (`https://host:port`); when `None`, the listener's
    /// address is set once it is bound ([`Hub::set_firmware_base_url`]).
    pub base_url: Option<String>,
    /// How long a minted URL is good for when the caller does not say.
    pub default_url_ttl: Duration,
    /// The longest a caller may ask for.
    pub max_url_ttl: Duration,
    /// Bytes of images held in memory for downloads ([`cache::ImageCache`]); an image over a
    /// quarter of this streams from disk.
    pub cache_bytes: u64,
}

impl FirmwareConfig {
    /// The defaults for a data directory: files in `<data>/firmware`, the key beside the CA in
    /// `<data>/tls/firmware-signing.key`, URLs good for a day (at most a week).
    pub fn in_data_dir(data_dir: &std::path::Path) -> FirmwareConfig {
        FirmwareConfig {
            dir: data_dir.join("firmware"),
            signing_key: data_dir.join("tls").join("firmware-signing.key"),
            generate_key: true,
            base_url: None,
            default_url_ttl: Duration::from_secs(24 * 3600),
            max_url_ttl: Duration::from_secs(7 * 24 * 3600),
            cache_bytes: cache::DEFAULT_CACHE_BYTES,
        }
    }
}

/// Bytes served to one device of one artifact, for `GET /v1/firmware/{id}`.
#[derive(Debug, Clone, Default)]
struct Served {
    bytes: u64,
    requests: u64,
    last_ms: i64,
}

/// Per-(artifact, device) counters kept at most: past it new pairs are counted in the metrics
/// only (a restart clears them; they watch downloads in progress, they are not records).
const MAX_SERVED_ENTRIES: usize = 100_000;

/// The firmware store's state inside the hub.
pub(crate) struct FirmwareState {
    config: FirmwareConfig,
    blobs: files::Blobs,
    key: signing::SigningKey,
    urls: urls::UrlSigner,
    base_url: RwLock<String>,
    /// Uploads' and deletes' changes to the files and rows, one at a time.
    changes: tokio::sync::Mutex<()>,
    served: Mutex<HashMap<(String, String), Served>>,
    images: cache::ImageCache,
}

impl FirmwareState {
    pub(crate) fn open(config: FirmwareConfig) -> HubResult<FirmwareState> {
        let blobs = files::Blobs::open(&config.dir)?;
        let key = signing::SigningKey::load_or_generate(&config.signing_key, config.generate_key)?;
        let urls = urls::UrlSigner::load_or_generate(&config.dir.join("url.key"))?;
        let base_url = RwLock::new(config.base_url.clone().unwrap_or_default());
        let images = cache::ImageCache::new(config.cache_bytes);
        Ok(FirmwareState {
            images,
            config,
            blobs,
            key,
            urls,
            base_url,
            changes: tokio::sync::Mutex::new(()),
            served: Mutex::new(HashMap::new()),
        })
    }
}

/// What an upload says about the bytes in its body.
#[derive(Debug, Clone, Default)]
pub struct UploadRequest {
    /// The semantic version.
    pub version: String,
    /// The compatible models (at least one).
    pub models: Vec<String>,
    /// Free text.
    pub notes: String,
    /// The SHA-256 the uploader computed; the upload fails if the bytes hash otherwise.
    pub sha256: Option<String>,
    /// A detached signature (base64 DER ECDSA P-256/SHA-256) over the manifest, made offline
    /// with the hub's key; checked, and kept instead of the hub signing.
    pub signature: Option<String>,
}

/// The longest notes accepted.
const MAX_NOTES_CHARS: usize = 4096;

/// An upload in progress: feed it the body with [`Upload::write`], then [`Upload::finish`].
/// Dropped before `finish` (a cut connection, a refused chunk), it leaves nothing behind.
pub struct Upload {
    hub: Hub,
    request: UploadRequest,
    temp: files::TempBlob,
}

/// What an upload did.
#[derive(Debug)]
pub struct Uploaded {
    /// `false` when the same version with the same bytes was already stored (a no-op).
    pub created: bool,
    /// The artifact stored.
    pub artifact: Artifact,
}

/// A stored firmware artifact: its manifest (version, models, size, SHA-256, which is also its
/// id), the signature over it and who made it, when it was uploaded and the operator's notes.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub manifest: Manifest,
    /// Base64 of the DER ECDSA P-256/SHA-256 signature over the manifest's canonical text.
    pub signature: String,
    /// `hub` (signed on upload) or `operator` (a detached signature, checked on upload).
    pub signed_by: String,
    pub uploaded: DateTime<Utc>,
    pub notes: String,
}

impl Artifact {
    fn from_row(row: &FirmwareRow) -> Artifact {
        Artifact {
            manifest: Manifest {
                version: row.version.clone(),
                models: row.models.clone(),
                size: row.size,
                sha256: row.sha256.clone(),
            },
            signature: row.signature.clone(),
            signed_by: row.signed_by.clone(),
            uploaded: DateTime::from_timestamp_millis(row.uploaded_ms).unwrap_or_default(),
            notes: row.notes.clone(),
        }
    }
}

/// An artifact and, per device that downloaded it since the hub started, the bytes served.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactDetails {
    pub artifact: Artifact,
    /// In device id order.
    pub downloads: Vec<DeviceDownloads>,
}

/// What one device fetched of one artifact since the hub started.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceDownloads {
    pub device_id: String,
    pub bytes_served: u64,
    pub requests: u64,
    pub last_request: DateTime<Utc>,
}

/// The public half of the firmware signing key, for firmware to pin.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedKey {
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub key_id: String,
    /// A `PUBLIC KEY` PEM block.
    pub public_key_pem: String,
}

/// A download URL minted for one device, and the `desired.firmware` that carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct MintedUrl {
    pub url: String,
    pub device_id: String,
    /// When the URL stops working (its `se`, to the second).
    pub expiry: DateTime<Utc>,
    pub desired: DesiredFirmware,
}

/// What a download request gets once its URL checks out: the file to serve.
#[derive(Debug, Clone)]
pub struct DownloadGrant {
    /// The artifact (its SHA-256 is also the ETag).
    pub sha256: String,
    /// Its length in bytes.
    pub size: u64,
    /// The file holding it.
    pub path: PathBuf,
    /// The device the URL was minted for.
    pub device_id: String,
}

fn invalid(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::ArgumentInvalid, message)
}

fn not_found(id: &str) -> HubError {
    HubError::new(
        ErrorCode::FirmwareNotFound,
        format!("no firmware artifact with id or version '{id}'; `GET /v1/firmware` lists them"),
    )
}

impl Hub {
    fn firmware_state(&self) -> HubResult<&Arc<FirmwareState>> {
        self.inner.firmware.as_ref().ok_or_else(|| {
            HubError::new(
                ErrorCode::ServiceUnavailable,
                "this hub runs without a firmware store (no data directory was given)",
            )
        })
    }

    /// Sets the start of download URLs when the configuration left it to the listener.
    pub fn set_firmware_base_url(&self, base: &str) {
        if let Some(state) = &self.inner.firmware {
            if state.config.base_url.is_none() {
                *state.base_url.write() = base.trim_end_matches('/').to_string();
            }
        }
    }

    /// Checks an upload's metadata and opens its temporary file; nothing is read yet.
    pub async fn begin_firmware_upload(&self, request: UploadRequest) -> HubResult<Upload> {
        let state = self.firmware_state()?;
        let mut request = request;
        request.version =
            fleethub_core::firmware::manifest::check_version(&request.version).map_err(invalid)?;
        request.models =
            fleethub_core::firmware::manifest::check_models(&request.models).map_err(invalid)?;
        if request.notes.chars().count() > MAX_NOTES_CHARS {
            return Err(invalid(format!(
                "notes may be at most {MAX_NOTES_CHARS} characters"
            )));
        }
        if let Some(sha) = &request.sha256 {
            if !fleethub_core::firmware::is_sha256_hex(sha) {
                return Err(invalid(format!(
                    "declared sha256 '{sha}' is not 64 hex digits"
                )));
            }
        }
        let temp = state.blobs.temp().await?;
        Ok(Upload {
            hub: self.clone(),
            request,
            temp,
        })
    }

    /// Every artifact, in version order.
    pub async fn list_firmware(&self) -> HubResult<Vec<Artifact>> {
        self.firmware_state()?;
        let rows = self.store().read(|r| r.list_firmware(10_000)).await?;
        Ok(rows.iter().map(Artifact::from_row).collect())
    }

    /// One artifact by SHA-256 (or by version, when exactly one artifact has it), with the bytes
    /// served to each device that downloaded it since the hub started.
    pub async fn get_firmware(&self, id: &str) -> HubResult<ArtifactDetails> {
        let state = self.firmware_state()?;
        let row = self.find_firmware(id).await?;
        let mut downloads: Vec<DeviceDownloads> = state
            .served
            .lock()
            .iter()
            .filter(|((sha, _), _)| *sha == row.sha256)
            .map(|((_, device), s)| DeviceDownloads {
                device_id: device.clone(),
                bytes_served: s.bytes,
                requests: s.requests,
                last_request: DateTime::from_timestamp_millis(s.last_ms).unwrap_or_default(),
            })
            .collect();
        downloads.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(ArtifactDetails {
            artifact: Artifact::from_row(&row),
            downloads,
        })
    }

    async fn find_firmware(&self, id: &str) -> HubResult<FirmwareRow> {
        let key = id.to_ascii_lowercase();
        let by_sha = if fleethub_core::firmware::is_sha256_hex(id) {
            self.store().read(move |r| r.get_firmware(&key)).await?
        } else {
            None
        };
        if let Some(row) = by_sha {
            return Ok(row);
        }
        let version = id.to_string();
        let mut rows = self
            .store()
            .read(move |r| r.firmware_by_version(&version))
            .await?;
        match rows.len() {
            0 => Err(not_found(id)),
            1 => Ok(rows.remove(0)),
            n => Err(invalid(format!(
                "version '{id}' names {n} artifacts (one per model build); use a SHA-256 id: {}",
                rows.iter()
                    .map(|r| r.sha256.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Deletes an artifact nothing points at; a referenced one is refused with what points at it.
    pub async fn delete_firmware(&self, id: &str) -> HubResult<()> {
        let state = self.firmware_state()?.clone();
        let _changes = state.changes.lock().await;
        let row = self.find_firmware(id).await?;
        let sha = row.sha256.clone();
        let now_ms = self.now_ms();
        self.store()
            .write(move |tx| {
                // Read in the same transaction as the delete. (A configuration's content reaches
                // twins, which are checked; a rollout's artifact is pushed later, so running and
                // paused rollouts are checked themselves.)
                let refs = tx.firmware_references(&sha, 5)?;
                if !refs.is_empty() {
                    let mut what = Vec::new();
                    if !refs.twins.is_empty() {
                        what.push(format!(
                            "the desired firmware of device(s) {}",
                            refs.twins.join(", ")
                        ));
                    }
                    if !refs.jobs.is_empty() {
                        what.push(format!("unfinished job(s) {}", refs.jobs.join(", ")));
                    }
                    if !refs.rollouts.is_empty() {
                        what.push(format!(
                            "running or paused rollout(s) {}",
                            refs.rollouts.join(", ")
                        ));
                    }
                    return Err(HubError::new(
                        ErrorCode::FirmwareInUse,
                        format!(
                            "firmware {sha} is still referenced by {}; point them at another \
                             image (or let the jobs finish, or abort the rollouts) before deleting it",
                            what.join(" and ")
                        ),
                    ));
                }
                tx.delete_firmware(&sha)?;
                let deleted = Change::FirmwareDeleted { sha256: sha };
                append_change(tx, None, &deleted, now_ms)?;
                Ok(())
            })
            .await?;
        state.blobs.remove(&row.sha256);
        state.images.forget(&row.sha256);
        state.served.lock().retain(|(sha, _), _| *sha != row.sha256);
        Ok(())
    }

    /// The public half of the firmware signing key, for firmware to pin.
    pub fn firmware_key(&self) -> HubResult<PublishedKey> {
        let state = self.firmware_state()?;
        Ok(PublishedKey {
            key_id: state.key.key_id(),
            public_key_pem: state.key.public_pem(),
        })
    }

    /// A download URL for `device_id` to fetch artifact `id`, good for `ttl` (the default when
    /// `None`), and the `desired.firmware` object that carries it.
    pub async fn mint_firmware_url(
        &self,
        id: &str,
        device_id: &str,
        ttl: Option<Duration>,
    ) -> HubResult<MintedUrl> {
        let state = self.firmware_state()?;
        let device_id = fleethub_core::DeviceId::parse(device_id)?;
        let row = self.find_firmware(id).await?;
        if self.load_device(device_id.as_str()).await?.is_none() {
            return Err(HubError::new(
                ErrorCode::DeviceNotFound,
                format!("device '{device_id}' is not registered"),
            ));
        }
        let ttl = ttl.unwrap_or(state.config.default_url_ttl);
        if ttl.is_zero() || ttl > state.config.max_url_ttl {
            return Err(invalid(format!(
                "expiresInSeconds must be 1 to {}",
                state.config.max_url_ttl.as_secs()
            )));
        }
        let (desired, expiry) = self.desired_firmware_in(&row, device_id.as_str(), ttl)?;
        Ok(MintedUrl {
            url: desired.url.clone(),
            device_id: device_id.as_str().to_string(),
            expiry,
            desired,
        })
    }

    /// The `desired.firmware` that sends `device_id` artifact `row`, with a URL of its own good
    /// for `ttl` (not checked against the limit: the hub's own callers choose it), and when the
    /// URL expires. No I/O: a store write that sets desired firmware calls it.
    pub(crate) fn desired_firmware_in(
        &self,
        row: &FirmwareRow,
        device_id: &str,
        ttl: Duration,
    ) -> HubResult<(DesiredFirmware, DateTime<Utc>)> {
        let state = self.firmware_state()?;
        let expiry = self.now_unix() + ttl.as_secs();
        let base = state.base_url.read().clone();
        let url = format!(
            "{base}{}",
            state.urls.path_and_query(&row.sha256, device_id, expiry)
        );
        let desired = DesiredFirmware {
            version: row.version.clone(),
            url,
            sha256: row.sha256.clone(),
            size: row.size,
            signature: Some(row.signature.clone()),
            models: row.models.clone(),
        };
        let expiry = DateTime::from_timestamp(i64::try_from(expiry).unwrap_or(i64::MAX), 0)
            .unwrap_or_default();
        Ok((desired, expiry))
    }

    /// The longest a download URL may live: what the rollout engine gives the URLs it sends.
    pub(crate) fn firmware_max_url_ttl(&self) -> HubResult<Duration> {
        Ok(self.firmware_state()?.config.max_url_ttl)
    }

    /// Checks a download URL's parts (and, when the request carries a device SAS token, that
    /// it is the URL's device's), and hands back the file to serve.
    pub async fn authorize_firmware_download(
        &self,
        sha256: &str,
        device_id: &str,
        expiry: u64,
        sig: &str,
        device_token: Option<&str>,
    ) -> HubResult<DownloadGrant> {
        let state = self.firmware_state()?;
        let refused = |e: HubError| {
            self.metrics()
                .firmware
                .refused_urls
                .fetch_add(1, Ordering::Relaxed);
            e
        };
        state
            .urls
            .check(sha256, device_id, expiry, sig, self.now_unix())
            .map_err(refused)?;
        if let Some(token) = device_token {
            let named = fleethub_core::sas::parse(token)
                .ok()
                .map(|t| t.host_and_path().1.to_string());
            if named.as_deref() != Some(format!("/devices/{device_id}").as_str()) {
                return Err(refused(HubError::new(
                    ErrorCode::FirmwareUrlForbidden,
                    format!(
                        "this download URL belongs to device '{device_id}', but the request's \
                         token is for '{}'; each device must use its own URL",
                        named.unwrap_or_else(|| "an unreadable resource".into())
                    ),
                )));
            }
        }
        let sha = sha256.to_string();
        let row = self
            .store()
            .read(move |r| r.get_firmware(&sha))
            .await?
            .ok_or_else(|| {
                HubError::new(
                    ErrorCode::FirmwareNotFound,
                    format!("firmware {sha256} was deleted; this URL no longer serves anything"),
                )
            })?;
        Ok(DownloadGrant {
            path: state.blobs.path(&row.sha256),
            sha256: row.sha256,
            size: row.size,
            device_id: device_id.to_string(),
        })
    }

    /// The image a download grant serves, held in memory and shared by every download of it;
    /// `None` when it is too large to hold, and the caller streams `grant.path` instead. A file
    /// that does not hash to the artifact's SHA-256 is an error ("damaged on disk"), not served.
    pub async fn firmware_image(&self, grant: &DownloadGrant) -> HubResult<Option<Bytes>> {
        let state = self.firmware_state()?;
        state
            .images
            .get(&grant.sha256, grant.size, &grant.path)
            .await
    }

    /// Counts a download request answered with the image.
    pub fn firmware_request_served(&self, grant: &DownloadGrant) {
        self.metrics()
            .firmware
            .requests
            .fetch_add(1, Ordering::Relaxed);
        self.count_served(grant, 0, 1);
    }

    /// Counts image bytes sent for a download.
    pub fn firmware_bytes_served(&self, grant: &DownloadGrant, bytes: u64) {
        self.metrics()
            .firmware
            .bytes_served
            .fetch_add(bytes, Ordering::Relaxed);
        self.count_served(grant, bytes, 0);
    }

    fn count_served(&self, grant: &DownloadGrant, bytes: u64, requests: u64) {
        let Some(state) = &self.inner.firmware else {
            return;
        };
        let now_ms = self.now_ms();
        let mut served = state.served.lock();
        let key = (grant.sha256.clone(), grant.device_id.clone());
        if !served.contains_key(&key) && served.len() >= MAX_SERVED_ENTRIES {
            return;
        }
        let entry = served.entry(key).or_default();
        entry.bytes += bytes;
        entry.requests += requests;
        entry.last_ms = now_ms;
    }
}

impl Upload {
    /// Appends a chunk of the body.
    pub async fn write(&mut self, chunk: &[u8]) -> HubResult<()> {
        self.temp.write(chunk).await
    }

    /// Checks the bytes against what the request declared, signs (or checks the operator's
    /// signature), puts the file in place and records the artifact. Same version and bytes as a
    /// stored artifact: a no-op answering the stored one.
    pub async fn finish(self) -> HubResult<Uploaded> {
        let Upload { hub, request, temp } = self;
        let state = hub.firmware_state()?.clone();
        let written = temp.finish().await?;
        let (sha, size) = (written.sha256.clone(), written.size);
        if let Some(declared) = &request.sha256 {
            if !declared.eq_ignore_ascii_case(&sha) {
                return Err(HubError::new(
                    ErrorCode::FirmwareVerificationFailed,
                    format!(
                        "the uploaded bytes ({size} of them) have SHA-256 {sha}, not the declared \
                         {declared}; the upload was cut short or is the wrong file, and nothing \
                         was stored"
                    ),
                ));
            }
        }
        let manifest =
            Manifest::new(&request.version, &request.models, size, &sha).map_err(invalid)?;
        let canonical = manifest.canonical();
        let (signature, signed_by) = match &request.signature {
            Some(sig) if state.key.verifies(canonical.as_bytes(), sig) => {
                (sig.trim().to_string(), "operator")
            }
            Some(_) => {
                return Err(HubError::new(
                    ErrorCode::FirmwareVerificationFailed,
                    format!(
                        "the detached signature does not verify against the hub's firmware key \
                         (keyId {}) over this manifest; sign exactly these bytes with the \
                         matching private key (base64 of the DER ECDSA signature):\n{canonical}",
                        state.key.key_id()
                    ),
                ));
            }
            None => (state.key.sign(canonical.as_bytes())?, "hub"),
        };
        let _changes = state.changes.lock().await;
        let row = FirmwareRow {
            sha256: sha.clone(),
            version: manifest.version.clone(),
            version_key: fleethub_core::semver::semver_key(&manifest.version).unwrap_or_default(),
            models: manifest.models.clone(),
            size,
            signature,
            signed_by: signed_by.into(),
            uploaded_ms: hub.now_ms(),
            notes: request.notes.clone(),
        };
        let created_blob = written.persist()?;
        let now_ms = hub.now_ms();
        let outcome = hub
            .store()
            .write(move |tx| record_upload(tx, row, now_ms))
            .await;
        match outcome {
            Ok(stored) => Ok(Uploaded {
                created: stored.1,
                artifact: Artifact::from_row(&stored.0),
            }),
            Err(e) => {
                if created_blob {
                    state.blobs.remove(&sha);
                }
                Err(e)
            }
        }
    }
}

/// Inserts the artifact unless its bytes or its version (for a model it lists) are already
/// stored: the stored row and `false` for the same version and bytes, a 409 otherwise.
fn record_upload(
    tx: &mut fleethub_store::WriteTx<'_>,
    row: FirmwareRow,
    now_ms: i64,
) -> HubResult<(FirmwareRow, bool)> {
    if let Some(existing) = tx.get_firmware(&row.sha256)? {
        if existing.version == row.version {
            return Ok((existing, false));
        }
        return Err(HubError::new(
            ErrorCode::FirmwareConflict,
            format!(
                "these bytes (SHA-256 {}) are already stored as version {}; artifacts are \
                 immutable and content-addressed, so the same image cannot also be {}",
                row.sha256, existing.version, row.version
            ),
        ));
    }
    for other in tx.firmware_by_version(&row.version)? {
        let shared: Vec<&String> = other
            .models
            .iter()
            .filter(|m| row.models.contains(m))
            .collect();
        if !shared.is_empty() {
            return Err(HubError::new(
                ErrorCode::FirmwareConflict,
                format!(
                    "version {} for {} is already stored with other bytes (SHA-256 {}, yours \
                     {}); artifacts are immutable: give the new image a new version",
                    row.version,
                    shared
                        .iter()
                        .map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    other.sha256,
                    row.sha256
                ),
            ));
        }
    }
    tx.insert_firmware(&row)?;
    let uploaded = Change::FirmwareUploaded {
        sha256: row.sha256.clone(),
        version: row.version.clone(),
    };
    append_change(tx, None, &uploaded, now_ms)?;
    Ok((row, true))
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("version", &self.request.version)
            .finish()
    }
}
