//! Crate tests: parser snapshots, store-backed SQL behaviour, and executor agreement.

mod agreement;
mod limits;
mod parse;
mod store;

use std::collections::HashSet;
use std::sync::Arc;

use fleethub_core::twin::TwinProperties;
use fleethub_store::{ConnectionInit, DeviceRow, Store, StoreConfig};
use serde_json::{json, Value};

use crate::register_sql_functions;

/// A store in a temporary directory whose `fh_connected` answers from `connected`.
pub(crate) fn open_store(connected: HashSet<String>) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let connected = Arc::new(connected);
    let init = ConnectionInit(Arc::new(move |c| {
        let connected = connected.clone();
        register_sql_functions(c, Arc::new(move |id: &str| connected.contains(id)))
    }));
    let cfg = StoreConfig {
        connection_init: Some(init),
        read_connections: 2,
        ..StoreConfig::new(dir.path().join("db.sqlite"))
    };
    (Store::open(cfg).expect("open store"), dir)
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
        identity: json!({"deviceId": id, "lastActivityTime": "2024-05-01T10:00:00Z"}),
        tags,
        desired: section(desired, 2),
        reported: section(reported, 5),
        twin_version: 7,
        twin_etag: "AAAAAAAAAAc=".into(),
    }
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
            Ok::<_, fleethub_store::StoreError>(())
        })
        .await
        .expect("insert devices");
}
