//! Whole statements: projections, grouping, keyset paging, and running a compiled page.

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Connection;
use serde_json::{Map, Value};

use super::expr::{self, Ctx};
use super::token::{fingerprint, Token};
use crate::ast::{AggFunc, ItemExpr, Select, Source};
use crate::error::QueryError;
use crate::{CompiledQuery, Page, QueryPage, ResultKind, ResultRow};

/// The columns `SELECT *` returns on devices, in this order.
pub const DEVICE_COLUMNS: &[&str] = &[
    "device_id",
    "status",
    "identity",
    "tags",
    "desired",
    "reported",
    "twin_version",
    "twin_etag",
];

/// The columns `SELECT *` returns on devices.jobs, in this order.
pub const JOB_COLUMNS: &[&str] = &[
    "job_id",
    "device_id",
    "job_type",
    "status",
    "created_time",
    "start_time",
    "end_time",
    "updated_time",
    "outcome",
    "error",
];

fn table(source: Source) -> &'static str {
    match source {
        Source::Devices => "devices",
        Source::DeviceJobs => "job_devices",
    }
}

/// The paging key columns, in order.
pub(crate) fn key_columns(source: Source) -> &'static [&'static str] {
    match source {
        Source::Devices => &["device_id"],
        Source::DeviceJobs => &["job_id", "device_id"],
    }
}

pub(crate) fn compile(
    select: &Select,
    text: &str,
    page: &Page,
) -> Result<CompiledQuery, QueryError> {
    let fp = fingerprint(&select.to_string());
    if select.is_aggregate() {
        return Ok(compile_aggregate(select, fp));
    }
    let keys = key_columns(select.source);
    let token = match &page.continuation {
        Some(t) => Some(Token::decode(t, text, &fp, keys.len())?),
        None => None,
    };
    let returned = token.as_ref().map_or(0, |t| t.n);
    let remaining = select.top.map(|t| t.saturating_sub(returned));
    let page_limit = match remaining {
        Some(r) => page
            .limit
            .max(1)
            .min(usize::try_from(r).unwrap_or(usize::MAX)),
        None => page.limit.max(1),
    };

    let mut ctx = Ctx::new(select.source);
    let (columns, mut outputs) = match &select.items {
        None => {
            let cols = match select.source {
                Source::Devices => DEVICE_COLUMNS,
                Source::DeviceJobs => JOB_COLUMNS,
            };
            let names: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
            (names.clone(), names)
        }
        Some(items) => {
            let mut outs = Vec::new();
            for item in items {
                if let ItemExpr::Expr(e) = &item.expr {
                    outs.push(expr::json_value(&mut ctx, e));
                }
            }
            (items.iter().map(|i| i.name.clone()).collect(), outs)
        }
    };
    outputs.extend(keys.iter().map(|k| k.to_string()));
    let mut conds = Vec::new();
    if let Some(f) = &select.filter {
        conds.push(expr::condition(&mut ctx, f));
    }
    if let Some(t) = &token {
        let params: Vec<String> =
            t.k.iter()
                .map(|k| ctx.param(SqlValue::Text(k.clone())))
                .collect();
        conds.push(match keys {
            [one] => format!("{one} > {}", params.join(", ")),
            many => format!("({}) > ({})", many.join(", "), params.join(", ")),
        });
    }
    let limit = if page_limit == 0 {
        "0".to_string()
    } else {
        ctx.param(SqlValue::Integer(
            i64::try_from(page_limit.saturating_add(1)).unwrap_or(i64::MAX),
        ))
    };
    let mut sql = format!(
        "SELECT {} FROM {}",
        outputs.join(", "),
        table(select.source)
    );
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", keys.join(", ")));
    Ok(CompiledQuery {
        sql,
        params: ctx.params,
        kind: ResultKind::Rows {
            select_star: select.items.is_none(),
        },
        columns,
        key_columns: keys.len(),
        page_limit,
        returned_before: returned,
        top: select.top,
        fingerprint: fp,
    })
}

fn compile_aggregate(select: &Select, fp: String) -> CompiledQuery {
    let mut ctx = Ctx::new(select.source);
    let items = select.items.as_deref().unwrap_or(&[]);
    let mut outputs = Vec::new();
    for item in items {
        outputs.push(match &item.expr {
            ItemExpr::Expr(e) => expr::json_value(&mut ctx, e),
            ItemExpr::Aggregate(AggFunc::Count, _) => "COUNT(*)".to_string(),
            ItemExpr::Aggregate(f, arg) => {
                let j = match arg {
                    Some(a) => expr::json_value(&mut ctx, a),
                    None => "NULL".to_string(),
                };
                format!("fh_{}({j})", f.name().to_ascii_lowercase())
            }
        });
    }
    let mut sql = format!(
        "SELECT {} FROM {}",
        outputs.join(", "),
        table(select.source)
    );
    if let Some(f) = &select.filter {
        let cond = expr::condition(&mut ctx, f);
        sql.push_str(&format!(" WHERE {cond}"));
    }
    if !select.group_by.is_empty() {
        let keys: Vec<String> = select
            .group_by
            .iter()
            .map(|g| format!("fh_key({})", expr::json_value(&mut ctx, g)))
            .collect();
        sql.push_str(&format!(
            " GROUP BY {} ORDER BY {}",
            keys.join(", "),
            keys.join(", ")
        ));
    }
    if let Some(top) = select.top {
        let n = ctx.param(SqlValue::Integer(i64::try_from(top).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" LIMIT {n}"));
    }
    CompiledQuery {
        sql,
        params: ctx.params,
        kind: ResultKind::Aggregate,
        columns: items.iter().map(|i| i.name.clone()).collect(),
        key_columns: 0,
        page_limit: usize::MAX,
        returned_before: 0,
        top: select.top,
        fingerprint: fp,
    }
}

/// A projection or aggregate column as JSON: text is JSON, numbers are numbers, NULL is
/// undefined.
pub(crate) fn column_json(v: ValueRef<'_>) -> Option<Value> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(Value::from(i)),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map(Value::Number),
        ValueRef::Text(t) => serde_json::from_slice(t).ok(),
        ValueRef::Blob(_) => None,
    }
}

fn key_text(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        _ => String::new(),
    }
}

pub(crate) fn execute(q: &CompiledQuery, conn: &Connection) -> rusqlite::Result<QueryPage> {
    let mut stmt = conn.prepare_cached(&q.sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(q.params.iter()))?;
    let outputs = q.columns.len();
    let mut out = Vec::new();
    let mut last_key: Vec<String> = Vec::new();
    let mut more = false;
    while let Some(row) = rows.next()? {
        if out.len() >= q.page_limit {
            more = true;
            break;
        }
        let item = match q.kind {
            ResultKind::Rows { select_star: true } => {
                let cols = (0..outputs)
                    .map(|i| row.get::<_, SqlValue>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                ResultRow::Columns(cols)
            }
            _ => {
                let mut doc = Map::new();
                for (i, name) in q.columns.iter().enumerate() {
                    if let Some(v) = column_json(row.get_ref(i)?) {
                        doc.insert(name.clone(), v);
                    }
                }
                ResultRow::Document(Value::Object(doc))
            }
        };
        last_key = (0..q.key_columns)
            .map(|i| row.get_ref(outputs + i).map(key_text))
            .collect::<rusqlite::Result<_>>()?;
        out.push(item);
    }
    let continuation = if more {
        q.continuation_after(out.len(), &last_key)
    } else {
        None
    };
    Ok(QueryPage {
        rows: out,
        continuation,
    })
}

impl CompiledQuery {
    /// The token for the page after one that returned `rows_returned` rows ending at `last_key`
    /// (the row's trailing key columns as text), when more rows may follow; `None` once TOP is
    /// reached or for aggregates. [`CompiledQuery::execute`] calls this for you.
    pub fn continuation_after(&self, rows_returned: usize, last_key: &[String]) -> Option<String> {
        if self.kind == ResultKind::Aggregate || last_key.len() != self.key_columns {
            return None;
        }
        let n = self.returned_before.saturating_add(rows_returned as u64);
        if self.top.is_some_and(|top| n >= top) {
            return None;
        }
        Some(
            Token {
                v: 1,
                q: self.fingerprint.clone(),
                k: last_key.to_vec(),
                n,
            }
            .encode(),
        )
    }
}
