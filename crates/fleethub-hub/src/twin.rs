//! Twins: the service's view (tags, desired, reported with metadata) and the device's view.

use crate::concurrency::{OnConflict, WriteResult};
use crate::device::{etag_for, etag_matches, Device};
use crate::events::append_change;
use crate::twin_cache::{KeptTwin, TwinRest};
use crate::{DeviceCommand, Hub};
use bytes::Bytes;
use fleethub_core::configuration::ConfigurationStatus;
use fleethub_core::events::Change;
use fleethub_core::twin::{patch::apply_tags_patch, Section, TwinProperties};
use fleethub_core::{ErrorCode, HubError, HubResult};
use fleethub_store::{
    ConfigurationReads, DeviceRow, HeldTwin, Reads, SectionParts, StoreError, TwinSections, WriteTx,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// A twin as stored: the registry entry it belongs to plus its three sections.
pub(crate) struct TwinState {
    pub device: Device,
    pub tags: Map<String, Value>,
    pub desired: TwinProperties,
    pub reported: TwinProperties,
    pub version: u64,
    /// `configurations.{id}.status`, when read (only `GET /twins` and twin writes read it).
    pub configurations: BTreeMap<String, ConfigurationStatus>,
}

impl TwinState {
    pub(crate) fn from_row(row: &DeviceRow) -> HubResult<TwinState> {
        let unreadable = |what: &str, e: serde_json::Error| {
            HubError::server(format!(
                "stored {what} of '{}' is unreadable: {e}",
                row.device_id
            ))
        };
        Ok(TwinState {
            device: Device::from_row(row)?,
            // Deserialize from the borrowed values: no copy of each JSON tree first.
            tags: Map::deserialize(&row.tags).map_err(|e| unreadable("tags", e))?,
            desired: TwinProperties::deserialize(&row.desired)
                .map_err(|e| unreadable("desired", e))?,
            reported: TwinProperties::deserialize(&row.reported)
                .map_err(|e| unreadable("reported", e))?,
            version: row.twin_version.max(0) as u64,
            configurations: BTreeMap::new(),
        })
    }

    /// The twin as the query language reads it, for `Condition::matches` (the configuration
    /// engine's targeting): the fields a condition can name, in the shape `fleethub-api` writes
    /// them (an input to the evaluator, never a response).
    pub(crate) fn evaluation_document(&self, connected: bool) -> Value {
        self.evaluation_document_of(connected, PropertiesRead::BOTH)
    }

    /// [`TwinState::evaluation_document`] with only the property sections `read` names (the
    /// others absent): for conditions known to read no other, since copying a section with its
    /// metadata is most of the document's cost.
    pub(crate) fn evaluation_document_of(&self, connected: bool, read: PropertiesRead) -> Value {
        let mut properties = Map::new();
        if read.desired {
            properties.insert("desired".into(), self.desired.to_twin_json());
        }
        if read.reported {
            properties.insert("reported".into(), self.reported.to_twin_json());
        }
        let mut doc = json!({
            "deviceId": self.device.device_id,
            "status": self.device.status.as_str(),
            "connectionState": if connected { "Connected" } else { "Disconnected" },
            "lastActivityTime": self.device.last_activity_time,
            "version": self.version,
            "tags": self.tags,
            "properties": properties,
        });
        if !self.configurations.is_empty() {
            let statuses: Map<String, Value> = self
                .configurations
                .iter()
                .map(|(id, s)| (id.clone(), json!({ "status": s.as_str() })))
                .collect();
            doc["configurations"] = Value::Object(statuses);
        }
        doc
    }

    /// The twin as the service sees it, online or not.
    pub(crate) fn into_twin(self, connected: bool) -> Twin {
        Twin {
            device: self.device,
            tags: self.tags,
            desired: self.desired,
            reported: self.reported,
            version: self.version,
            connection_state: ConnectionState::from_connected(connected),
            configurations: self.configurations,
        }
    }
}

/// Which property sections of a twin a set of conditions reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PropertiesRead {
    /// `properties.desired` (or `properties` as a whole).
    pub desired: bool,
    /// `properties.reported` (or `properties` as a whole).
    pub reported: bool,
}

impl PropertiesRead {
    /// Both sections: what a document for any condition holds.
    pub const BOTH: PropertiesRead = PropertiesRead {
        desired: true,
        reported: true,
    };

    /// Neither section.
    pub const NONE: PropertiesRead = PropertiesRead {
        desired: false,
        reported: false,
    };

    /// The sections a condition's paths read.
    pub fn of(condition: &fleethub_query::Condition) -> PropertiesRead {
        let mut read = PropertiesRead::NONE;
        for path in condition.paths() {
            if path.first().is_none_or(|root| root != "properties") {
                continue;
            }
            match path.get(1).map(String::as_str) {
                Some("desired") => read.desired = true,
                Some("reported") => read.reported = true,
                // `properties` itself, or a section the language may spell otherwise.
                _ => read = PropertiesRead::BOTH,
            }
        }
        read
    }

    /// Either's sections.
    pub fn or(self, other: PropertiesRead) -> PropertiesRead {
        PropertiesRead {
            desired: self.desired || other.desired,
            reported: self.reported || other.reported,
        }
    }
}

/// Whether a device has a live MQTT session at the time its twin was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Connected,
    Disconnected,
}

impl ConnectionState {
    fn from_connected(connected: bool) -> ConnectionState {
        if connected {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        }
    }
}

/// A device twin, the service's view: the registry entry it belongs to, its tags, desired and
/// reported properties (with metadata), the twin version and the connection state.
///
/// `fleethub-api` writes it in IoT Hub's twin shape, for `GET /twins/{id}` and query rows alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Twin {
    pub device: Device,
    pub tags: Map<String, Value>,
    pub desired: TwinProperties,
    pub reported: TwinProperties,
    pub version: u64,
    pub connection_state: ConnectionState,
    /// The configurations that target the twin, with their status (IoT Hub's root
    /// `configurations`, left out when empty).
    pub configurations: BTreeMap<String, ConfigurationStatus>,
}

impl Twin {
    /// The twin's etag (it changes with every twin version), without quotes.
    pub fn etag(&self) -> String {
        etag_for(self.version)
    }
}

/// A device's own view of its twin (the MQTT twin GET): desired and reported properties with
/// their versions, no metadata, no tags.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTwin {
    pub desired: TwinProperties,
    pub reported: TwinProperties,
}

/// The row a newly created device starts with: empty twin at version 1.
pub(crate) fn new_device_row(d: &Device, now: &str) -> DeviceRow {
    let empty = |now: &str| {
        let mut p = TwinProperties::default();
        // An empty replace stamps the root $lastUpdated and starts $version at 1.
        let _ = p.replace(Section::Desired, &Map::new(), now);
        serde_json::to_value(p).unwrap_or(Value::Null)
    };
    DeviceRow {
        device_id: d.device_id.clone(),
        status: d.status.as_str().to_string(),
        identity: d.to_identity(),
        tags: json!({}),
        desired: empty(now),
        reported: empty(now),
        twin_version: 1,
        twin_etag: etag_for(1),
        revision: d.revision as i64,
    }
}

/// Fills a new device's twin from a bulk import entry: tags, and desired and reported
/// properties (reported is our extension: importing an export restores what devices reported).
/// Keys starting with `$` (an export's `$metadata` and `$version`) are skipped; every section is
/// checked against IoT Hub's limits.
pub(crate) fn seed_twin(
    row: &mut DeviceRow,
    tags: Option<&Map<String, Value>>,
    properties: Option<&Value>,
    now: &str,
) -> HubResult<()> {
    if let Some(tags) = tags.filter(|t| !t.is_empty()) {
        let mut seeded = Map::new();
        apply_tags_patch(&mut seeded, &without_system(tags))?;
        row.tags = Value::Object(seeded);
    }
    let sections = [
        (Section::Desired, "desired", &mut row.desired),
        (Section::Reported, "reported", &mut row.reported),
    ];
    for (section, name, column) in sections {
        let Some(values) = properties
            .and_then(|p| p.get(name))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let mut props = TwinProperties::default();
        props.replace(section, &without_system(values), now)?;
        *column = serde_json::to_value(props)
            .map_err(|e| HubError::server(format!("cannot encode {}: {e}", section.name())))?;
    }
    Ok(())
}

/// A twin section from an import entry without its system keys (an export's `$metadata` and
/// `$version`), which are the hub's to write.
fn without_system(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The sections a service patch or replace carries.
struct ServiceTwinChange {
    tags: Option<Map<String, Value>>,
    desired: Option<Map<String, Value>>,
    /// A streamed import's change: when the merged tags and desired values equal the stored
    /// ones, nothing is written (no new version, event or push).
    unchanged_writes_nothing: bool,
}

/// A twin section in a request body: absent or null is `None`, anything but an object is 400.
pub(crate) fn optional_object(
    v: Option<&Value>,
    name: &str,
) -> HubResult<Option<Map<String, Value>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(_) => Err(HubError::format(format!("{name} must be a JSON object"))),
    }
}

fn parse_service_change(body: &Value) -> HubResult<ServiceTwinChange> {
    let obj = body
        .as_object()
        .ok_or_else(|| HubError::format("twin body must be a JSON object"))?;
    let section = optional_object;
    let props = obj.get("properties");
    if props
        .and_then(|p| p.get("reported"))
        .is_some_and(|r| !r.is_null())
    {
        return Err(HubError::invalid(
            "properties.reported cannot be written by a service; only the device reports",
        ));
    }
    Ok(ServiceTwinChange {
        unchanged_writes_nothing: false,
        tags: section(obj.get("tags"), "tags")?,
        desired: section(props.and_then(|p| p.get("desired")), "properties.desired")?,
    })
}

/// Removes the `$`-prefixed system keys a client may echo back from a twin it read.
fn strip_system_keys(m: &mut Map<String, Value>) {
    m.retain(|k, _| !k.starts_with('$'));
}

impl Hub {
    async fn load_twin(&self, id: &str) -> HubResult<TwinState> {
        let key = id.to_string();
        let row = self.store().read_point(move |r| r.get_device(&key)).await?;
        TwinState::from_row(&row.ok_or_else(|| HubError::device_not_found(id))?)
    }

    /// `GET /twins/{id}`, with the configurations that target it.
    pub async fn get_twin(&self, id: &str) -> HubResult<Twin> {
        let key = id.to_string();
        let (row, configurations) = self
            .store()
            .read_point(move |r| {
                let row = r.get_device(&key)?;
                let configurations = match row {
                    Some(_) => r.device_configurations(&key)?,
                    None => Vec::new(),
                };
                Ok::<_, StoreError>((row, configurations))
            })
            .await?;
        let mut twin = TwinState::from_row(&row.ok_or_else(|| HubError::device_not_found(id))?)?;
        twin.configurations = configurations.into_iter().collect();
        Ok(twin.into_twin(self.inner.connections.is_connected(id)))
    }

    /// `PATCH /twins/{id}`: merge-patches tags and desired properties.
    pub async fn update_twin(
        &self,
        id: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> HubResult<Twin> {
        self.change_twin(id, body, if_match, false).await
    }

    /// `PUT /twins/{id}`: replaces tags and desired properties.
    pub async fn replace_twin(
        &self,
        id: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> HubResult<Twin> {
        self.change_twin(id, body, if_match, true).await
    }

    async fn change_twin(
        &self,
        id: &str,
        body: Value,
        if_match: Option<&str>,
        replace: bool,
    ) -> HubResult<Twin> {
        let mut change = parse_service_change(&body)?;
        if let Some(d) = change.desired.as_mut() {
            strip_system_keys(d);
        }
        let (now, key, if_match, hub) = (
            self.now_string(),
            id.to_string(),
            if_match.map(str::to_string),
            self.clone(),
        );
        let on_conflict = OnConflict::for_if_match(if_match.as_deref());
        let twin = self
            .write_versioned(on_conflict, move |tx| {
                hub.change_twin_in(tx, &key, &change, if_match.as_deref(), replace, &now)
            })
            .await?;
        Ok(twin.into_twin(self.inner.connections.is_connected(id)))
    }

    /// Applies a service change to a twin inside `tx`, at the twin version it reads; a desired
    /// change is pushed to the device once the write commits, in commit order with every other
    /// push. A desired-only change starts from the writer's kept copy of the twin when it has one
    /// ([`crate::twin_cache`]); if the twin moved on since, the store refuses that write and the
    /// change is made to the store's copy instead.
    fn change_twin_in(
        &self,
        tx: &mut WriteTx<'_>,
        id: &str,
        change: &ServiceTwinChange,
        if_match: Option<&str>,
        replace: bool,
        now: &str,
    ) -> WriteResult<TwinState> {
        let epoch = tx.twin_epoch();
        let desired_only =
            change.tags.is_none() && change.desired.is_some() && !change.unchanged_writes_nothing;
        let held = desired_only
            .then(|| self.inner.twins.take(id, epoch))
            .flatten()
            .and_then(|c| HeldWhole::of(c.twin_version, c.twin));
        if let Some(held) = held {
            let mut twin = held.state;
            twin.configurations = tx.device_configurations(id)?.into_iter().collect();
            // A copy whose etag is not the one pinned may be an old copy: the store's decides.
            if etag_matches(if_match, &etag_for(twin.version)) {
                let notify = apply_service_change(&mut twin, change, replace, now)?;
                let desired = SectionText::of(&twin.desired)?;
                let at = HeldTwin {
                    row: held.row,
                    id,
                    twin_version: twin.version as i64,
                    revision: Some(twin.device.revision as i64),
                };
                twin.version += 1;
                let etag = etag_for(twin.version);
                if tx.try_update_desired_at(at, desired.parts(&twin.desired), &etag)? {
                    let kept = KeepAs {
                        row: held.row,
                        epoch,
                        desired_len: desired.len(),
                        other_len: held.other_len,
                        reported_len: held.reported_len,
                    };
                    return self.twin_changed(tx, id, twin, notify, replace, kept);
                }
            }
        }
        let row = tx
            .get_device(id)?
            .ok_or_else(|| HubError::device_not_found(id))?;
        let mut twin = TwinState::from_row(&row)?;
        twin.configurations = tx.device_configurations(id)?.into_iter().collect();
        let current = etag_for(twin.version);
        if !etag_matches(if_match, &current) {
            return Err(HubError::new(
                ErrorCode::PreconditionFailed,
                format!("twin '{id}' has etag \"{current}\", not the one in If-Match; read it again and retry"),
            )
            .into());
        }
        let before = change
            .unchanged_writes_nothing
            .then(|| (twin.tags.clone(), twin.desired.values.clone()));
        let notify = apply_service_change(&mut twin, change, replace, now)?;
        if change.tags.is_none() && change.desired.is_none() {
            return Ok(twin);
        }
        if before.is_some_and(|(tags, desired)| tags == twin.tags && desired == twin.desired.values)
        {
            // Nothing changed: `apply_patch` only restamped the copy's metadata, never written.
            return Ok(twin);
        }
        twin.version += 1;
        let tags_v = change
            .tags
            .as_ref()
            .map(|_| Value::Object(twin.tags.clone()));
        let desired_v = change
            .desired
            .as_ref()
            .map(|_| serde_json::to_value(&twin.desired).unwrap_or_default());
        let row_key = tx.update_twin_keyed(
            id,
            TwinSections {
                tags: tags_v.as_ref(),
                desired: desired_v.as_ref(),
                reported: None,
            },
            twin.version as i64,
            &etag_for(twin.version),
        )?;
        let kept = KeepAs {
            row: row_key,
            epoch,
            desired_len: json_len(&twin.desired),
            other_len: json_len(&row.identity) + json_len(&twin.tags),
            reported_len: json_len(&twin.reported),
        };
        self.twin_changed(tx, id, twin, notify, replace, kept)
    }

    /// What follows a service change's write of `twin` (at its new version): the change-feed
    /// row, the push and the engines once it commits, and the twin kept for the device's next
    /// write.
    fn twin_changed(
        &self,
        tx: &mut WriteTx<'_>,
        id: &str,
        twin: TwinState,
        notify: Option<(u64, Value)>,
        replace: bool,
        kept: KeepAs,
    ) -> WriteResult<TwinState> {
        let version = twin.version;
        let change = if replace {
            Change::TwinReplaced { version }
        } else {
            Change::TwinUpdated { version }
        };
        append_change(tx, Some(id), &change, self.now_ms())?;
        if let Some((version, body)) = notify {
            self.push_desired_on_commit(tx, id, version, body);
        }
        self.rollouts_twin_changed_on_commit(tx, id);
        self.configurations_wake_on_commit(tx);
        let copy = KeptTwin {
            row: kept.row,
            reported: twin.reported.clone(),
            reported_len: kept.reported_len,
            rest: Some(TwinRest {
                device: twin.device.clone(),
                tags: twin.tags.clone(),
                desired: twin.desired.clone(),
                desired_len: kept.desired_len,
                other_len: kept.other_len,
            }),
        };
        let (cache, device, epoch) = (self.inner.twins.clone(), id.to_string(), kept.epoch);
        tx.on_commit(move || cache.put(device, version as i64, epoch, copy));
        Ok(twin)
    }

    /// Records, in `tx`, the push of a desired patch at `version` to the device if it is
    /// connected and subscribed; it runs after the commit, in commit order.
    pub(crate) fn push_desired_on_commit(
        &self,
        tx: &mut WriteTx<'_>,
        id: &str,
        version: u64,
        body: Value,
    ) {
        let (hub, id) = (self.clone(), id.to_string());
        tx.on_commit(move || hub.push_desired(&id, version, body));
    }

    pub(crate) fn push_desired(&self, id: &str, version: u64, body: Value) {
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let sent = self.inner.connections.send_if(
            id,
            |s| s.desired.load(Ordering::Relaxed),
            DeviceCommand::DesiredPatch { version, body },
        );
        if sent {
            self.metrics()
                .desired_pushed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The device's twin GET: its desired and reported properties (the gateway writes the body).
    pub async fn device_twin_get(&self, id: &str) -> HubResult<DeviceTwin> {
        let twin = self.load_twin(id).await?;
        Ok(DeviceTwin {
            desired: twin.desired,
            reported: twin.reported,
        })
    }

    /// A device's reported-properties patch. Resolves after commit with the new reported `$version`.
    pub async fn device_report(&self, id: &str, patch: &[u8]) -> HubResult<u64> {
        let patch: Map<String, Value> = match serde_json::from_slice(patch) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(HubError::format("reported patch must be a JSON object")),
            Err(e) => {
                return Err(HubError::format(format!(
                    "reported patch is not valid JSON: {e}"
                )))
            }
        };
        let (now, key, hub) = (self.now_string(), id.to_string(), self.clone());
        let version = self
            .write_versioned(OnConflict::Recompute, move |tx| {
                hub.report_in(tx, &key, &patch, &now)
            })
            .await?;
        self.metrics()
            .reported_updates
            .fetch_add(1, Ordering::Relaxed);
        Ok(version)
    }

    /// Merges a reported patch inside `tx`, at the twin version it reads. The version check is
    /// part of the one `UPDATE`, so the hot path reads the row once, as before. The section is
    /// the copy the writer kept after the device's last write when it has one
    /// ([`crate::twin_cache`]); if the twin moved on since, the store refuses that write and
    /// the patch is merged into the store's copy instead.
    fn report_in(
        &self,
        tx: &mut WriteTx<'_>,
        id: &str,
        patch: &Map<String, Value>,
        now: &str,
    ) -> WriteResult<u64> {
        let epoch = tx.twin_epoch();
        if let Some(held) = self.inner.twins.take(id, epoch) {
            let (mut kept, version) = (held.twin, held.twin_version + 1);
            kept.reported.apply_patch(Section::Reported, patch, now)?;
            let text = SectionText::of(&kept.reported)?;
            let at = HeldTwin {
                row: kept.row,
                id,
                twin_version: held.twin_version,
                revision: None,
            };
            let etag = etag_for(version as u64);
            if tx.try_update_reported_at(at, text.parts(&kept.reported), &etag)? {
                kept.reported_len = text.len();
                return self.reported_written(tx, id, patch, kept, version, epoch);
            }
        }
        let (text, twin_version) = tx
            .get_reported_text(id)?
            .ok_or_else(|| HubError::device_not_found(id))?;
        let mut reported: TwinProperties = serde_json::from_str(&text).map_err(|e| {
            HubError::server(format!("stored reported of '{id}' is unreadable: {e}"))
        })?;
        reported.apply_patch(Section::Reported, patch, now)?;
        let version = twin_version + 1;
        let text = SectionText::of(&reported)?;
        let row = tx.update_reported_parts(
            id,
            text.parts(&reported),
            version,
            &etag_for(version as u64),
        )?;
        let kept = KeptTwin {
            row,
            reported,
            reported_len: text.len(),
            rest: None,
        };
        self.reported_written(tx, id, patch, kept, version, epoch)
    }

    /// What follows a reported section's write at twin `version`: the change-feed row, the
    /// engines told once it commits, and the twin kept for the device's next write.
    fn reported_written(
        &self,
        tx: &mut WriteTx<'_>,
        id: &str,
        patch: &Map<String, Value>,
        kept: KeptTwin,
        version: i64,
        epoch: u64,
    ) -> WriteResult<u64> {
        let section_version = kept.reported.version;
        let change = Change::TwinReported {
            version: section_version,
        };
        append_change(tx, Some(id), &change, self.now_ms())?;
        self.configurations_wake_on_commit(tx);
        self.rollouts_reported_on_commit(tx, id, patch.keys());
        if patch.contains_key("firmware") {
            self.rollouts_observe_report_on_commit(tx, id, &kept.reported);
        }
        let (cache, device) = (self.inner.twins.clone(), id.to_string());
        tx.on_commit(move || cache.put(device, version, epoch, kept));
        Ok(section_version)
    }
}

/// A desired or reported section serialized for the store.
struct SectionText {
    values: String,
    metadata: String,
}

impl SectionText {
    /// The section's values and metadata (packed, as the store keeps it) as JSON texts.
    fn of(section: &TwinProperties) -> HubResult<SectionText> {
        let server = |e: serde_json::Error| HubError::server(e.to_string());
        Ok(SectionText {
            values: serde_json::to_string(&section.values).map_err(server)?,
            metadata: section.stored_metadata().map_err(server)?,
        })
    }

    fn parts<'a>(&'a self, section: &TwinProperties) -> SectionParts<'a> {
        SectionParts {
            values: &self.values,
            metadata: &self.metadata,
            version: section.version as i64,
        }
    }

    fn len(&self) -> usize {
        self.values.len() + self.metadata.len()
    }
}

/// A kept twin that holds the whole twin, as a desired change starts from it.
struct HeldWhole {
    state: TwinState,
    row: i64,
    other_len: usize,
    reported_len: usize,
}

impl HeldWhole {
    /// The whole twin in `kept` at `twin_version`, if it holds more than the reported section.
    fn of(twin_version: i64, kept: KeptTwin) -> Option<HeldWhole> {
        let rest = kept.rest?;
        Some(HeldWhole {
            row: kept.row,
            other_len: rest.other_len,
            reported_len: kept.reported_len,
            state: TwinState {
                device: rest.device,
                tags: rest.tags,
                desired: rest.desired,
                reported: kept.reported,
                version: twin_version.max(0) as u64,
                configurations: BTreeMap::new(),
            },
        })
    }
}

/// How a twin written by a service change is kept: its row key, the epoch of the write and the
/// text lengths the cache's budget counts.
struct KeepAs {
    row: i64,
    epoch: u64,
    desired_len: usize,
    other_len: usize,
    reported_len: usize,
}

/// The length of `value`'s JSON text, counted without building it.
fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Applies a service change's tags and desired properties to `twin` (not yet written); answers
/// the desired patch to push to the device, with its desired `$version`, when there is one.
fn apply_service_change(
    twin: &mut TwinState,
    change: &ServiceTwinChange,
    replace: bool,
    now: &str,
) -> HubResult<Option<(u64, Value)>> {
    if let Some(tags) = &change.tags {
        if replace {
            fleethub_core::twin::limits::validate_section(Section::Tags, tags)?;
            twin.tags = tags.clone();
        } else {
            apply_tags_patch(&mut twin.tags, tags)?;
        }
    }
    let Some(desired) = &change.desired else {
        return Ok(None);
    };
    let device_patch = if replace {
        let mut removal: Map<String, Value> = twin
            .desired
            .values
            .keys()
            .map(|k| (k.clone(), Value::Null))
            .collect();
        removal.extend(desired.clone());
        twin.desired.replace(Section::Desired, desired, now)?;
        removal
    } else {
        twin.desired.apply_patch(Section::Desired, desired, now)?;
        desired.clone()
    };
    let v = twin.desired.version;
    Ok(Some((
        v,
        TwinProperties::patch_to_device_json(&device_patch, v),
    )))
}

/// Merges a desired-properties patch into a device's twin inside `tx` (pushed to the device
/// after the commit): an engine's own change, such as a rollout's `desired.firmware`.
pub(crate) fn patch_desired_in(
    hub: &Hub,
    tx: &mut WriteTx<'_>,
    id: &str,
    desired: Map<String, Value>,
    now: &str,
) -> HubResult<()> {
    let change = ServiceTwinChange {
        tags: None,
        desired: Some(desired),
        unchanged_writes_nothing: false,
    };
    hub.change_twin_in(tx, id, &change, None, false, now)?;
    Ok(())
}

/// The twin sections of a bulk import entry for an existing device.
pub(crate) struct ImportedSections<'a> {
    pub tags: Option<&'a Map<String, Value>>,
    pub properties: Option<&'a Value>,
    pub unchanged_writes_nothing: bool,
}

/// Bulk import: merges the tags and desired properties given with a registry entry into an
/// existing twin (an export's `$metadata` and `$version` skipped); answers the twin's version
/// afterwards (unchanged when nothing was written).
pub(crate) fn import_twin_in(
    hub: &Hub,
    tx: &mut WriteTx<'_>,
    id: &str,
    sections: ImportedSections<'_>,
    now: &str,
) -> HubResult<u64> {
    let desired = sections
        .properties
        .and_then(|p| p.get("desired"))
        .and_then(Value::as_object)
        .map(without_system);
    let change = ServiceTwinChange {
        tags: sections.tags.map(without_system),
        desired,
        unchanged_writes_nothing: sections.unchanged_writes_nothing,
    };
    Ok(hub
        .change_twin_in(tx, id, &change, None, false, now)?
        .version)
}
