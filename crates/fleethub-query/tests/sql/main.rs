//! The SQL executor against a real store: the compiled SQL runs on the store's SQLite
//! connections (`Reads::run_query`), with the functions it calls registered by the store.

mod agreement;
mod limits;
mod store;

use std::collections::HashSet;
use std::sync::Arc;

use fleethub_core::twin::TwinProperties;
use fleethub_query::{CompiledQuery, Condition};
use fleethub_store::{DeviceRow, QueryRows, Reads, SplitScans, Store, StoreConfig, StoreError};
use serde_json::{json, Value};

/// A store in a temporary directory whose `connectionState` answers from `connected`; it
/// splits every aggregate over devices into two parts ([`Store::query`]), however few.
pub(crate) fn open_store(connected: HashSet<String>) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        read_connections: 2,
        split: SplitScans {
            parts: 2,
            min_rows: 0,
        },
        ..StoreConfig::new(dir.path().join("db.sqlite"))
    };
    let store = Store::open(cfg).expect("open store");
    store.set_presence(Arc::new(move |id: &str| connected.contains(id)));
    (store, dir)
}

/// A device row with these twin sections (desired/reported given as plain values).
pub(crate) fn device(id: &str, tags: Value, desired: Value, reported: Value) -> DeviceRow {
    let section = |values: Value, version: u64| {
        serde_json::to_value(TwinProperties {
            values: values.as_object().cloned().unwrap_or_default(),
            metadata: Default::default(),
            version,
        })
        .expect("section")
    };
    DeviceRow {
        device_id: id.to_string(),
        status: "enabled".into(),
        identity: entry(id),
        tags,
        desired: section(desired, 2),
        reported: section(reported, 5),
        twin_version: 7,
        twin_etag: "AAAAAAAAAAc=".into(),
        revision: 1,
    }
}

/// A registry entry in the hub's shape, which the store keeps packed (only what differs from a
/// new device's entry), so the compiled SQL reads `lastActivityTime` through `fh_entry`: half
/// the devices keep a new device's `0001-01-01T00:00:00Z` (left out of the stored text), the
/// others have activity.
fn entry(id: &str) -> Value {
    let mut entry = fleethub_core::stored_entry::new_entry(id, "enabled");
    if !id.bytes().map(u32::from).sum::<u32>().is_multiple_of(2) {
        entry["lastActivityTime"] = json!("2024-05-01T10:00:00Z");
    }
    entry
}

/// The twin in IoT Hub's service shape, as the hub builds it from a row.
pub(crate) fn twin(row: &DeviceRow, connected: bool) -> Value {
    let section = |v: &Value| {
        serde_json::from_value::<TwinProperties>(v.clone())
            .expect("section")
            .to_twin_json()
    };
    json!({
        "deviceId": row.device_id,
        "etag": row.twin_etag,
        "status": row.status,
        "connectionState": if connected { "Connected" } else { "Disconnected" },
        "lastActivityTime": row.identity.get("lastActivityTime"),
        "version": row.twin_version,
        "tags": row.tags,
        "properties": { "desired": section(&row.desired), "reported": section(&row.reported) },
    })
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub(crate) async fn insert_all(store: &Store, rows: Vec<DeviceRow>) {
    store
        .write(move |tx| {
            for row in &rows {
                tx.insert_device(row)?;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .expect("insert devices");
}

/// Runs one compiled page in the store, on one connection.
pub(crate) async fn run_compiled(
    store: &Store,
    compiled: CompiledQuery,
) -> Result<QueryRows, StoreError> {
    store.read(move |r| r.run_query(&compiled)).await
}

/// Runs one compiled page as the hub does ([`Store::query`]): an aggregate over devices split
/// over two read connections and merged.
pub(crate) async fn run_split(
    store: &Store,
    compiled: CompiledQuery,
) -> Result<QueryRows, StoreError> {
    store.query(compiled).await
}

/// The ids of the devices `condition` selects, by the SQL compiled for the store.
pub(crate) async fn selected(
    store: &Store,
    condition: &Condition,
) -> Result<Vec<String>, StoreError> {
    let fragment = condition.to_sql(store.dialect());
    store
        .read(move |r| r.devices_matching(&fragment, None, usize::MAX))
        .await
}
