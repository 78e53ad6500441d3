//! Migration 16: every device's registry entry (`devices.identity`) rewritten in the packed
//! form (`fleethub_core::stored_entry`), in chunks so it survives being killed.
//!
//! The SQL migration sets version 16 and creates `entry_packing`, one row holding the last
//! `devices.row` packed so far; the entries are then packed in place, in chunks of [`CHUNK`] in
//! row order, one transaction each that also moves that row on, and the transaction of the last
//! chunk drops the table. A process killed part way leaves whole chunks packed; the next start
//! packs the rest after the row the table holds (packing a packed entry again would change
//! nothing anyway). Nothing else writes in between: this runs before the store opens, and a
//! build older than version 16 refuses the database (its schema is newer).
//!
//! In place, not into a copy of the table as migration 15 did for `twin_metadata`: a row
//! shrinks by about a third (its 595-byte entry to about 160), not to a tenth, and `devices` is
//! most of the file, so a copy would grow the file by two thirds of the table while the old
//! one still stands (about 0.9 GB at a million devices) to free the old table's pages after. In
//! place the file does not grow; the room the shorter rows leave in their pages is used again as
//! those rows grow (reports, registry changes), and a `VACUUM`, which the migration does not
//! run, gives it back to the file system.

use fleethub_core::stored_entry;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::StoreError;

/// Entries packed per transaction.
pub(crate) const CHUNK: usize = 10_000;

/// Packs the entries migration 16 or an earlier run left to pack; packs at most `budget` when
/// given and returns `false` without finishing (a test's stand-in for a process killed part
/// way); `true` once nothing is left to pack.
pub(crate) fn resume(conn: &mut Connection, budget: Option<usize>) -> Result<bool, StoreError> {
    let mut packed = 0;
    loop {
        let room = budget.map_or(CHUNK, |b| CHUNK.min(b - packed));
        let Some(chunk) = pack_chunk(conn, room)? else {
            return Ok(true);
        };
        packed += chunk;
        if chunk < room {
            tracing::info!(packed, "registry entry packing: done");
            return Ok(true);
        }
        if budget.is_some_and(|b| packed >= b) {
            return Ok(false);
        }
        tracing::info!(packed, "registry entry packing: entries packed");
    }
}

/// Packs up to `limit` entries after the last one packed, in one transaction, and drops the
/// progress table once fewer than `limit` were left; how many, or `None` when there is no
/// packing under way.
fn pack_chunk(conn: &mut Connection, limit: usize) -> Result<Option<usize>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let under_way: bool = tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'entry_packing'",
        [],
        |r| r.get(0),
    )?;
    if !under_way {
        return Ok(None);
    }
    let after: i64 = tx
        .query_row("SELECT after FROM entry_packing", [], |r| r.get(0))
        .optional()?
        .unwrap_or(i64::MIN);
    type Row = (i64, String, String, String);
    let rows: Vec<Row> = {
        let mut stmt = tx.prepare(
            "SELECT row, device_id, status, identity FROM devices
             WHERE row > ?1 ORDER BY row LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    {
        let mut update = tx.prepare("UPDATE devices SET identity = ?2 WHERE row = ?1")?;
        for (row, device_id, status, identity) in &rows {
            if let Some(packed) = packed(identity, device_id, status) {
                update.execute(params![row, packed])?;
            }
        }
    }
    if rows.len() < limit {
        tx.execute_batch("DROP TABLE entry_packing")?;
    } else if let Some((last, ..)) = rows.last() {
        tx.execute("UPDATE entry_packing SET after = ?1", [last])?;
    }
    tx.commit()?;
    Ok(Some(rows.len()))
}

/// The packed form of an entry's full text, if packing changes it; text that does not parse is
/// kept as it is (reads show it as they did). Every row after the progress row holds what
/// version 15 wrote, which is always the full text, even one that starts as a packed text does
/// (`{"$entry":1,…}`, an entry whose first key is the marker): it is parsed as the entry it is
/// and stored wrapped, never taken for a packed one.
fn packed(stored: &str, device_id: &str, status: &str) -> Option<String> {
    let entry: serde_json::Value = serde_json::from_str(stored).ok()?;
    let packed = stored_entry::pack(&entry, device_id, status).ok()?;
    (packed != stored).then_some(packed)
}
