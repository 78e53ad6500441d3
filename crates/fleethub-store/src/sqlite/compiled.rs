//! Running what the query crate compiled: a page of a query, the devices a condition selects,
//! a statement's plan. SQLite's errors become the store's (`TooComplex`, `Rejected`, …) here,
//! and the rows become the store's own values.

use fleethub_query::{CompiledQuery, Dialect, Output, PartCell, SplitQuery, SqlFragment, SqlParam};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{params_from_iter, Connection, Row};
use serde_json::{Map, Value};

use super::functions::json_of;
use super::jobs::job_device_row;
use super::reads::{device_row, sql_limit};
use crate::{DeviceRow, JobDeviceRow, StoreError};

/// One row of a query page.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryRow {
    /// `SELECT * FROM devices`: the device.
    Device(DeviceRow),
    /// `SELECT * FROM devices.jobs`: the job's row for one device.
    DeviceJob(JobDeviceRow),
    /// A projection or a group: a JSON object, undefined values left out.
    Document(Value),
}

/// The rows of one page and the token for the next, if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRows {
    /// The page's rows, in the query's order.
    pub rows: Vec<QueryRow>,
    /// The next page's `x-ms-continuation`, when more rows follow.
    pub continuation: Option<String>,
}

/// Refuses a statement compiled for another dialect.
fn sqlite_only(dialect: Dialect) -> Result<(), StoreError> {
    match dialect {
        Dialect::Sqlite => Ok(()),
        #[allow(unreachable_patterns)] // the query crate will gain dialects
        other => Err(StoreError::Rejected(format!(
            "the statement is compiled for {}, but this store runs SQLite",
            other.name()
        ))),
    }
}

fn param(p: &SqlParam) -> SqlValue {
    match p {
        SqlParam::Integer(i) => SqlValue::Integer(*i),
        SqlParam::Real(f) => SqlValue::Real(*f),
        SqlParam::Text(t) => SqlValue::Text(t.clone()),
    }
}

fn compiled(e: rusqlite::Error) -> StoreError {
    StoreError::from_compiled(&e)
}

/// Runs one page of a compiled query.
pub(crate) fn run_query(conn: &Connection, q: &CompiledQuery) -> Result<QueryRows, StoreError> {
    sqlite_only(q.dialect)?;
    let mut stmt = conn.prepare_cached(&q.sql).map_err(compiled)?;
    if !stmt.readonly() {
        return Err(StoreError::Rejected(
            "a compiled query may only read, and this statement writes".into(),
        ));
    }
    let mut rows = stmt
        .query(params_from_iter(q.params.iter().map(param)))
        .map_err(compiled)?;
    let outputs = match &q.output {
        Output::DeviceRows => fleethub_query::DEVICE_COLUMNS.len(),
        Output::DeviceJobRows => fleethub_query::JOB_COLUMNS.len(),
        Output::Documents(names) => names.len(),
    };
    let mut out = Vec::new();
    let mut last_key: Vec<String> = Vec::new();
    let mut more = false;
    while let Some(row) = rows.next().map_err(compiled)? {
        if out.len() >= q.page_limit {
            more = true;
            break;
        }
        out.push(query_row(row, &q.output)?);
        last_key = (0..q.key_columns)
            .map(|i| row.get_ref(outputs + i).map(key_text))
            .collect::<rusqlite::Result<_>>()?;
    }
    let continuation = if more {
        q.continuation_after(out.len(), &last_key)
    } else {
        None
    };
    Ok(QueryRows {
        rows: out,
        continuation,
    })
}

fn query_row(row: &Row<'_>, output: &Output) -> Result<QueryRow, StoreError> {
    Ok(match output {
        Output::DeviceRows => QueryRow::Device(device_row(row)?),
        Output::DeviceJobRows => QueryRow::DeviceJob(job_device_row(row)?),
        Output::Documents(names) => {
            let mut doc = Map::new();
            for (i, name) in names.iter().enumerate() {
                if let Some(v) = json_of(row.get_ref(i)?) {
                    doc.insert(name.clone(), v);
                }
            }
            QueryRow::Document(Value::Object(doc))
        }
    })
}

/// A paging-key column as text.
fn key_text(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        _ => String::new(),
    }
}

/// One part of a split scan: `split`'s rows over the devices whose row key is in `from..=to`,
/// each as plain values for [`SplitQuery::merge`].
pub(crate) fn run_part(
    conn: &Connection,
    split: &SplitQuery,
    from: i64,
    to: i64,
) -> Result<Vec<Vec<PartCell>>, StoreError> {
    sqlite_only(split.dialect)?;
    let mut stmt = conn.prepare_cached(&split.sql).map_err(compiled)?;
    if !stmt.readonly() {
        return Err(StoreError::Rejected(
            "a compiled query may only read, and this statement writes".into(),
        ));
    }
    let columns = split.columns();
    let mut rows = stmt
        .query(params_from_iter(
            split.params_for(from, to).iter().map(param),
        ))
        .map_err(compiled)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(compiled)? {
        let cells = (0..columns)
            .map(|i| row.get_ref(i).map(part_cell))
            .collect::<rusqlite::Result<_>>()?;
        out.push(cells);
    }
    Ok(out)
}

fn part_cell(v: ValueRef<'_>) -> PartCell {
    match v {
        ValueRef::Integer(i) => Some(SqlParam::Integer(i)),
        ValueRef::Real(f) => Some(SqlParam::Real(f)),
        ValueRef::Text(t) => Some(SqlParam::Text(String::from_utf8_lossy(t).into_owned())),
        ValueRef::Null | ValueRef::Blob(_) => None,
    }
}

/// The least and greatest row key of `devices`; `None` when there are no devices.
pub(crate) fn device_row_bounds(conn: &Connection) -> Result<Option<(i64, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT min(row), max(row) FROM devices")?;
    let bounds: (Option<i64>, Option<i64>) = stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(bounds.0.zip(bounds.1))
}

/// `parts` consecutive ranges of row keys (first and last key, inclusive) that together cover
/// every possible key, the ones between `first` and `last` of about equal size.
pub(crate) fn row_ranges(first: i64, last: i64, parts: usize) -> Vec<(i64, i64)> {
    let parts = parts.max(1) as i128;
    let span = (i128::from(last) - i128::from(first) + 1).max(1);
    let start = |i: i128| i64::try_from(i128::from(first) + span * i / parts).unwrap_or(i64::MAX);
    (0..parts)
        .map(|i| {
            let from = if i == 0 { i64::MIN } else { start(i) };
            let to = if i == parts - 1 {
                i64::MAX
            } else {
                start(i + 1) - 1
            };
            (from, to)
        })
        .collect()
}

/// The ids of up to `limit` devices after `after` that `condition` selects, in id order.
pub(crate) fn devices_matching(
    conn: &Connection,
    condition: &SqlFragment,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let sql = format!(
        "SELECT device_id FROM devices WHERE device_id > ?{} AND ({}) ORDER BY device_id LIMIT ?{}",
        condition.params.len() + 1,
        condition_sql(condition)?,
        condition.params.len() + 2,
    );
    let mut all = condition_params(condition);
    all.push(SqlValue::Text(after.unwrap_or("").to_string()));
    all.push(SqlValue::Integer(sql_limit(limit)));
    let mut stmt = conn.prepare(&sql).map_err(compiled)?;
    let ids = stmt
        .query_map(params_from_iter(all), |r| r.get(0))
        .map_err(compiled)?;
    ids.collect::<Result<_, _>>().map_err(compiled)
}

/// How many devices `condition` selects.
pub(crate) fn count_matching(
    conn: &Connection,
    condition: &SqlFragment,
) -> Result<u64, StoreError> {
    let sql = format!(
        "SELECT count(*) FROM devices WHERE ({})",
        condition_sql(condition)?
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(compiled)?;
    let n: i64 = stmt
        .query_row(params_from_iter(condition_params(condition)), |r| r.get(0))
        .map_err(compiled)?;
    Ok(n.unsigned_abs())
}

/// A condition's SQL, if it is in this store's dialect.
pub(crate) fn condition_sql(condition: &SqlFragment) -> Result<&str, StoreError> {
    sqlite_only(condition.dialect)?;
    Ok(&condition.sql)
}

/// A condition's parameters as SQLite values, to which a statement appends its own.
pub(crate) fn condition_params(condition: &SqlFragment) -> Vec<SqlValue> {
    condition.params.iter().map(param).collect()
}

/// SQLite's plan for a compiled query (`EXPLAIN QUERY PLAN`), one step per line.
pub(crate) fn query_plan(conn: &Connection, q: &CompiledQuery) -> Result<String, StoreError> {
    sqlite_only(q.dialect)?;
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql))
        .map_err(compiled)?;
    let steps = stmt
        .query_map(params_from_iter(q.params.iter().map(param)), |r| {
            r.get::<_, String>(3)
        })
        .map_err(compiled)?;
    Ok(steps.collect::<Result<Vec<_>, _>>()?.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::row_ranges;

    /// Every row key falls in exactly one part, whatever the table's bounds.
    #[test]
    fn row_ranges_cover_every_key_once() {
        for (first, last, parts) in [(1, 100, 2), (1, 1, 4), (5, 7, 3), (-3, 1_000_000, 7)] {
            let ranges = row_ranges(first, last, parts);
            assert_eq!(ranges.len(), parts);
            assert_eq!(ranges[0].0, i64::MIN);
            assert_eq!(ranges[parts - 1].1, i64::MAX);
            for w in ranges.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0, "{ranges:?}");
            }
        }
        let halves = row_ranges(1, 100, 2);
        assert_eq!(halves, vec![(i64::MIN, 50), (51, i64::MAX)]);
    }

    /// `SELECT *` rows are decoded by the store's own row readers, which read the columns in
    /// the order the query crate selects them.
    #[test]
    fn select_star_columns_are_the_stores_row_layout() {
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            words(&fleethub_query::DEVICE_COLUMNS.join(", ")),
            words(super::super::reads::DEVICE_ROW_COLUMNS)
        );
        assert_eq!(
            fleethub_query::JOB_COLUMNS.join(", "),
            words(super::super::jobs::JOB_DEVICE_COLUMNS)
        );
    }
}
