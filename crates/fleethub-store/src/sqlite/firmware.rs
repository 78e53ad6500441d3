//! The firmware store's metadata: one `firmware` row per artifact, keyed by the SHA-256 of its
//! bytes. The bytes themselves are files the hub keeps; rows here are what lists, shows and the
//! reference checks read.

use rusqlite::{params, OptionalExtension, Row};

use super::reads::sql_limit;
use crate::{Reads, StoreError, WriteTx};

/// One stored firmware artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareRow {
    /// SHA-256 of the bytes, 64 lowercase hex digits: the artifact's id.
    pub sha256: String,
    /// Its semantic version.
    pub version: String,
    /// The version's sort key (`fleethub_core::semver`), for listing in version order.
    pub version_key: String,
    /// The compatible models, sorted.
    pub models: Vec<String>,
    /// Length in bytes.
    pub size: u64,
    /// Base64 DER ECDSA signature over the artifact's manifest.
    pub signature: String,
    /// Who made the signature: `hub` (the hub's key) or `operator` (uploaded, verified).
    pub signed_by: String,
    /// When it was uploaded, Unix milliseconds.
    pub uploaded_ms: i64,
    /// The uploader's notes (may be empty).
    pub notes: String,
}

/// What still points at an artifact, so it must not be deleted: a few examples of each kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirmwareReferences {
    /// Devices whose desired firmware names the artifact's SHA-256.
    pub twins: Vec<String>,
    /// Jobs not yet finished whose twin patch names it.
    pub jobs: Vec<String>,
    /// Rollouts running or paused whose artifact it is.
    pub rollouts: Vec<String>,
}

impl FirmwareReferences {
    /// Whether nothing points at the artifact.
    pub fn is_empty(&self) -> bool {
        self.twins.is_empty() && self.jobs.is_empty() && self.rollouts.is_empty()
    }
}

const COLUMNS: &str =
    "sha256, version, version_key, models, size, signature, signed_by, uploaded_ms, notes";

/// Firmware queries, available inside both [`crate::Store::read`] and [`crate::Store::write`].
pub trait FirmwareReads: Reads {
    /// The artifact with this SHA-256, if stored.
    fn get_firmware(&self, sha256: &str) -> Result<Option<FirmwareRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM firmware WHERE sha256 = ?1");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        Ok(stmt.query_row([sha256], firmware_row).optional()?)
    }

    /// Every artifact stored under this version (one per distinct image).
    fn firmware_by_version(&self, version: &str) -> Result<Vec<FirmwareRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM firmware WHERE version = ?1 ORDER BY sha256");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map([version], firmware_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` artifacts in version order (ties by SHA-256).
    fn list_firmware(&self, limit: usize) -> Result<Vec<FirmwareRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM firmware ORDER BY version_key, sha256 LIMIT ?1");
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt.query_map([sql_limit(limit)], firmware_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` of each kind of reference to the artifact `sha256`: twins whose
    /// `desired.firmware.sha256` names it (the desired column holds the section's values), and
    /// unfinished jobs whose twin patch does.
    fn firmware_references(
        &self,
        sha256: &str,
        limit: usize,
    ) -> Result<FirmwareReferences, StoreError> {
        let mut twins = self.conn().prepare_cached(
            "SELECT device_id FROM devices
             WHERE lower(desired ->> '$.firmware.sha256') = ?1 LIMIT ?2",
        )?;
        let twins = twins
            .query_map(params![sha256, sql_limit(limit)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut jobs = self.conn().prepare_cached(
            "SELECT job_id FROM jobs
             WHERE end_ms IS NULL AND status IN ('scheduled', 'queued', 'running')
               AND lower(json_extract(body, '$.updateTwin.properties.desired.firmware.sha256'))
                   = ?1
             LIMIT ?2",
        )?;
        let jobs = jobs
            .query_map(params![sha256, sql_limit(limit)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut rollouts = self.conn().prepare_cached(
            "SELECT rollout_id FROM rollouts
             WHERE status IN ('running', 'paused')
               AND lower(spec ->> '$.artifact.sha256') = ?1
             LIMIT ?2",
        )?;
        let rollouts = rollouts
            .query_map(params![sha256, sql_limit(limit)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(FirmwareReferences {
            twins,
            jobs,
            rollouts,
        })
    }
}

impl<T: Reads + ?Sized> FirmwareReads for T {}

impl WriteTx<'_> {
    /// Stores a new artifact; `false` (and nothing written) if its SHA-256 is already stored.
    pub fn insert_firmware(&mut self, row: &FirmwareRow) -> Result<bool, StoreError> {
        let models = serde_json::to_string(&row.models)
            .map_err(|e| StoreError::Other(format!("encoding firmware models: {e}")))?;
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO firmware
                 (sha256, version, version_key, models, size, signature, signed_by, uploaded_ms,
                  notes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (sha256) DO NOTHING",
        )?;
        let inserted = stmt.execute(params![
            row.sha256,
            row.version,
            row.version_key,
            models,
            i64::try_from(row.size).unwrap_or(i64::MAX),
            row.signature,
            row.signed_by,
            row.uploaded_ms,
            row.notes,
        ])?;
        Ok(inserted == 1)
    }

    /// Removes an artifact's row; `false` if it was not stored.
    pub fn delete_firmware(&mut self, sha256: &str) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM firmware WHERE sha256 = ?1")?;
        Ok(stmt.execute([sha256])? == 1)
    }
}

fn firmware_row(r: &Row<'_>) -> rusqlite::Result<FirmwareRow> {
    let models: String = r.get(3)?;
    let models = serde_json::from_str(&models).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let size: i64 = r.get(4)?;
    Ok(FirmwareRow {
        sha256: r.get(0)?,
        version: r.get(1)?,
        version_key: r.get(2)?,
        models,
        size: size.unsigned_abs(),
        signature: r.get(5)?,
        signed_by: r.get(6)?,
        uploaded_ms: r.get(7)?,
        notes: r.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreConfig};
    use serde_json::json;

    fn row(sha: char, version: &str, key: &str) -> FirmwareRow {
        FirmwareRow {
            sha256: sha.to_string().repeat(64),
            version: version.into(),
            version_key: key.into(),
            models: vec!["esp32".into(), "esp32-s3".into()],
            size: 1024,
            signature: "MEUC".into(),
            signed_by: "hub".into(),
            uploaded_ms: 7,
            notes: String::new(),
        }
    }

    #[tokio::test]
    async fn artifacts_insert_once_list_in_version_order_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("db"))).unwrap();
        let (a, b) = (row('a', "2.0.0", "2"), row('b', "1.0.0", "1"));
        let (x, y) = (a.clone(), b.clone());
        let inserted = store
            .write(move |tx| {
                Ok::<_, StoreError>((tx.insert_firmware(&x)?, tx.insert_firmware(&y)?))
            })
            .await
            .unwrap();
        assert_eq!(inserted, (true, true));
        let again = a.clone();
        assert!(!store
            .write(move |tx| tx.insert_firmware(&again))
            .await
            .unwrap());
        let listed = store.read(|r| r.list_firmware(10)).await.unwrap();
        assert_eq!(listed, vec![b.clone(), a.clone()], "version order");
        let by_version = store
            .read(|r| r.firmware_by_version("2.0.0"))
            .await
            .unwrap();
        assert_eq!(by_version, vec![a.clone()]);
        let sha = a.sha256.clone();
        assert!(store
            .write(move |tx| tx.delete_firmware(&sha))
            .await
            .unwrap());
        let sha = a.sha256.clone();
        assert_eq!(
            store.read(move |r| r.get_firmware(&sha)).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn references_are_twins_desiring_the_image_and_unfinished_jobs_patching_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("db"))).unwrap();
        let sha = "c".repeat(64);
        let upper = sha.to_ascii_uppercase();
        let desired = json!({"firmware": {"sha256": upper}});
        let job = |id: &str, status: &str, end: Option<i64>| {
            let body = json!({"updateTwin": {"properties": {"desired": {"firmware": {"sha256": "c".repeat(64)}}}}});
            (id.to_string(), status.to_string(), end, body.to_string())
        };
        let jobs = [
            job("live", "running", None),
            job("done", "completed", Some(5)),
        ];
        store
            .write(move |tx| {
                tx.insert_device(&crate::rows::test_device("d1", desired))?;
                tx.insert_device(&crate::rows::test_device("d2", json!({})))?;
                for (id, status, end, body) in &jobs {
                    tx.conn.execute(
                        "INSERT INTO jobs VALUES (?1,'scheduleUpdateTwin',?2,0,0,?3,?4)",
                        params![id, status, end, body],
                    )?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        let refs = store
            .read(move |r| r.firmware_references(&sha, 10))
            .await
            .unwrap();
        assert_eq!(refs.twins, vec!["d1".to_string()]);
        assert_eq!(refs.jobs, vec!["live".to_string()]);
        assert!(!refs.is_empty());
        let other = store
            .read(|r| r.firmware_references(&"d".repeat(64), 10))
            .await
            .unwrap();
        assert!(other.is_empty());
    }
}
