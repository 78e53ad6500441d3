//! Configurations (IoT Hub automatic device management): one `configurations` row per
//! configuration, and one `device_configurations` row per device a configuration targets,
//! holding that twin's `configurations.{id}.status`.

use fleethub_core::configuration::ConfigurationStatus;
use rusqlite::{params, OptionalExtension, Row};
use serde_json::Value;

use super::reads::{json_text, sql_limit};
use crate::{DeviceStamp, Reads, StoreError, WriteTx};

/// One stored configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigurationRow {
    /// The configuration id (primary key).
    pub id: String,
    /// The configuration as the hub keeps it (labels, content, condition, metric queries).
    pub body: Value,
    /// Its priority: per twin path, the highest wins.
    pub priority: i64,
    /// When it was created, Unix milliseconds (ties of priority go to the newest).
    pub created_ms: i64,
    /// When it last changed, Unix milliseconds.
    pub updated_ms: i64,
    /// Its etag, without quotes.
    pub etag: String,
    /// Deleted, and still being removed from the devices that hold it.
    pub deleted: bool,
}

/// How many devices a configuration targets, and on how many its settings are applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigurationCounts {
    /// Devices whose twin carries the configuration (Targeted or Applied).
    pub targeted: u64,
    /// Devices whose twin carries it as Applied.
    pub applied: u64,
}

const COLUMNS: &str = "config_id, body, priority, created_ms, updated_ms, etag, deleted";

/// A twin section's values in the store's own JSON encoding (SQLite's JSONB), made on a read
/// connection so that the writer binds it as it is instead of parsing JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJson(Vec<u8>);

/// A configured desired section to write, decided from a read of the device, and what that read
/// saw (see [`WriteTx::write_configured_desired`]).
#[derive(Debug, Clone, Copy)]
pub struct ConfiguredDesired<'a> {
    /// The device.
    pub device_id: &'a str,
    /// The device as read.
    pub read: DeviceStamp,
    /// The configurations its twin carried when read, with their status, in id order.
    pub held: &'a [(String, ConfigurationStatus)],
    /// The new desired values.
    pub values: &'a StoredJson,
    /// The new desired metadata, as JSON text in the form the store keeps
    /// (`TwinProperties::stored_metadata`).
    pub metadata: &'a str,
    /// The desired section's new `$version`.
    pub desired_version: u64,
    /// The twin's new etag (its version becomes `read.twin_version + 1`).
    pub twin_etag: &'a str,
}

/// The configurations a twin carries as one text (`id=Status,...` in id order, NULL for none):
/// what [`WriteTx::write_configured_desired`] compares inside its UPDATE. Ids cannot hold `=`
/// or `,`, so two different sets never give the same text.
fn held_key(held: &[(String, ConfigurationStatus)]) -> Option<String> {
    let parts: Vec<String> = held
        .iter()
        .map(|(id, status)| format!("{id}={}", status.as_str()))
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Configuration queries, available inside both [`crate::Store::read`] and
/// [`crate::Store::write`].
pub trait ConfigurationReads: Reads {
    /// The configuration with this id, deleted or not.
    fn get_configuration(&self, id: &str) -> Result<Option<ConfigurationRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM configurations WHERE config_id = ?1");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        Ok(stmt.query_row([id], configuration_row).optional()?)
    }

    /// Up to `limit` configurations in id order, deleted ones included.
    fn list_configurations(&self, limit: usize) -> Result<Vec<ConfigurationRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM configurations ORDER BY config_id LIMIT ?1");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map([sql_limit(limit)], configuration_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many configurations exist that are not deleted.
    fn live_configuration_count(&self) -> Result<u64, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT count(*) FROM configurations WHERE deleted = 0")?;
        let n: i64 = stmt.query_row([], |r| r.get(0))?;
        Ok(n.unsigned_abs())
    }

    /// The configurations a device's twin carries, with their status, in id order.
    fn device_configurations(
        &self,
        device_id: &str,
    ) -> Result<Vec<(String, ConfigurationStatus)>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT config_id, status FROM device_configurations WHERE device_id = ?1
             ORDER BY config_id",
        )?;
        let rows = stmt.query_map([device_id], |r| {
            let status: String = r.get(1)?;
            Ok((r.get(0)?, status))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, status) = row?;
            let status = ConfigurationStatus::parse(&status).ok_or_else(|| {
                StoreError::Other(format!("unknown configuration status '{status}'"))
            })?;
            out.push((id, status));
        }
        Ok(out)
    }

    /// How many twins carry the configuration, and how many as Applied.
    fn configuration_counts(&self, id: &str) -> Result<ConfigurationCounts, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT count(*), count(*) FILTER (WHERE status = 'Applied')
             FROM device_configurations WHERE config_id = ?1",
        )?;
        let (targeted, applied): (i64, i64) =
            stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(ConfigurationCounts {
            targeted: targeted.unsigned_abs(),
            applied: applied.unsigned_abs(),
        })
    }

    /// The ids of a job's completed devices from `first` to `last` (a twin job's batch, as its
    /// change-feed event names it).
    fn completed_job_devices_between(
        &self,
        job_id: &str,
        first: &str,
        last: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT device_id FROM job_devices
             WHERE job_id = ?1 AND device_id >= ?2 AND device_id <= ?3 AND status = 'completed'
             ORDER BY device_id",
        )?;
        let rows = stmt.query_map([job_id, first, last], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A section's values (JSON text) in the store's encoding, for
    /// [`WriteTx::write_configured_desired`]: the parse runs on this connection, off the writer.
    fn stored_json(&self, text: &str) -> Result<StoredJson, StoreError> {
        let mut stmt = self.conn().prepare_cached("SELECT jsonb(?1)")?;
        Ok(StoredJson(stmt.query_row([text], |r| r.get(0))?))
    }
}

impl<T: Reads + ?Sized> ConfigurationReads for T {}

impl WriteTx<'_> {
    /// Writes a configured desired section (values, `$version`, metadata) and the twin's new
    /// version and etag, only if the device is still as read: the same row at the same twin
    /// version and registry revision, carrying the same configuration statuses. Returns `false`,
    /// and writes nothing, if anything of that moved. One statement checks and writes, and the
    /// values arrive already encoded ([`ConfigurationReads::stored_json`]), so the writer parses
    /// no JSON.
    pub fn write_configured_desired(
        &mut self,
        write: &ConfiguredDesired<'_>,
    ) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE devices SET desired = ?5, desired_version = ?6, twin_version = ?3 + 1,
                 twin_etag = ?7
             WHERE device_id = ?1 AND row = ?2 AND twin_version = ?3 AND revision = ?4
               AND (SELECT group_concat(config_id || '=' || status, ',' ORDER BY config_id)
                    FROM device_configurations WHERE device_id = ?1) IS ?8",
        )?;
        // No `RETURNING`: the row's key is known, and a statement with one opens a statement
        // journal, whose closing inside a batch's savepoint walks the sub-journal from its start.
        let read = write.read;
        let changed = stmt.execute(params![
            write.device_id,
            read.row,
            read.twin_version,
            read.revision,
            write.values.0,
            write.desired_version as i64,
            write.twin_etag,
            held_key(write.held),
        ])?;
        if changed != 1 {
            return Ok(false);
        }
        let row = read.row;
        self.set_desired_metadata_text(row, write.metadata)?;
        Ok(true)
    }

    /// Stores a new configuration; `false` (and nothing written) if the id is taken, deleted or
    /// not.
    pub fn insert_configuration(&mut self, row: &ConfigurationRow) -> Result<bool, StoreError> {
        let body = json_text(&row.body)?;
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO configurations
                 (config_id, body, priority, created_ms, updated_ms, etag, deleted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (config_id) DO NOTHING",
        )?;
        let inserted = stmt.execute(params![
            row.id,
            body,
            row.priority,
            row.created_ms,
            row.updated_ms,
            row.etag,
            row.deleted
        ])?;
        Ok(inserted == 1)
    }

    /// Rewrites a stored configuration (all but its id and creation time); `false` if absent.
    pub fn update_configuration(&mut self, row: &ConfigurationRow) -> Result<bool, StoreError> {
        let body = json_text(&row.body)?;
        let mut stmt = self.conn.prepare_cached(
            "UPDATE configurations
             SET body = ?2, priority = ?3, updated_ms = ?4, etag = ?5, deleted = ?6
             WHERE config_id = ?1",
        )?;
        let changed = stmt.execute(params![
            row.id,
            body,
            row.priority,
            row.updated_ms,
            row.etag,
            row.deleted
        ])?;
        Ok(changed == 1)
    }

    /// Removes a configuration's row for good; `false` if it was not stored.
    pub fn purge_configuration(&mut self, id: &str) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM configurations WHERE config_id = ?1")?;
        Ok(stmt.execute([id])? == 1)
    }

    /// Sets `configurations.{config_id}.status` on a device's twin.
    pub fn set_device_configuration(
        &mut self,
        config_id: &str,
        device_id: &str,
        status: ConfigurationStatus,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO device_configurations (config_id, device_id, status) VALUES (?1, ?2, ?3)
             ON CONFLICT (config_id, device_id) DO UPDATE SET status = excluded.status",
        )?;
        stmt.execute(params![config_id, device_id, status.as_str()])?;
        Ok(())
    }

    /// Removes a configuration from a device's twin; `false` if the twin did not carry it.
    pub fn remove_device_configuration(
        &mut self,
        config_id: &str,
        device_id: &str,
    ) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "DELETE FROM device_configurations WHERE config_id = ?1 AND device_id = ?2",
        )?;
        Ok(stmt.execute([config_id, device_id])? == 1)
    }
}

fn configuration_row(r: &Row<'_>) -> rusqlite::Result<ConfigurationRow> {
    let body: String = r.get(1)?;
    let body = serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(ConfigurationRow {
        id: r.get(0)?,
        body,
        priority: r.get(2)?,
        created_ms: r.get(3)?,
        updated_ms: r.get(4)?,
        etag: r.get(5)?,
        deleted: r.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreConfig};
    use serde_json::json;
    use ConfigurationStatus::{Applied, Targeted};

    fn row(id: &str, priority: i64) -> ConfigurationRow {
        ConfigurationRow {
            id: id.into(),
            body: json!({"targetCondition": "*"}),
            priority,
            created_ms: 1,
            updated_ms: 1,
            etag: "MQ==".into(),
            deleted: false,
        }
    }

    async fn device(store: &Store, id: &'static str) {
        store
            .write(move |tx| {
                tx.insert_device(&crate::rows::test_device(id, serde_json::json!({})))?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn configurations_insert_once_update_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("db"))).unwrap();
        let (a, b) = (row("b-cfg", 10), row("a-cfg", 5));
        let (x, y) = (a.clone(), b.clone());
        let inserted = store
            .write(move |tx| {
                Ok::<_, StoreError>((
                    tx.insert_configuration(&x)?,
                    tx.insert_configuration(&y)?,
                    tx.insert_configuration(&x)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(inserted, (true, true, false));
        let listed = store.read(|r| r.list_configurations(10)).await.unwrap();
        assert_eq!(listed, vec![b.clone(), a.clone()], "id order");
        let mut changed = a.clone();
        changed.priority = 20;
        changed.deleted = true;
        changed.etag = "Mg==".into();
        let c = changed.clone();
        assert!(store
            .write(move |tx| tx.update_configuration(&c))
            .await
            .unwrap());
        let got = store.read(|r| r.get_configuration("b-cfg")).await.unwrap();
        assert_eq!(got, Some(changed));
        assert_eq!(
            store.read(|r| r.live_configuration_count()).await.unwrap(),
            1
        );
        assert!(store
            .write(|tx| tx.purge_configuration("b-cfg"))
            .await
            .unwrap());
        assert_eq!(
            store.read(|r| r.get_configuration("b-cfg")).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn twin_statuses_count_and_leave_with_their_device() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("db"))).unwrap();
        for id in ["d1", "d2", "d3"] {
            device(&store, id).await;
        }
        store
            .write(|tx| {
                tx.set_device_configuration("c", "d1", Targeted)?;
                tx.set_device_configuration("c", "d1", Applied)?;
                tx.set_device_configuration("c", "d2", Targeted)?;
                tx.set_device_configuration("c", "d3", Applied)?;
                tx.set_device_configuration("other", "d1", Targeted)?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        let counts = store.read(|r| r.configuration_counts("c")).await.unwrap();
        assert_eq!(
            counts,
            ConfigurationCounts {
                targeted: 3,
                applied: 2
            }
        );
        let d1 = store.read(|r| r.device_configurations("d1")).await.unwrap();
        assert_eq!(
            d1,
            vec![("c".to_string(), Applied), ("other".to_string(), Targeted)]
        );
        let removed = store
            .write(|tx| {
                let first = tx.remove_device_configuration("c", "d2")?;
                let again = tx.remove_device_configuration("c", "d2")?;
                tx.delete_device("d3", 1)?;
                Ok::<_, StoreError>((first, again))
            })
            .await
            .unwrap();
        assert_eq!(removed, (true, false));
        let counts = store.read(|r| r.configuration_counts("c")).await.unwrap();
        assert_eq!(
            counts,
            ConfigurationCounts {
                targeted: 1,
                applied: 1
            },
            "a deleted device's statuses go with it"
        );
    }

    #[tokio::test]
    async fn a_configured_desired_write_lands_only_on_the_device_as_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("db"))).unwrap();
        device(&store, "d1").await;
        let (values, read) = store
            .read(|r| Ok::<_, StoreError>((r.stored_json(r#"{"a":1}"#)?, r.device_stamp("d1")?)))
            .await
            .unwrap();
        let read = read.unwrap();
        let held = vec![("c".to_string(), Targeted)];
        let write = move |tx: &mut WriteTx<'_>,
                          read: DeviceStamp,
                          held: &[(String, ConfigurationStatus)]| {
            tx.write_configured_desired(&ConfiguredDesired {
                device_id: "d1",
                read,
                held,
                values: &values,
                metadata: r#"{"a":{"$lastUpdated":"t","$lastUpdatedVersion":2}}"#,
                desired_version: 2,
                twin_etag: "e2",
            })
        };
        let outcomes = store
            .write(move |tx| {
                // Read without statuses, but the twin carries one now: refused.
                tx.set_device_configuration("c", "d1", Targeted)?;
                let statuses_moved = write(tx, read, &[])?;
                let version_moved = write(
                    tx,
                    DeviceStamp {
                        twin_version: read.twin_version - 1,
                        ..read
                    },
                    &held,
                )?;
                let revision_moved = write(
                    tx,
                    DeviceStamp {
                        revision: read.revision + 1,
                        ..read
                    },
                    &held,
                )?;
                let as_read = write(tx, read, &held)?;
                let again = write(tx, read, &held)?;
                Ok::<_, StoreError>([
                    statuses_moved,
                    version_moved,
                    revision_moved,
                    as_read,
                    again,
                ])
            })
            .await
            .unwrap();
        assert_eq!(outcomes, [false, false, false, true, false]);
        let got = store.read(|r| r.get_device("d1")).await.unwrap().unwrap();
        assert_eq!(
            got.desired,
            json!({"values": {"a": 1}, "metadata": {"a": {"$lastUpdated": "t",
                "$lastUpdatedVersion": 2}}, "version": 2})
        );
        assert_eq!((got.twin_version, got.twin_etag.as_str()), (2, "e2"));
    }

    #[tokio::test]
    async fn a_device_read_without_reported_is_the_device_with_an_empty_reported_section() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("db"))).unwrap();
        let mut row = crate::rows::test_device("d1", json!({"a": 1}));
        row.tags = json!({"city": "boston"});
        row.reported = json!({"values": {"pm25": 41}, "metadata": {"pm25":
            {"$lastUpdated": "t"}}, "version": 3});
        let inserted = row.clone();
        store
            .write(move |tx| tx.insert_device(&inserted))
            .await
            .unwrap();
        let (full, lean) = store
            .read(|r| {
                let full = r.get_device("d1")?.unwrap();
                Ok::<_, StoreError>((full, r.get_device_without_reported("d1")?.unwrap()))
            })
            .await
            .unwrap();
        assert_eq!(full.reported, row.reported);
        let expected = crate::DeviceRow {
            reported: json!({"values": {}, "metadata": {}, "version": 3}),
            ..full
        };
        assert_eq!(lean, expected);
    }
}
