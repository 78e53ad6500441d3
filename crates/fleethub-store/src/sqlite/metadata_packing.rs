//! Migration 15: `twin_metadata` rewritten in the packed form (`fleethub_core::twin::
//! stored_metadata`), in chunks so it survives being killed.
//!
//! Version 15 is set, with a `metadata_packing` row that says where packing resumes, in the
//! one transaction of the SQL migrations; the rows are then packed in chunks of [`CHUNK`], one
//! transaction each, in row order, each moving the mark on, and the mark goes once the last
//! chunk is packed. Every read of `twin_metadata` takes both forms (text without `"$default"`
//! is the full tree), so the database is whole at every step: a process killed part way leaves
//! some rows packed and the rest full, and the next start packs the rest. A build older than
//! version 15 refuses the database (its schema is newer), so nothing writes the old way in
//! between. The pages the full rows held go to SQLite's free list and are used again by later
//! writes; the file shrinks only with a `VACUUM`, which the migration does not run (at a
//! million devices it would rewrite 4 GB while the hub waits).

use fleethub_core::twin::stored_metadata;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{Map, Value};

use crate::StoreError;

/// Rows packed per transaction.
pub(crate) const CHUNK: usize = 10_000;

/// Packs every row after the mark left by migration 15 or by an earlier run, if there is one;
/// packs at most `budget` rows when given and returns `false` without finishing (a test's
/// stand-in for a process killed part way); `true` once nothing is left to pack.
pub(crate) fn resume(conn: &mut Connection, budget: Option<usize>) -> Result<bool, StoreError> {
    let mut packed = 0;
    loop {
        let room = budget.map_or(CHUNK, |b| CHUNK.min(b - packed));
        let Some(seen) = pack_chunk(conn, room)? else {
            return Ok(true);
        };
        packed += seen;
        if seen < room {
            conn.execute_batch("DROP TABLE metadata_packing")?;
            tracing::info!("twin metadata packing: done");
            return Ok(true);
        }
        if budget.is_some_and(|b| packed >= b) {
            return Ok(false);
        }
        tracing::info!(packed, "twin metadata packing: rows packed");
    }
}

/// Packs up to `limit` rows after the mark in one transaction and moves the mark past them;
/// how many it looked at, or `None` when there is no mark (nothing to pack).
fn pack_chunk(conn: &mut Connection, limit: usize) -> Result<Option<usize>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_mark: bool = tx.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE name = 'metadata_packing'",
        [],
        |r| r.get(0),
    )?;
    if !has_mark {
        return Ok(None);
    }
    let next: i64 = tx
        .query_row("SELECT next_row FROM metadata_packing", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let rows: Vec<(i64, String, String, String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT m.row, json(d.desired), m.desired, json(d.reported), m.reported
             FROM twin_metadata AS m JOIN devices AS d ON d.row = m.row
             WHERE m.row >= ?1 ORDER BY m.row LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![next, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    {
        let mut update =
            tx.prepare("UPDATE twin_metadata SET desired = ?2, reported = ?3 WHERE row = ?1")?;
        for (row, desired_values, desired, reported_values, reported) in &rows {
            let desired_packed = packed(desired_values, desired);
            let reported_packed = packed(reported_values, reported);
            if desired_packed.is_some() || reported_packed.is_some() {
                update.execute(params![
                    row,
                    desired_packed.as_deref().unwrap_or(desired),
                    reported_packed.as_deref().unwrap_or(reported),
                ])?;
            }
        }
    }
    let after = rows.last().map_or(next, |r| r.0 + 1);
    tx.execute("UPDATE metadata_packing SET next_row = ?1", [after])?;
    tx.commit()?;
    Ok(Some(rows.len()))
}

/// The packed form of a full metadata text, if it is full and packing changes it; a text that
/// does not parse is left as it is (reads show it as they did).
fn packed(values: &str, stored: &str) -> Option<String> {
    if stored_metadata::is_packed(stored) {
        return None;
    }
    let values: Map<String, Value> = serde_json::from_str(values).ok()?;
    let metadata: Map<String, Value> = serde_json::from_str(stored).ok()?;
    let packed = stored_metadata::pack(&values, &metadata).ok()?;
    stored_metadata::is_packed(&packed).then_some(packed)
}
