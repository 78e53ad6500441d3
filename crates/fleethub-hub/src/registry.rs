//! The device registry: creating, changing, importing and deleting identities (with their
//! twins, through `twin.rs`) under etags. The identity types themselves are `device.rs`'s.

pub use crate::device::{etag_for, etag_matches, Authentication, SymmetricKey, X509Thumbprint};

use crate::concurrency::{OnConflict, WriteResult};
use crate::device::{disconnected, Capabilities, Device, DeviceStatus};
use crate::events::append_change;
use crate::Hub;
use fleethub_core::events::Change;
use fleethub_core::{DeviceId, ErrorCode, HubError, HubResult};
use fleethub_store::{
    DeviceCounts, DeviceEntryRow, DeviceRow, EncodedDeviceRow, FirmwareCount, Reads, WriteTx,
};
use serde::Deserialize;
use serde_json::Value;

fn precondition_failed(what: &str, id: &str, current: &str) -> HubError {
    HubError::new(
        ErrorCode::PreconditionFailed,
        format!("{what} '{id}' has etag \"{current}\", not the one in If-Match; read it again and retry"),
    )
}

/// One entry of a bulk registry request (`POST /devices`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportImportDevice {
    pub id: String,
    #[serde(default)]
    pub import_mode: Option<String>,
    /// IoT Hub's schema spells it `eTag`; the Node service SDK sends the device's own `etag`.
    #[serde(default, alias = "etag")]
    pub e_tag: Option<String>,
    #[serde(default)]
    pub twin_e_tag: Option<String>,
    #[serde(default)]
    pub status: Option<DeviceStatus>,
    #[serde(default)]
    pub status_reason: Option<String>,
    #[serde(default)]
    pub authentication: Option<Authentication>,
    #[serde(default)]
    pub tags: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub properties: Option<Value>,
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
}

/// What a bulk entry asks for. IoT Hub's SDKs spell these differently (`createOrUpdate` in
/// Python, `Update` and `DeleteIfMatchETag` in Node), so they are matched without case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImportMode {
    Create,
    Update,
    UpdateIfMatchETag,
    CreateOrUpdate,
    CreateOrUpdateIfMatchETag,
    Delete,
    DeleteIfMatchETag,
    UpdateTwin,
    UpdateTwinIfMatchETag,
}

impl ImportMode {
    const ALL: [ImportMode; 9] = [
        ImportMode::Create,
        ImportMode::Update,
        ImportMode::UpdateIfMatchETag,
        ImportMode::CreateOrUpdate,
        ImportMode::CreateOrUpdateIfMatchETag,
        ImportMode::Delete,
        ImportMode::DeleteIfMatchETag,
        ImportMode::UpdateTwin,
        ImportMode::UpdateTwinIfMatchETag,
    ];

    /// The mode an entry names; `createOrUpdate` when it names none.
    fn parse(given: Option<&str>) -> HubResult<ImportMode> {
        let Some(given) = given else {
            return Ok(ImportMode::CreateOrUpdate);
        };
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(given))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|m| m.name()).collect();
                HubError::invalid(format!(
                    "unknown importMode '{given}'; use one of {}",
                    names.join(", ")
                ))
            })
    }

    fn name(self) -> &'static str {
        match self {
            ImportMode::Create => "create",
            ImportMode::Update => "update",
            ImportMode::UpdateIfMatchETag => "updateIfMatchETag",
            ImportMode::CreateOrUpdate => "createOrUpdate",
            ImportMode::CreateOrUpdateIfMatchETag => "createOrUpdateIfMatchETag",
            ImportMode::Delete => "delete",
            ImportMode::DeleteIfMatchETag => "deleteIfMatchETag",
            ImportMode::UpdateTwin => "updateTwin",
            ImportMode::UpdateTwinIfMatchETag => "updateTwinIfMatchETag",
        }
    }

    fn may_create(self) -> bool {
        matches!(
            self,
            ImportMode::Create | ImportMode::CreateOrUpdate | ImportMode::CreateOrUpdateIfMatchETag
        )
    }
}

/// A submitted registry entry and which of its parts the request named. On an update, what it
/// does not name is kept from the stored entry: a request never changes credentials, status or
/// capabilities it did not mention.
#[derive(Clone)]
struct IdentityChange {
    device: Device,
    /// A streamed import's entry: when it would change nothing, nothing is written (no new
    /// revision, event or disconnect), so importing the same file again changes nothing.
    unchanged_writes_nothing: bool,
    names_status: bool,
    names_status_reason: bool,
    names_authentication: bool,
    names_capabilities: bool,
}

impl IdentityChange {
    /// From a `PUT /devices/{id}` body.
    fn from_body(body: Value) -> HubResult<IdentityChange> {
        let named = |key: &str| body.get(key).is_some_and(|v| !v.is_null());
        let (names_status, names_status_reason, names_authentication, names_capabilities) = (
            named("status"),
            named("statusReason"),
            named("authentication"),
            named("capabilities"),
        );
        let device: Device = serde_json::from_value(body).map_err(|e| {
            HubError::format(format!("device body is not a valid registry entry: {e}"))
        })?;
        Ok(IdentityChange {
            device,
            unchanged_writes_nothing: false,
            names_status,
            names_status_reason,
            names_authentication,
            names_capabilities,
        })
    }

    /// From a bulk import entry.
    fn from_import(e: &ExportImportDevice) -> HubResult<IdentityChange> {
        let device = Device {
            device_id: DeviceId::parse(&e.id)?.to_string(),
            generation_id: String::new(),
            etag: String::new(),
            status: e.status.unwrap_or_default(),
            status_reason: e.status_reason.clone(),
            status_updated_time: String::new(),
            connection_state: disconnected(),
            connection_state_updated_time: String::new(),
            last_activity_time: String::new(),
            cloud_to_device_message_count: 0,
            authentication: e.authentication.clone().unwrap_or_default(),
            capabilities: e.capabilities.clone().unwrap_or_default(),
            revision: 0,
        };
        Ok(IdentityChange {
            device,
            unchanged_writes_nothing: false,
            names_status: e.status.is_some(),
            names_status_reason: e.status_reason.is_some(),
            names_authentication: e.authentication.is_some(),
            names_capabilities: e.capabilities.is_some(),
        })
    }

    /// The submitted entry completed from `old` where the request was silent. Keys and
    /// thumbprints left empty under an unchanged authentication type are kept too.
    fn onto(self, old: &Device) -> Device {
        let mut d = self.device;
        if !self.names_status {
            d.status = old.status;
        }
        if !self.names_status_reason {
            d.status_reason = old.status_reason.clone();
        }
        if !self.names_capabilities {
            d.capabilities = old.capabilities.clone();
        }
        if !self.names_authentication {
            d.authentication = old.authentication.clone();
        } else if d.authentication.kind == old.authentication.kind {
            let (new, old) = (&mut d.authentication, &old.authentication);
            let keep = |given: &mut Option<String>, stored: &Option<String>| {
                if given.as_deref().unwrap_or("").is_empty() {
                    *given = stored.clone();
                }
            };
            keep(
                &mut new.symmetric_key.primary_key,
                &old.symmetric_key.primary_key,
            );
            keep(
                &mut new.symmetric_key.secondary_key,
                &old.symmetric_key.secondary_key,
            );
            keep(
                &mut new.x509_thumbprint.primary_thumbprint,
                &old.x509_thumbprint.primary_thumbprint,
            );
            keep(
                &mut new.x509_thumbprint.secondary_thumbprint,
                &old.x509_thumbprint.secondary_thumbprint,
            );
        }
        d
    }
}

impl Hub {
    pub(crate) async fn load_device(&self, id: &str) -> HubResult<Option<Device>> {
        let id = id.to_string();
        let row = self
            .store()
            .read_point(move |r| r.get_device_entry(&id))
            .await?;
        row.as_ref().map(Device::from_entry).transpose()
    }

    /// Shows a registry entry with its live connection state.
    fn present(&self, mut d: Device) -> Device {
        d.etag = etag_for(d.revision);
        if self.inner.connections.is_connected(&d.device_id) {
            d.connection_state = "Connected".into();
        }
        d
    }

    /// `GET /devices/{id}`.
    pub async fn get_device(&self, id: &str) -> HubResult<Device> {
        let d = self
            .load_device(id)
            .await?
            .ok_or_else(|| HubError::device_not_found(id))?;
        Ok(self.present(d))
    }

    /// `GET /devices?top=N`: the first `top` devices by id.
    pub async fn list_devices(&self, top: usize) -> HubResult<Vec<Device>> {
        let top = top.clamp(1, 1000);
        let rows = self
            .store()
            .read(move |r| r.list_devices(None, top))
            .await?;
        rows.iter()
            .map(|r| Device::from_row(r).map(|d| self.present(d)))
            .collect()
    }

    /// `PUT /devices/{id}`: creates the device, or with If-Match updates it. An update keeps
    /// whatever the body does not name (keys, thumbprints, status, capabilities), as IoT Hub does:
    /// a status-only update never changes credentials.
    pub async fn put_device(
        &self,
        id: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> HubResult<Device> {
        let id = DeviceId::parse(id)?;
        let change = IdentityChange::from_body(body)?;
        if change.device.device_id != id.as_str() {
            return Err(HubError::invalid(format!(
                "deviceId '{}' in the body does not match '{}' in the URL",
                change.device.device_id, id
            )));
        }
        let now = self.now_string();
        let if_match = if_match.map(str::to_string);
        let hub = self.clone();
        let on_conflict = OnConflict::for_if_match(if_match.as_deref());
        let device = self
            .write_versioned(on_conflict, move |tx| {
                hub.upsert_in(tx, change.clone(), if_match.as_deref(), &now)
            })
            .await?;
        Ok(self.present(device))
    }

    /// Fills the fields a device gets when it is created.
    fn stamp_new(&self, d: &mut Device, now: &str) {
        d.generation_id = format!("{}", self.now_nanos());
        d.revision = 1;
        d.status_updated_time = now.to_string();
        d.connection_state = disconnected();
        d.connection_state_updated_time = fleethub_core::time::NEVER.into();
        d.last_activity_time = fleethub_core::time::NEVER.into();
        d.cloud_to_device_message_count = 0;
    }

    /// Inserts a new device's row and its creation event; an existing id is refused.
    fn insert_new_in(&self, tx: &mut WriteTx<'_>, row: &EncodedDeviceRow) -> HubResult<()> {
        if !tx.insert_encoded_device(row)? {
            return Err(already_exists(&row.device_id));
        }
        append_change(
            tx,
            Some(&row.device_id),
            &Change::DeviceCreated {},
            self.now_ms(),
        )?;
        self.configurations_wake_on_commit(tx);
        self.rollouts_twin_changed_on_commit(tx, &row.device_id);
        Ok(())
    }

    /// Creates or updates one registry entry inside `tx`, at the revision it reads: the one path
    /// for `PUT /devices/{id}` and bulk import. A device that becomes disabled is disconnected
    /// once the write commits.
    fn upsert_in(
        &self,
        tx: &mut WriteTx<'_>,
        change: IdentityChange,
        if_match: Option<&str>,
        now: &str,
    ) -> WriteResult<Device> {
        let Some(row) = tx.get_device_entry(&change.device.device_id)? else {
            let mut d = change.device;
            d.normalize()?;
            self.stamp_new(&mut d, now);
            let row = crate::twin::new_device_row(&d, now);
            self.insert_new_in(tx, &encode(&row)?)?;
            return Ok(d);
        };
        let old = Device::from_entry(&row)?;
        let id = old.device_id.clone();
        if if_match.is_none() {
            return Err(already_exists(&id).into());
        }
        let current = etag_for(old.revision);
        if !etag_matches(if_match, &current) {
            return Err(precondition_failed("device", &id, &current).into());
        }
        let unchanged_writes_nothing = change.unchanged_writes_nothing;
        let mut d = change.onto(&old);
        d.normalize()?;
        d.generation_id = old.generation_id.clone();
        d.revision = old.revision;
        d.status_updated_time = if d.status != old.status {
            now.to_string()
        } else {
            old.status_updated_time.clone()
        };
        d.connection_state_updated_time = old.connection_state_updated_time.clone();
        d.last_activity_time = old.last_activity_time.clone();
        d.cloud_to_device_message_count = old.cloud_to_device_message_count;
        d.connection_state = disconnected();
        if unchanged_writes_nothing && d.to_identity() == row.identity {
            return Ok(old);
        }
        d.revision = old.revision + 1;
        tx.update_identity(&id, d.status.as_str(), &d.to_identity(), d.revision as i64)?;
        append_change(tx, Some(&id), &Change::DeviceUpdated {}, self.now_ms())?;
        self.configurations_wake_on_commit(tx);
        self.rollouts_twin_changed_on_commit(tx, &id);
        if d.status == DeviceStatus::Disabled {
            self.disconnect_on_commit(tx, &id, "device disabled");
        }
        Ok(d)
    }

    /// Records, in `tx`, that the device's connection (if any) must close once the write commits.
    fn disconnect_on_commit(&self, tx: &mut WriteTx<'_>, id: &str, reason: &'static str) {
        let (hub, id) = (self.clone(), id.to_string());
        tx.on_commit(move || {
            hub.inner.connections.send(
                &id,
                crate::DeviceCommand::Disconnect {
                    reason: reason.into(),
                },
            );
        });
    }

    /// `DELETE /devices/{id}`.
    pub async fn delete_device(&self, id: &str, if_match: Option<&str>) -> HubResult<()> {
        let (id, if_match, hub) = (id.to_string(), if_match.map(str::to_string), self.clone());
        let on_conflict = OnConflict::for_if_match(if_match.as_deref());
        self.write_versioned(on_conflict, move |tx| {
            hub.delete_in(tx, &id, if_match.as_deref())
        })
        .await
    }

    /// Deletes a device inside `tx`, at the revision it reads, with its persisted MQTT session (a
    /// re-created id starts with no subscriptions); its connection closes once the write commits.
    fn delete_in(&self, tx: &mut WriteTx<'_>, id: &str, if_match: Option<&str>) -> WriteResult<()> {
        let row = tx
            .get_device_entry(id)?
            .ok_or_else(|| HubError::device_not_found(id))?;
        let current = etag_for(row.revision.max(0) as u64);
        if !etag_matches(if_match, &current) {
            return Err(precondition_failed("device", id, &current).into());
        }
        // A store at its size limit still takes a delete: that is how an operator frees space.
        tx.deleting(|tx| -> WriteResult<()> {
            tx.delete_device(id, row.revision)?;
            tx.delete_session(id)?;
            append_change(tx, Some(id), &Change::DeviceDeleted {}, self.now_ms())?;
            Ok(())
        })?;
        self.rollouts_twin_changed_on_commit(tx, id);
        self.disconnect_on_commit(tx, id, "device deleted");
        Ok(())
    }

    /// `POST /devices`: bulk create, update or delete. Every entry is checked and applied on its
    /// own and atomically (a failed entry leaves nothing behind), through the same code and with
    /// the same effects as the single-device routes; the answer lists each failure.
    pub async fn bulk_devices(&self, entries: Vec<ExportImportDevice>) -> HubResult<BulkOutcome> {
        if entries.len() > 100 {
            return Err(HubError::invalid(format!(
                "bulk request has {} devices; at most 100 per call",
                entries.len()
            )));
        }
        self.apply_bulk(entries, false).await
    }

    /// One batch of a streamed import (`POST /v1/devices/import`, `fleethub devices import`):
    /// the bulk call's write, up to [`IMPORT_BATCH_LIMIT`] entries, except that an entry that
    /// would change nothing writes nothing (no new etag, twin version, event or push), so running
    /// the same file again changes nothing.
    pub async fn import_devices(&self, entries: Vec<ExportImportDevice>) -> HubResult<BulkOutcome> {
        if entries.len() > IMPORT_BATCH_LIMIT {
            return Err(HubError::invalid(format!(
                "import batch has {} devices; at most {IMPORT_BATCH_LIMIT}",
                entries.len()
            )));
        }
        self.apply_bulk(entries, true).await
    }

    /// Applies bulk entries, each atomically, in one store write.
    async fn apply_bulk(
        &self,
        entries: Vec<ExportImportDevice>,
        unchanged_writes_nothing: bool,
    ) -> HubResult<BulkOutcome> {
        let now = self.now_string();
        let prepared: Vec<_> = entries
            .into_iter()
            .map(|e| {
                let mode = ImportMode::parse(e.import_mode.as_deref());
                let fresh = match &mode {
                    Ok(mode) if mode.may_create() => Some(self.fresh_row(&e, &now)),
                    _ => None,
                };
                (e, mode, fresh)
            })
            .collect();
        let hub = self.clone();
        let outcome = self
            .store()
            .write(move |tx| -> HubResult<BulkOutcome> {
                let mut outcome = BulkOutcome::default();
                let mut created = Vec::new();
                for (index, (e, mode, fresh)) in prepared.into_iter().enumerate() {
                    let entry = BulkEntry {
                        entry: &e,
                        fresh,
                        unchanged_writes_nothing,
                    };
                    let applied = mode.and_then(|mode| {
                        tx.atomically(|tx| hub.bulk_one(tx, entry, mode, &mut created, &now))
                    });
                    match applied {
                        Ok(Applied::Created) => outcome.created += 1,
                        Ok(Applied::Unchanged) => outcome.unchanged += 1,
                        Ok(Applied::Changed) => outcome.changed += 1,
                        Err(error) => outcome.errors.push(BulkError {
                            index,
                            device_id: e.id,
                            error,
                        }),
                    }
                }
                if !created.is_empty() {
                    // One event for the call rather than one per device: bulk import is the
                    // path that writes a million devices, and the log row is a fifth of its cost.
                    for id in &created {
                        hub.rollouts_twin_changed_on_commit(tx, id);
                    }
                    let created = Change::DevicesCreated {
                        device_ids: created,
                    };
                    append_change(tx, None, &created, hub.now_ms())?;
                    hub.configurations_wake_on_commit(tx);
                }
                Ok(outcome)
            })
            .await?;
        Ok(outcome)
    }

    /// For an entry that may create a device, its whole new row (identity and twin sections),
    /// checked and encoded off the writer thread.
    fn fresh_row(&self, e: &ExportImportDevice, now: &str) -> HubResult<EncodedDeviceRow> {
        let mut d = IdentityChange::from_import(e)?.device;
        d.normalize()?;
        self.stamp_new(&mut d, now);
        let mut row = crate::twin::new_device_row(&d, now);
        crate::twin::seed_twin(&mut row, e.tags.as_ref(), e.properties.as_ref(), now)?;
        encode(&row)
    }

    fn bulk_one(
        &self,
        tx: &mut WriteTx<'_>,
        entry: BulkEntry<'_>,
        mode: ImportMode,
        created: &mut Vec<String>,
        now: &str,
    ) -> HubResult<Applied> {
        let BulkEntry {
            entry: e,
            fresh,
            unchanged_writes_nothing: quiet,
        } = entry;
        let id = DeviceId::parse(&e.id)?;
        let etag = || {
            e.e_tag.as_deref().ok_or_else(|| {
                HubError::invalid(format!(
                    "importMode {mode:?} needs the device's eTag; read the device and send its etag"
                ))
            })
        };
        let if_match = match mode {
            ImportMode::Delete => {
                self.delete_in(tx, id.as_str(), Some("*"))?;
                return Ok(Applied::Changed);
            }
            ImportMode::DeleteIfMatchETag => {
                self.delete_in(tx, id.as_str(), Some(etag()?))?;
                return Ok(Applied::Changed);
            }
            ImportMode::UpdateTwin | ImportMode::UpdateTwinIfMatchETag => {
                return self.import_twin_only_in(tx, e, mode, quiet, now);
            }
            ImportMode::Create => None,
            ImportMode::Update | ImportMode::CreateOrUpdate => Some("*"),
            ImportMode::UpdateIfMatchETag | ImportMode::CreateOrUpdateIfMatchETag => Some(etag()?),
        };
        // `create` needs no lookup: the insert itself refuses an existing id.
        let existing = match mode {
            ImportMode::Create => None,
            _ => tx.get_device_entry(id.as_str())?,
        };
        let Some(existing) = existing else {
            let Some(row) = fresh else {
                return Err(HubError::device_not_found(id.as_str()));
            };
            let row = row?;
            if !tx.insert_encoded_device(&row)? {
                return Err(already_exists(&row.device_id));
            }
            // The caller logs one event for every device the call created.
            created.push(row.device_id);
            return Ok(Applied::Created);
        };
        let mut change = IdentityChange::from_import(e)?;
        change.unchanged_writes_nothing = quiet;
        let device = self.upsert_in(tx, change, if_match, now)?;
        let twin_changed = self.import_twin_in(tx, e, &existing, quiet, now)?;
        Ok(applied(
            device.revision as i64 != existing.revision || twin_changed,
        ))
    }

    /// `updateTwin` modes: tags and desired properties only; the identity is left as it is.
    fn import_twin_only_in(
        &self,
        tx: &mut WriteTx<'_>,
        e: &ExportImportDevice,
        mode: ImportMode,
        quiet: bool,
        now: &str,
    ) -> HubResult<Applied> {
        let row = tx
            .get_device_entry(&e.id)?
            .ok_or_else(|| HubError::device_not_found(&e.id))?;
        if mode == ImportMode::UpdateTwinIfMatchETag {
            let current = etag_for(row.twin_version.max(0) as u64);
            let given = e.twin_e_tag.as_deref().or(e.e_tag.as_deref());
            if given.is_none() || !etag_matches(given, &current) {
                return Err(precondition_failed("twin", &e.id, &current));
            }
        }
        Ok(applied(self.import_twin_in(tx, e, &row, quiet, now)?))
    }

    /// Merges an entry's tags and desired properties into the twin `row` holds; true if it wrote.
    fn import_twin_in(
        &self,
        tx: &mut WriteTx<'_>,
        e: &ExportImportDevice,
        row: &DeviceEntryRow,
        unchanged_writes_nothing: bool,
        now: &str,
    ) -> HubResult<bool> {
        if e.tags.is_none() && e.properties.is_none() {
            return Ok(false);
        }
        let sections = crate::twin::ImportedSections {
            tags: e.tags.as_ref(),
            properties: e.properties.as_ref(),
            unchanged_writes_nothing,
        };
        let version = crate::twin::import_twin_in(self, tx, &e.id, sections, now)?;
        Ok(version as i64 != row.twin_version)
    }

    /// `GET /statistics/devices`.
    pub async fn device_statistics(&self) -> HubResult<DeviceCounts> {
        Ok(self.store().read(|r| r.device_counts()).await?)
    }

    /// How many devices report each firmware version and update status (the dashboard's
    /// firmware chart): counts the store keeps, a few rows at any fleet size.
    pub async fn firmware_counts(&self) -> HubResult<Vec<FirmwareCount>> {
        Ok(self.store().read(|r| r.firmware_counts()).await?)
    }

    /// `GET /statistics/service`: how many devices have a live MQTT session.
    pub fn connected_device_count(&self) -> usize {
        self.inner.connections.count()
    }
}

/// Entries per batch of a streamed import ([`Hub::import_devices`]): one store write each.
pub const IMPORT_BATCH_LIMIT: usize = 1000;

/// What a bulk registry call did: every entry that failed, with why (the others were applied).
#[derive(Debug, Default)]
pub struct BulkOutcome {
    pub errors: Vec<BulkError>,
    /// Entries that created a device.
    pub created: usize,
    /// Entries that changed or deleted an existing device.
    pub changed: usize,
    /// Entries of a streamed import that matched what was stored and wrote nothing.
    pub unchanged: usize,
}

/// One bulk entry as the write applies it.
struct BulkEntry<'a> {
    entry: &'a ExportImportDevice,
    /// Its new row, prepared off the writer thread, when its mode may create.
    fresh: Option<HubResult<EncodedDeviceRow>>,
    unchanged_writes_nothing: bool,
}

/// What one applied bulk entry did.
enum Applied {
    Created,
    Changed,
    Unchanged,
}

fn applied(changed: bool) -> Applied {
    if changed {
        Applied::Changed
    } else {
        Applied::Unchanged
    }
}

impl BulkOutcome {
    /// True when every entry was applied.
    pub fn is_successful(&self) -> bool {
        self.errors.is_empty()
    }
}

/// One bulk entry that was refused, and left nothing behind.
#[derive(Debug)]
pub struct BulkError {
    /// The entry's position in the call (0-based).
    pub index: usize,
    pub device_id: String,
    pub error: HubError,
}

fn encode(row: &DeviceRow) -> HubResult<EncodedDeviceRow> {
    row.encode()
        .map_err(|err| HubError::server(format!("cannot encode device '{}': {err}", row.device_id)))
}

fn already_exists(id: &str) -> HubError {
    HubError::new(
        ErrorCode::DeviceAlreadyExists,
        format!(
            "device '{id}' already exists; send If-Match with its etag (or \"*\") to update it"
        ),
    )
}

impl Hub {
    /// A page of the registry with its twins, by id after `after`, for the streamed export
    /// (`GET /v1/devices/export`, `fleethub devices export`).
    pub async fn export_devices(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> HubResult<Vec<crate::twin::Twin>> {
        let rows = self
            .store()
            .read(move |r| r.list_devices(after.as_deref(), limit))
            .await?;
        rows.iter()
            .map(|row| crate::twin::TwinState::from_row(row).map(|t| t.into_twin(false)))
            .collect()
    }
}
