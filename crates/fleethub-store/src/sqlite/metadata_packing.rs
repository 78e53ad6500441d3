//! Migration 15: `twin_metadata` rewritten in the packed form (`fleethub_core::twin::
//! stored_metadata`), in chunks so it survives being killed.
//!
//! The SQL migration sets version 15 and creates `twin_metadata_packed`; the rows are then
//! copied into it packed, in chunks of [`CHUNK`] in row order, one transaction each, and one
//! last transaction drops `twin_metadata` and gives the new table its name. A copy rather than
//! an update in place: updated in place, the shorter rows would leave the table's pages about
//! 93% empty (the 30,000-device database kept all of its 61.6 MB of `twin_metadata` pages for
//! 4.5 MB of rows), where the dropped table's pages go to SQLite's free list, which every table's
//! later writes use. A process killed part way leaves whole chunks copied and `twin_metadata`
//! untouched; the next start copies the rest after the last copied row. Nothing else writes in
//! between: this runs before the store opens, and a build older than version 15 refuses the
//! database (its schema is newer). The file itself shrinks only with a `VACUUM`, which the
//! migration does not run (at a million devices it would rewrite gigabytes while the hub waits).

use fleethub_core::twin::stored_metadata;
use rusqlite::{params, Connection, TransactionBehavior};
use serde_json::{Map, Value};

use crate::StoreError;

/// Rows packed per transaction.
pub(crate) const CHUNK: usize = 10_000;

/// Copies, packed, the rows migration 15 or an earlier run left to copy, then swaps the tables;
/// copies at most `budget` rows when given and returns `false` without finishing (a test's
/// stand-in for a process killed part way); `true` once nothing is left to pack.
pub(crate) fn resume(conn: &mut Connection, budget: Option<usize>) -> Result<bool, StoreError> {
    let mut packed = 0;
    loop {
        let room = budget.map_or(CHUNK, |b| CHUNK.min(b - packed));
        let Some(copied) = copy_chunk(conn, room)? else {
            return Ok(true);
        };
        packed += copied;
        if copied < room {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 DROP TABLE twin_metadata;
                 ALTER TABLE twin_metadata_packed RENAME TO twin_metadata;
                 COMMIT;",
            )?;
            tracing::info!(packed, "twin metadata packing: done");
            return Ok(true);
        }
        if budget.is_some_and(|b| packed >= b) {
            return Ok(false);
        }
        tracing::info!(packed, "twin metadata packing: rows packed");
    }
}

/// Copies up to `limit` rows after the last one copied, packed, in one transaction; how many,
/// or `None` when there is no copy under way (nothing to pack).
fn copy_chunk(conn: &mut Connection, limit: usize) -> Result<Option<usize>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let under_way: bool = tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'twin_metadata_packed'",
        [],
        |r| r.get(0),
    )?;
    if !under_way {
        return Ok(None);
    }
    let after: i64 = tx.query_row(
        "SELECT coalesce(max(row), -1) FROM twin_metadata_packed",
        [],
        |r| r.get(0),
    )?;
    type Row = (i64, Option<String>, String, Option<String>, String);
    let rows: Vec<Row> = {
        let mut stmt = tx.prepare(
            "SELECT m.row, json(d.desired), m.desired, json(d.reported), m.reported
             FROM twin_metadata AS m LEFT JOIN devices AS d ON d.row = m.row
             WHERE m.row > ?1 ORDER BY m.row LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    {
        let mut insert = tx.prepare(
            "INSERT INTO twin_metadata_packed (row, desired, reported) VALUES (?1, ?2, ?3)",
        )?;
        for (row, desired_values, desired, reported_values, reported) in &rows {
            let desired_packed = packed(desired_values.as_deref(), desired);
            let reported_packed = packed(reported_values.as_deref(), reported);
            insert.execute(params![
                row,
                desired_packed.as_deref().unwrap_or(desired),
                reported_packed.as_deref().unwrap_or(reported),
            ])?;
        }
    }
    tx.commit()?;
    Ok(Some(rows.len()))
}

/// The packed form of a full metadata text, if it is full and packing changes it; a text that
/// does not parse, or a row without a device, is copied as it is (reads show it as they did).
fn packed(values: Option<&str>, stored: &str) -> Option<String> {
    if stored_metadata::is_packed(stored) {
        return None;
    }
    let values: Map<String, Value> = serde_json::from_str(values?).ok()?;
    let metadata: Map<String, Value> = serde_json::from_str(stored).ok()?;
    let packed = stored_metadata::pack(&values, &metadata).ok()?;
    stored_metadata::is_packed(&packed).then_some(packed)
}
