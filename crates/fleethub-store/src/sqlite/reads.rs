//! Queries, shared by read transactions and the writer's transaction.

use fleethub_query::{CompiledQuery, SqlFragment};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::compiled::{self, QueryRows};
use crate::{
    C2dRow, DeviceCounts, DeviceEntryRow, DeviceRow, DeviceStamp, EventRow, FirmwareCount,
    StoreError, TelemetryRow,
};

/// The columns [`device_row`] reads, in order: `fleethub_query::DEVICE_COLUMNS`, which rebuild
/// each section from its JSONB values, version column and `twin_metadata` row (a macro, so
/// statements are built at compile time).
macro_rules! device_row_columns {
    () => {
        "device_id, status, identity, json(tags), \
         json_object('values', json(desired), 'metadata', json(fh_metadata(json(desired), \
         (SELECT desired FROM twin_metadata WHERE twin_metadata.row = devices.row))), \
         'version', desired_version), \
         json_object('values', json(reported), 'metadata', json(fh_metadata(json(reported), \
         (SELECT reported FROM twin_metadata WHERE twin_metadata.row = devices.row))), \
         'version', reported_version), \
         twin_version, twin_etag, revision"
    };
}

/// The columns [`device_row`] reads, in order.
#[cfg(test)]
pub(crate) const DEVICE_ROW_COLUMNS: &str = device_row_columns!();

/// A read transaction on a pooled connection; sees one consistent snapshot of committed data.
pub struct ReadTx<'a> {
    pub(crate) conn: &'a Connection,
}

pub(crate) mod sealed {
    /// The connection a read runs on. The trait is public in a private module, so [`Reads`]
    /// can use it while nothing outside the store can name it: no SQLite type leaves the store.
    ///
    /// [`Reads`]: super::Reads
    pub trait Connected {
        /// The connection the queries run on.
        fn conn(&self) -> &rusqlite::Connection;
    }
}

impl sealed::Connected for ReadTx<'_> {
    fn conn(&self) -> &Connection {
        self.conn
    }
}

impl Reads for ReadTx<'_> {}

/// The queries, available inside both [`crate::Store::read`] and [`crate::Store::write`].
pub trait Reads: sealed::Connected {
    /// Runs one page of a compiled query (compiled for [`crate::Store::dialect`]). A query
    /// beyond the database's limits is [`StoreError::TooComplex`]; one the database refuses as
    /// written is [`StoreError::Rejected`].
    fn run_query(&self, query: &CompiledQuery) -> Result<QueryRows, StoreError> {
        compiled::run_query(self.conn(), query)
    }

    /// The ids of up to `limit` devices whose ids sort after `after` (all, when `None`) that a
    /// compiled condition selects, in id order.
    fn devices_matching(
        &self,
        condition: &SqlFragment,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        compiled::devices_matching(self.conn(), condition, after, limit)
    }

    /// How many devices a compiled condition selects (a configuration's custom metric).
    fn count_matching(&self, condition: &SqlFragment) -> Result<u64, StoreError> {
        compiled::count_matching(self.conn(), condition)
    }

    /// How the database would run a compiled query, one step per line (SQLite's `EXPLAIN
    /// QUERY PLAN`): which indexes it uses.
    fn query_plan(&self, query: &CompiledQuery) -> Result<String, StoreError> {
        compiled::query_plan(self.conn(), query)
    }

    /// The device with this id, if it exists.
    fn get_device(&self, id: &str) -> Result<Option<DeviceRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(concat!(
            "SELECT ",
            device_row_columns!(),
            " FROM devices WHERE device_id = ?1"
        ))?;
        Ok(stmt.query_row([id], device_row).optional()?)
    }

    /// The device's registry entry, without its twin, if it exists.
    fn get_device_entry(&self, id: &str) -> Result<Option<DeviceEntryRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT device_id, status, identity, twin_version, revision FROM devices \
             WHERE device_id = ?1",
        )?;
        Ok(stmt
            .query_row([id], |r| {
                Ok(DeviceEntryRow {
                    device_id: r.get(0)?,
                    status: r.get(1)?,
                    identity: entry_column(r, 2)?,
                    twin_version: r.get(3)?,
                    revision: r.get(4)?,
                })
            })
            .optional()?)
    }

    /// The device with this id, if it exists, with its reported section left empty (no values,
    /// no metadata, its version kept): for a reader that never looks at reported properties,
    /// such as a configuration engine whose target conditions read none (the reported section
    /// and its metadata are often half of a twin, and decoding them is most of a read).
    fn get_device_without_reported(&self, id: &str) -> Result<Option<DeviceRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT device_id, status, identity, json(tags), \
             json_object('values', json(desired), 'metadata', json(fh_metadata(json(desired), \
             (SELECT desired FROM twin_metadata WHERE twin_metadata.row = devices.row))), \
             'version', desired_version), \
             json_object('values', json_object(), 'metadata', json_object(), \
             'version', reported_version), \
             twin_version, twin_etag, revision FROM devices WHERE device_id = ?1",
        )?;
        Ok(stmt.query_row([id], device_row).optional()?)
    }

    /// A device's row key, twin version and registry revision, if it exists: what a writer
    /// compares with an earlier read to learn that nothing of the device moved since.
    fn device_stamp(&self, id: &str) -> Result<Option<DeviceStamp>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT row, twin_version, revision FROM devices WHERE device_id = ?1",
        )?;
        Ok(stmt
            .query_row([id], |r| {
                Ok(DeviceStamp {
                    row: r.get(0)?,
                    twin_version: r.get(1)?,
                    revision: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// The reported section as stored JSON text plus the twin version, without decoding the rest
    /// of the row: the hot path of reported-property patches.
    fn get_reported_text(&self, id: &str) -> Result<Option<(String, i64)>, StoreError> {
        // The parts are JSON texts already: joined as text, not rebuilt by SQLite.
        let mut stmt = self.conn().prepare_cached(
            "SELECT json(d.reported), fh_metadata(json(d.reported), m.reported),
                    d.reported_version, d.twin_version
             FROM devices AS d JOIN twin_metadata AS m ON m.row = d.row WHERE d.device_id = ?1",
        )?;
        let found = stmt
            .query_row([id], |r| {
                let (values, metadata): (String, String) = (r.get(0)?, r.get(1)?);
                let version: i64 = r.get(2)?;
                let text =
                    format!(r#"{{"values":{values},"metadata":{metadata},"version":{version}}}"#);
                Ok((text, r.get(3)?))
            })
            .optional()?;
        Ok(found)
    }

    /// Up to `limit` devices whose ids sort after `after` (all, when `None`), in id order.
    fn list_devices(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRow>, StoreError> {
        // Every id sorts after '' except '' itself, which the hub's id rules do not allow.
        let mut stmt = self.conn().prepare_cached(concat!(
            "SELECT ",
            device_row_columns!(),
            " FROM devices WHERE device_id > ?1 ORDER BY device_id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![after.unwrap_or(""), sql_limit(limit)], device_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many devices exist, by status: a read of the counts the store keeps
    /// (`device_counts`, migration 12), never a scan of the devices.
    fn device_counts(&self) -> Result<DeviceCounts, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT status, sum(devices) FROM device_counts GROUP BY status")?;
        let mut counts = DeviceCounts::default();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let status: String = row.get(0)?;
            let n = count(row.get(1)?);
            counts.total += n;
            match status.as_str() {
                "enabled" => counts.enabled += n,
                "disabled" => counts.disabled += n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// How many devices report each reported firmware version and update status
    /// (`properties.reported.firmware.current_version` and `.status`), from the counts the
    /// store keeps: exact and current, a few rows however many devices there are.
    fn firmware_counts(&self) -> Result<Vec<FirmwareCount>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT firmware_version, firmware_status, sum(devices) FROM device_counts \
             GROUP BY 1, 2 ORDER BY 1, 2",
        )?;
        let field = |text: String| -> Result<Option<Value>, StoreError> {
            if text.is_empty() {
                return Ok(None);
            }
            serde_json::from_str(&text).map(Some).map_err(|e| {
                StoreError::Other(format!(
                    "device_counts holds a firmware field that is not JSON ({text}): {e}"
                ))
            })
        };
        let mut out = Vec::new();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            out.push(FirmwareCount {
                version: field(row.get(0)?)?,
                status: field(row.get(1)?)?,
                devices: count(row.get(2)?),
            });
        }
        Ok(out)
    }

    /// Up to `limit` telemetry messages after `after_seq` (of one device, or of all), oldest first.
    fn telemetry_after(
        &self,
        device_id: Option<&str>,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<TelemetryRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = match device_id {
            Some(_) => conn.prepare_cached(
                "SELECT seq, device_id, message_id, enqueued_ms, properties, body FROM telemetry
                 WHERE device_id = ?3 AND seq > ?1 ORDER BY seq LIMIT ?2",
            )?,
            None => conn.prepare_cached(
                "SELECT seq, device_id, message_id, enqueued_ms, properties, body FROM telemetry
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?,
        };
        let rows = match device_id {
            Some(id) => stmt.query_map(params![after_seq, sql_limit(limit), id], telemetry_row)?,
            None => stmt.query_map(params![after_seq, sql_limit(limit)], telemetry_row)?,
        };
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `limit` telemetry messages of one device, oldest first (a dashboard's plot).
    fn telemetry_latest(
        &self,
        device_id: &str,
        limit: usize,
    ) -> Result<Vec<TelemetryRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT seq, device_id, message_id, enqueued_ms, properties, body FROM telemetry
             WHERE device_id = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![device_id, sql_limit(limit)], telemetry_row)?;
        let mut rows: Vec<TelemetryRow> = rows.collect::<Result<_, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Up to `limit` of a device's queued cloud-to-device messages not expired at `now_ms`, oldest first.
    fn pending_c2d(
        &self,
        device_id: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<C2dRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT seq, device_id, message_id, properties, body, enqueued_ms, expiry_ms FROM c2d
             WHERE device_id = ?1 AND (expiry_ms = 0 OR expiry_ms > ?2) ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![device_id, now_ms, sql_limit(limit)], c2d_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many cloud-to-device messages are stored for a device (expired ones included until
    /// `expire_c2d` removes them).
    fn count_c2d(&self, device_id: &str) -> Result<u64, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT count(*) FROM c2d WHERE device_id = ?1")?;
        Ok(count(stmt.query_row([device_id], |r| r.get(0))?))
    }

    /// The stored MQTT session of a client, if any.
    fn get_session(&self, client_id: &str) -> Result<Option<Value>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT session FROM sessions WHERE client_id = ?1")?;
        Ok(stmt
            .query_row([client_id], |r| json_column(r, 0))
            .optional()?)
    }

    /// Up to `limit` events after `after_seq`, oldest first.
    fn events_after(&self, after_seq: i64, limit: usize) -> Result<Vec<EventRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT seq, time_ms, device_id, kind, body FROM events
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_seq, sql_limit(limit)], |r| {
            Ok(EventRow {
                seq: r.get(0)?,
                time_ms: r.get(1)?,
                device_id: r.get(2)?,
                kind: r.get(3)?,
                body: json_column(r, 4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest event's `seq`, or 0 when the log is empty (a reader that wants only what
    /// comes next starts there).
    fn last_event_seq(&self) -> Result<i64, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")?;
        Ok(stmt.query_row([], |r| r.get(0))?)
    }

    /// The value of a hub setting, if set.
    fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT value FROM settings WHERE key = ?1")?;
        Ok(stmt.query_row([key], |r| r.get(0)).optional()?)
    }
}

pub(crate) fn device_row(r: &Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        device_id: r.get(0)?,
        status: r.get(1)?,
        identity: entry_column(r, 2)?,
        tags: json_column(r, 3)?,
        desired: json_column(r, 4)?,
        reported: json_column(r, 5)?,
        twin_version: r.get(6)?,
        twin_etag: r.get(7)?,
        revision: r.get(8)?,
    })
}

fn telemetry_row(r: &Row<'_>) -> rusqlite::Result<TelemetryRow> {
    Ok(TelemetryRow {
        seq: r.get(0)?,
        device_id: r.get(1)?,
        message_id: r.get(2)?,
        enqueued_ms: r.get(3)?,
        properties: json_column(r, 4)?,
        body: r.get(5)?,
    })
}

fn c2d_row(r: &Row<'_>) -> rusqlite::Result<C2dRow> {
    Ok(C2dRow {
        seq: r.get(0)?,
        device_id: r.get(1)?,
        message_id: r.get(2)?,
        properties: json_column(r, 3)?,
        body: r.get(4)?,
        enqueued_ms: r.get(5)?,
        expiry_ms: r.get(6)?,
    })
}

/// A JSON column, decoded.
fn json_column(r: &Row<'_>, index: usize) -> rusqlite::Result<Value> {
    let text = r.get_ref(index)?.as_str()?;
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

/// The registry entry of a row whose columns 0 and 1 are its `device_id` and `status`, filled
/// back in from the packed text `identity` keeps ([`fleethub_core::stored_entry`]).
fn entry_column(r: &Row<'_>, index: usize) -> rusqlite::Result<Value> {
    let (id, status) = (r.get_ref(0)?.as_str()?, r.get_ref(1)?.as_str()?);
    let text = r.get_ref(index)?.as_str()?;
    fleethub_core::stored_entry::unpack(text, id, status)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

/// A JSON value, encoded for a TEXT column.
pub(crate) fn json_text(value: &Value) -> Result<String, StoreError> {
    Ok(serde_json::to_string(value)?)
}

/// A `LIMIT` argument; anything beyond `i64::MAX` means "no limit" anyway.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A `count(*)` or change count, which SQLite never makes negative.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
