//! Bringing twins in line with the configurations that target them.
//!
//! One function, [`reconcile_in`], decides a device's configured state from scratch inside a
//! store write: which configurations target the twin now (their conditions evaluated on it by the
//! query evaluator), which wins each path (highest priority, then newest), the statuses, and the
//! settings of configurations it no longer has (removed unless another configuration sets them).
//! It writes the desired properties only if they change, so applying twice patches nothing the
//! second time. Two paths call it:
//! - a configuration's change creates an `applyConfigurations` device operation in the same
//!   commit (every device its condition selects, plus those whose twin carries it); the job
//!   engine steps it, and each device's row is marked completed in the write that reconciles it,
//!   so a restart neither repeats nor skips a device;
//! - a twin's change (tags, desired, reported, registry status, creation) wakes the change-feed
//!   follower from the write's commit effects; it reconciles the devices of the events after its
//!   cursor and stores the cursor in the same write, so a restart resumes where it stopped.

use super::request::{overlaps, Stored};
use crate::device::etag_for;
use crate::events::append_change;
use crate::jobs::own_rows;
use crate::jobs::JobDocument;
use crate::twin::{PropertiesRead, TwinState};
use crate::Hub;
use fleethub_core::configuration::ConfigurationStatus;
use fleethub_core::events::Change;
use fleethub_core::twin::{Section, TwinProperties};
use fleethub_core::{HubError, HubResult};
use fleethub_query::Condition;
use fleethub_store::{
    ConfigurationReads, ConfiguredDesired, DeviceJobStatus, DeviceStamp, EventRow, JobReads, Reads,
    StoredJson, WriteTx,
};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Where the change-feed follower has read to (a setting, written with its reconciliations).
const CURSOR_KEY: &str = "configurations.cursor";
/// Events the follower reads per write.
const FOLLOW_BATCH: usize = 1000;
/// How long a metrics read waits for the follower to catch up before answering anyway.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// The configuration engine's in-memory state.
pub(crate) struct ConfigurationsState {
    /// Signalled after a commit that may change what a configuration selects.
    wake: Notify,
    /// Whether any configuration exists (deleted ones still being removed count): while none
    /// does, twin writes record no wake-up.
    active: AtomicBool,
    /// The follower's cursor after its last step.
    processed: watch::Sender<i64>,
    /// What the metrics reads counted, kept current from the change feed.
    pub(super) counts: super::counts::CountCache,
}

impl Default for ConfigurationsState {
    fn default() -> Self {
        ConfigurationsState {
            wake: Notify::new(),
            active: AtomicBool::new(false),
            processed: watch::Sender::new(0),
            counts: Default::default(),
        }
    }
}

impl ConfigurationsState {
    /// A configuration now exists: twin writes from now on wake the follower.
    pub(crate) fn mark_active(self: &Arc<Self>, tx: &mut WriteTx<'_>) {
        self.active.store(true, Ordering::Release);
        let state = self.clone();
        tx.on_commit(move || state.wake.notify_one());
    }
}

/// A configuration, read for application: its condition parsed, its content as paths.
struct Loaded {
    id: String,
    /// Its etag when read: another read at the same etag saw the same configuration.
    etag: String,
    deleted: bool,
    /// `None`: it targets no device (an empty condition).
    condition: Option<Condition>,
    /// Paths under `properties.desired`, as segments, with their values.
    paths: Vec<(Vec<String>, Value)>,
    /// The property sections its condition reads.
    reads: PropertiesRead,
}

/// Every stored configuration, highest precedence first (priority, then the newest).
fn load(r: &impl Reads) -> HubResult<Vec<Loaded>> {
    let mut rows = r.list_configurations(usize::MAX)?;
    rows.sort_by(|a, b| (b.priority, b.created_ms, &a.id).cmp(&(a.priority, a.created_ms, &b.id)));
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let stored = Stored::from_row(&row)?;
        let condition = match stored.target_condition.trim() {
            "" => None,
            text => Some(Condition::parse(text).map_err(|e| {
                HubError::server(format!("stored targetCondition of '{}': {e}", row.id))
            })?),
        };
        let paths = stored
            .content
            .device_content
            .iter()
            .map(|(path, value)| (segments(path), value.clone()))
            .collect();
        let reads = condition
            .as_ref()
            .filter(|_| !row.deleted)
            .map_or(PropertiesRead::NONE, PropertiesRead::of);
        out.push(Loaded {
            id: row.id,
            etag: row.etag,
            deleted: row.deleted,
            condition,
            paths,
            reads,
        });
    }
    Ok(out)
}

/// A content path's segments under `properties.desired` (checked on the way in).
fn segments(path: &str) -> Vec<String> {
    path.strip_prefix("properties.desired.")
        .unwrap_or(path)
        .split('.')
        .map(str::to_string)
        .collect()
}

/// Sets `value` at `path` in a merge patch.
fn set_path(patch: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = patch;
    for p in parents {
        let entry = node
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        node = next;
    }
    node.insert(last.clone(), value);
}

/// A content's `deviceContent` as one desired-properties merge patch.
pub(crate) fn content_patch_of(device_content: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for (path, value) in device_content {
        set_path(&mut patch, &segments(path), value.clone());
    }
    patch
}

/// A checked content as one desired-properties merge patch.
pub(crate) fn content_patch(content: &super::ConfigurationContent) -> Map<String, Value> {
    content_patch_of(&content.device_content)
}

/// One device's configured state as decided from a read of it: the statuses it should carry
/// and the desired section it should have, to be written only if nothing of the device moved
/// since that read (its [`DeviceStamp`] and the statuses it held).
struct Plan {
    /// The device as read (`None`: it does not exist, and there is nothing to write).
    stamp: Option<DeviceStamp>,
    /// The configurations the twin carried when read.
    held: Vec<(String, ConfigurationStatus)>,
    /// The statuses it should carry.
    statuses: BTreeMap<String, ConfigurationStatus>,
    /// Its new desired section, when that changes.
    desired: Option<DesiredWrite>,
}

/// A desired section to write, and what the device is sent once it commits.
struct DesiredWrite {
    /// The section's values, already in the store's encoding (made where the plan was).
    values: StoredJson,
    /// The section's metadata as JSON text.
    metadata: String,
    /// The section's new `$version`.
    version: u64,
    /// The patch as the device gets it.
    body: Value,
}

/// Reads a device and decides its configured state (see the module docs); on a read connection
/// or on the writer.
fn plan(
    hub: &Hub,
    r: &impl Reads,
    configs: &[Loaded],
    device_id: &str,
    now: &str,
) -> HubResult<Plan> {
    let held = r.device_configurations(device_id)?;
    // Only the sections some condition reads are decoded (the desired one always is: it is what
    // the plan changes).
    let reads = configs
        .iter()
        .fold(PropertiesRead::NONE, |all, c| all.or(c.reads));
    let row = if reads.reported {
        r.get_device(device_id)?
    } else {
        r.get_device_without_reported(device_id)?
    };
    let (Some(stamp), Some(row)) = (r.device_stamp(device_id)?, row) else {
        return Ok(Plan {
            stamp: None,
            held,
            statuses: BTreeMap::new(),
            desired: None,
        });
    };
    let mut twin = TwinState::from_row(&row)?;
    twin.configurations = held.iter().cloned().collect();
    let doc = twin.evaluation_document_of(hub.connections().is_connected(device_id), reads);
    let mut claimed: Vec<&[String]> = Vec::new();
    let mut patch = Map::new();
    let mut statuses: BTreeMap<String, ConfigurationStatus> = BTreeMap::new();
    let targeting = configs
        .iter()
        .filter(|c| !c.deleted && c.condition.as_ref().is_some_and(|k| k.matches(&doc)));
    for c in targeting {
        let mut won = false;
        for (path, value) in &c.paths {
            if claimed.iter().any(|p| overlaps(p, path)) {
                continue;
            }
            claimed.push(path);
            won = true;
            set_path(&mut patch, path, value.clone());
        }
        let status = if won {
            ConfigurationStatus::Applied
        } else {
            ConfigurationStatus::Targeted
        };
        statuses.insert(c.id.clone(), status);
    }
    // Settings of configurations the twin no longer has go, unless a winner sets them.
    for (id, _) in held.iter().filter(|(id, _)| !statuses.contains_key(id)) {
        let Some(c) = configs.iter().find(|c| &c.id == id) else {
            continue;
        };
        for (path, _) in &c.paths {
            if !claimed.iter().any(|p| overlaps(p, path)) {
                set_path(&mut patch, path, Value::Null);
            }
        }
    }
    let desired = match new_desired(r, &twin, &patch, now) {
        Ok(desired) => desired,
        Err(e) => {
            // The twin cannot take the settings (its desired section would outgrow its limit):
            // it stays targeted, not applied, and the reason is logged.
            tracing::warn!(device_id, "configurations not applied: {}", e.message);
            for s in statuses.values_mut() {
                *s = ConfigurationStatus::Targeted;
            }
            None
        }
    };
    Ok(Plan {
        stamp: Some(stamp),
        held,
        statuses,
        desired,
    })
}

/// The twin's desired section after `patch`, if that changes it.
fn new_desired(
    r: &impl Reads,
    twin: &TwinState,
    patch: &Map<String, Value>,
    now: &str,
) -> HubResult<Option<DesiredWrite>> {
    if patch.is_empty() {
        return Ok(None);
    }
    let mut desired = twin.desired.clone();
    desired.apply_patch(Section::Desired, patch, now)?;
    if desired.values == twin.desired.values {
        return Ok(None);
    }
    let server = |e: serde_json::Error| HubError::server(e.to_string());
    Ok(Some(DesiredWrite {
        values: r.stored_json(&serde_json::to_string(&desired.values).map_err(server)?)?,
        // Packed as the store keeps it (`stored_metadata`), as every twin write does.
        metadata: desired.stored_metadata().map_err(server)?,
        version: desired.version,
        body: TwinProperties::patch_to_device_json(patch, desired.version),
    }))
}

/// Writes a plan: the desired section if it changes (the device gets the patch after the commit,
/// in commit order), then the statuses that differ. The desired write itself checks that the
/// device is still as the plan read it; a plan without one must have been checked by the caller
/// ([`write_checked`]). With `event`, a desired change records its own `twin.configured` change;
/// a batch of an operation records one change for the batch instead. Returns whether the
/// desired properties changed, or `None`, with nothing written, if the device moved.
fn write_plan(
    hub: &Hub,
    tx: &mut WriteTx<'_>,
    device_id: &str,
    plan: Plan,
    event: Option<i64>,
) -> HubResult<Option<bool>> {
    let Some(stamp) = plan.stamp else {
        return Ok(Some(false));
    };
    let changed = plan.desired.is_some();
    if let Some(desired) = plan.desired {
        let version = stamp.twin_version + 1;
        let write = ConfiguredDesired {
            device_id,
            read: stamp,
            held: &plan.held,
            values: &desired.values,
            metadata: &desired.metadata,
            desired_version: desired.version,
            twin_etag: &etag_for(version as u64),
        };
        if !tx.write_configured_desired(&write)? {
            return Ok(None);
        }
        if let Some(now_ms) = event {
            let change = Change::TwinConfigured {
                version: version as u64,
            };
            append_change(tx, Some(device_id), &change, now_ms)?;
        }
        hub.push_desired_on_commit(tx, device_id, desired.version, desired.body);
    }
    for (id, status) in &plan.statuses {
        if !plan.held.iter().any(|(h, s)| h == id && s == status) {
            tx.set_device_configuration(id, device_id, *status)?;
        }
    }
    for (id, _) in plan
        .held
        .iter()
        .filter(|(id, _)| !plan.statuses.contains_key(id))
    {
        tx.remove_device_configuration(id, device_id)?;
    }
    Ok(Some(changed))
}

/// Writes a plan made on a read connection if the device is still as read then (see
/// [`write_plan`]); `None`, with nothing written, if it moved.
fn write_checked(
    hub: &Hub,
    tx: &mut WriteTx<'_>,
    device_id: &str,
    plan: Plan,
) -> HubResult<Option<bool>> {
    if plan.desired.is_none() && !still_as_read(tx, device_id, &plan)? {
        return Ok(None);
    }
    write_plan(hub, tx, device_id, plan, None)
}

/// Decides and writes one device's configured state inside a store write (the follower's path,
/// and a prepared device that moved since it was read). Returns whether its desired properties
/// changed.
fn reconcile_in(
    hub: &Hub,
    tx: &mut WriteTx<'_>,
    configs: &[Loaded],
    device_id: &str,
    now: &str,
    event: Option<i64>,
) -> HubResult<bool> {
    let plan = plan(hub, &*tx, configs, device_id, now)?;
    write_plan(hub, tx, device_id, plan, event)?.ok_or_else(|| {
        HubError::server(format!(
            "device '{device_id}' moved inside the write that read it"
        ))
    })
}

/// Removes deleted configurations no twin carries any more.
fn purge_removed_in(tx: &mut WriteTx<'_>, configs: &[Loaded]) -> HubResult<()> {
    for c in configs.iter().filter(|c| c.deleted) {
        if tx.configuration_counts(&c.id)?.targeted == 0 {
            tx.purge_configuration(&c.id)?;
        }
    }
    Ok(())
}

/// A batch of an operation's pending devices, each planned on a read connection.
#[derive(Default)]
pub(super) struct Prepared {
    /// The configurations the plans were made with.
    configs: Vec<Loaded>,
    /// The devices in id order, each with its plan (or why planning it failed).
    plans: Vec<(String, HubResult<Plan>)>,
}

/// One step of an `applyConfigurations` operation: reconciles up to `limit` pending devices,
/// `batch` per store write, each marked completed in the write that reconciles it. Returns how
/// many it processed.
///
/// As a twin job's batches do (`jobs/twin_batch.rs`), each batch is read and planned on a read
/// connection (the twin read and parsed, the conditions evaluated, the new desired section
/// serialized), and the writer only checks and writes: a device whose stamp or statuses moved
/// since the read (or a batch whose configurations changed) is planned again on the writer, so
/// no change is lost or applied twice. While one batch is written the next is planned.
pub(crate) async fn run_operation(
    hub: &Hub,
    doc: &JobDocument,
    limit: usize,
    batch: usize,
) -> HubResult<usize> {
    let batch = batch.max(1);
    let mut left = limit;
    let mut processed = 0;
    let mut next = prepare(hub, doc, String::new(), batch.min(left)).await?;
    while !next.plans.is_empty() {
        let current = next;
        let count = current.plans.len();
        left = left.saturating_sub(count);
        let cursor = current.plans.last().map(|(id, _)| id.clone());
        let following = async {
            match cursor {
                Some(after) if left > 0 && count == batch => {
                    prepare(hub, doc, after, batch.min(left)).await
                }
                _ => Ok(Prepared::default()),
            }
        };
        let (written, following) = tokio::join!(commit(hub, doc, current), following);
        written?;
        processed += count;
        next = following?;
    }
    Ok(processed)
}

/// Reads up to `limit` pending devices of the operation after `after` and plans each.
pub(super) async fn prepare(
    hub: &Hub,
    doc: &JobDocument,
    after: String,
    limit: usize,
) -> HubResult<Prepared> {
    let (h, job, now) = (hub.clone(), doc.job_id.clone(), hub.now_string());
    hub.store()
        .read(move |r| {
            let ids = r.job_device_ids_after(&job, DeviceJobStatus::Pending, &after, limit)?;
            if ids.is_empty() {
                return Ok(Ok(Prepared::default()));
            }
            let configs = match load(r) {
                Ok(configs) => configs,
                Err(e) => return Ok(Err(e)),
            };
            let plans = ids
                .into_iter()
                .map(|id| {
                    let plan = plan(&h, r, &configs, &id, &now);
                    (id, plan)
                })
                .collect();
            Ok(Ok(Prepared { configs, plans }))
        })
        .await?
}

/// Writes a planned batch (see [`run_operation`]): one `twins.configured` change for the
/// batch, and each device's desired patch pushed after the commit, in commit order.
pub(super) async fn commit(hub: &Hub, doc: &JobDocument, prepared: Prepared) -> HubResult<()> {
    let (h, job) = (hub.clone(), doc.job_id.clone());
    hub.store()
        .write(move |tx| commit_in(&h, tx, &job, prepared))
        .await
}

fn commit_in(hub: &Hub, tx: &mut WriteTx<'_>, job: &str, prepared: Prepared) -> HubResult<()> {
    let configs = load(tx)?;
    let same = same_configurations(&configs, &prepared.configs);
    let (now, now_ms) = (hub.now_string(), hub.now_ms());
    let ids: Vec<String> = prepared.plans.iter().map(|(id, _)| id.clone()).collect();
    let mut plans: HashMap<String, HubResult<Plan>> = prepared.plans.into_iter().collect();
    let (mut configured, mut redone) = (0u64, 0u64);
    let finished = own_rows::rows_in(
        hub,
        tx,
        job,
        &ids,
        |tx, id| {
            // A device planned on the read connection is written as planned unless it moved
            // since (or the configurations did); then it is decided again here.
            let planned = plans.remove(id);
            let was_planned = planned.is_some();
            let written = match planned {
                Some(Ok(plan)) if same => write_checked(hub, tx, id, plan)?,
                _ => None,
            };
            let changed = match written {
                Some(changed) => changed,
                None => {
                    redone += u64::from(was_planned);
                    reconcile_in(hub, tx, &configs, id, &now, None)?
                }
            };
            configured += u64::from(changed);
            Ok(())
        },
        |_, _, _| Ok(()),
    )?;
    if redone > 0 {
        let counter = &hub.metrics().write_conflicts;
        counter.fetch_add(redone, Ordering::Relaxed);
    }
    // One change for the batch, not one per twin: the follower would read each only to skip it.
    if let (true, Some(first), Some(last)) = (configured > 0, ids.first(), ids.last()) {
        let change = Change::TwinsConfigured {
            job_id: job.to_string(),
            configured,
            first_device_id: first.clone(),
            last_device_id: last.clone(),
        };
        append_change(tx, None, &change, now_ms)?;
    }
    purge_removed_in(tx, &configs)?;
    hub.operation_devices_finished_on_commit(tx, job, finished);
    Ok(())
}

/// Whether the device is still what `plan` was made from: the same row at the same twin version
/// and registry revision, carrying the same configuration statuses.
fn still_as_read(tx: &WriteTx<'_>, device_id: &str, plan: &Plan) -> HubResult<bool> {
    Ok(tx.device_stamp(device_id)? == plan.stamp
        && tx.device_configurations(device_id)? == plan.held)
}

/// Whether two reads of the configurations found the same ones at the same etags.
fn same_configurations(a: &[Loaded], b: &[Loaded]) -> bool {
    let key = |c: &Loaded| (c.id.clone(), c.etag.clone(), c.deleted);
    a.len() == b.len() && a.iter().map(key).eq(b.iter().map(key))
}

/// Moves the follower's cursor forward to `seq` (never back: a follower step that read its
/// events before a first configuration skipped the log must not undo the skip).
fn advance_cursor_in(tx: &mut WriteTx<'_>, seq: i64) -> HubResult<()> {
    let stored = tx
        .get_setting(CURSOR_KEY)?
        .and_then(|c| c.parse::<i64>().ok())
        .unwrap_or(0);
    if seq > stored {
        tx.put_setting(CURSOR_KEY, &seq.to_string())?;
    }
    Ok(())
}

/// Called in the write that creates a configuration: when it is the first, the follower skips
/// the change feed up to now, because the configuration's operation covers every twin as it is
/// (a registry imported before it would otherwise be evaluated twice, once unpaced).
pub(crate) fn skip_backlog_if_first_in(tx: &mut WriteTx<'_>) -> HubResult<()> {
    if tx.list_configurations(1)?.is_empty() {
        let last = tx.last_event_seq()?;
        advance_cursor_in(tx, last)?;
    }
    Ok(())
}

/// The devices whose twin an event says changed in a way a target condition may see, plus
/// those of the events of `also` (kinds: per-device ones, and `twins.configured`, a batch of an
/// operation's application).
pub(super) fn changed_devices(
    r: &impl Reads,
    events: &[EventRow],
    also: &[&str],
) -> HubResult<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for e in events {
        match e.kind.as_str() {
            "twin.updated" | "twin.replaced" | "twin.reported" | "device.created"
            | "device.updated" => ids.extend(e.device_id.clone()),
            "twins.configured" if !also.contains(&"twins.configured") => {}
            kind if also.contains(&kind) && e.device_id.is_some() => {
                ids.extend(e.device_id.clone())
            }
            "devices.created" => {
                let listed = e.body["deviceIds"].as_array().into_iter().flatten();
                ids.extend(listed.filter_map(|v| v.as_str().map(str::to_string)));
            }
            // A batch: the operation's (or job's) completed rows between its first and last
            // device say which twins it went through.
            "job.twins_updated" | "twins.configured" => {
                let text = |k: &str| e.body[k].as_str().unwrap_or_default().to_string();
                let (job, first, last) =
                    (text("jobId"), text("firstDeviceId"), text("lastDeviceId"));
                ids.extend(r.completed_job_devices_between(&job, &first, &last)?);
            }
            _ => {}
        }
    }
    Ok(ids)
}

impl Hub {
    pub(crate) fn configurations_state(&self) -> &Arc<ConfigurationsState> {
        &self.inner.configurations
    }

    /// Records, in a write that changes a twin or a registry entry, the follower's wake-up
    /// after the commit (nothing while no configuration exists).
    pub(crate) fn configurations_wake_on_commit(&self, tx: &mut WriteTx<'_>) {
        let state = self.configurations_state();
        if state.active.load(Ordering::Acquire) {
            let state = state.clone();
            tx.on_commit(move || state.wake.notify_one());
        }
    }

    /// Waits (a little) until the follower has handled every change committed before this call,
    /// so metrics read after a twin write reflect it.
    pub(crate) async fn configurations_caught_up(&self) {
        let state = self.configurations_state().clone();
        // Without the background follower (tests that step it) there is nothing to wait for.
        if !state.active.load(Ordering::Acquire) || !self.config().jobs.autorun {
            return;
        }
        let Ok(target) = self.last_event_seq().await else {
            return;
        };
        state.wake.notify_one();
        let mut rx = state.processed.subscribe();
        let _ = tokio::time::timeout(CATCH_UP_WAIT, rx.wait_for(|seen| *seen >= target)).await;
    }

    /// One step of the change-feed follower: reconciles the devices of the next events after
    /// its cursor and moves the cursor, in one write. Returns whether it read any event.
    pub async fn follow_configurations(&self) -> HubResult<bool> {
        let (cursor, events, any) = self
            .store()
            .read(|r| {
                let cursor = r
                    .get_setting(CURSOR_KEY)?
                    .and_then(|c| c.parse::<i64>().ok())
                    .unwrap_or(0);
                let any = !r.list_configurations(1)?.is_empty();
                let events = if any {
                    r.events_after(cursor, FOLLOW_BATCH)?
                } else {
                    Vec::new()
                };
                Ok::<_, fleethub_store::StoreError>((cursor, events, any))
            })
            .await?;
        let state = self.configurations_state().clone();
        if !any {
            // Nothing to apply: skip the log up to its end, so a first configuration starts
            // from now (its operation covers every twin as it is).
            state.active.store(false, Ordering::Release);
            let last = self
                .store()
                .write(|tx| {
                    // Checked again in the write: a configuration created since the read must
                    // see the events after it.
                    skip_backlog_if_first_in(tx)?;
                    let cursor = tx.get_setting(CURSOR_KEY)?.and_then(|c| c.parse().ok());
                    Ok::<_, HubError>(cursor.unwrap_or(0))
                })
                .await?;
            state.processed.send_replace(last);
            return Ok(false);
        }
        state.active.store(true, Ordering::Release);
        let Some(last) = events.last().map(|e| e.seq) else {
            state.processed.send_replace(cursor);
            return Ok(false);
        };
        let (hub, now, now_ms) = (self.clone(), self.now_string(), self.now_ms());
        self.store()
            .write(move |tx| {
                let ids = changed_devices(tx, &events, &[])?;
                let configs = load(tx)?;
                for id in &ids {
                    reconcile_in(&hub, tx, &configs, id, &now, Some(now_ms))?;
                }
                purge_removed_in(tx, &configs)?;
                advance_cursor_in(tx, last)?;
                Ok::<_, HubError>(())
            })
            .await?;
        state.processed.send_replace(last);
        Ok(true)
    }
}

/// Runs the change-feed follower in the background until the hub is dropped.
pub(crate) fn spawn_follower(inner: Weak<crate::hub::HubInner>, state: Arc<ConfigurationsState>) {
    tokio::spawn(async move {
        loop {
            let Some(inner) = inner.upgrade() else { return };
            let hub = Hub { inner };
            let more = match hub.follow_configurations().await {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!("configuration follower step failed: {e}");
                    drop(hub);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            drop(hub);
            if more {
                tokio::task::yield_now().await;
                continue;
            }
            // Woken by commits; the timer only bounds how long a missed wake-up could matter.
            tokio::select! {
                _ = state.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_paths_become_one_merge_patch() {
        let mut content = Map::new();
        content.insert("properties.desired.config.a".into(), json!(1));
        content.insert("properties.desired.config.b".into(), json!({"x": true}));
        content.insert("properties.desired.top".into(), json!("v"));
        assert_eq!(
            Value::Object(content_patch_of(&content)),
            json!({"config": {"a": 1, "b": {"x": true}}, "top": "v"})
        );
    }

    #[test]
    fn a_condition_reads_the_property_sections_its_paths_name() {
        let read = |text: &str| PropertiesRead::of(&Condition::parse(text).unwrap());
        let (d, r) = (true, false);
        let sections = |p: PropertiesRead| (p.desired, p.reported);
        assert_eq!(sections(read("tags.city = 'boston'")), (r, r));
        assert_eq!(
            sections(read("deviceId = 'x' AND status = 'enabled'")),
            (r, r)
        );
        assert_eq!(sections(read("properties.desired.x = 1")), (d, r));
        assert_eq!(
            sections(read("tags.a = 1 AND properties.reported.fw.v > 2")),
            (r, d)
        );
        assert_eq!(sections(read("IS_OBJECT(properties)")), (d, d));
        assert_eq!(
            sections(read("IS_DEFINED(properties.reported.$metadata.fw)")),
            (r, d)
        );
    }
}
