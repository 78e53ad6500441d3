//! IoT Hub's query language: one parser, two executors that agree.
//!
//! - [`Query::parse`] reads `SELECT ... FROM devices | devices.jobs [WHERE ...] [GROUP BY ...]`
//!   and [`Condition::parse`] a bare condition (a job's `queryCondition`, or `*`).
//! - The evaluator ([`Query::evaluate`], [`Query::aggregate`], [`Condition::matches`]) runs over
//!   documents in IoT Hub's service shape.
//! - The SQL compiler ([`Query::compile`], [`Condition::to_sql`]) targets the store's SQLite
//!   schema; compiled SQL calls the functions [`register_sql_functions`] installs, which run the
//!   evaluator's own code, so both executors give every query one meaning.
//!
//! The language is documented for users in `docs/query-language.md`.

mod aggregate;
mod ast;
mod error;
mod eval;
mod functions;
mod lexer;
pub mod limits;
mod parser;
mod paths;
mod sql;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;

pub use ast::Source;
pub use error::QueryError;
/// The sort key `SEMVER()` compares by; semantic versions live in core.
pub use fleethub_core::semver::semver_key;
pub use sql::query::{DEVICE_COLUMNS, JOB_COLUMNS};
pub use sql::register::register_sql_functions;

/// A SQL fragment with its positional parameters (`?1`, `?2`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFragment {
    pub sql: String,
    pub params: Vec<rusqlite::types::Value>,
}

/// A parsed WHERE condition over `devices` (a job's `queryCondition`), or `*` for every device.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// `None` for `*`.
    expr: Option<ast::Expr>,
}

impl Condition {
    /// Parses a condition: the text after WHERE, a `deviceId IN [...]` list, or `*`.
    pub fn parse(text: &str) -> Result<Condition, QueryError> {
        if text.trim() == "*" {
            return Ok(Condition { expr: None });
        }
        let expr = parser::parse_condition(text, Source::Devices)?;
        Ok(Condition { expr: Some(expr) })
    }

    /// The condition as a boolean SQL expression over the `devices` table's columns, usable as
    /// `SELECT device_id FROM devices WHERE {sql} ORDER BY device_id` on a store connection
    /// (which has this crate's SQL functions registered through the store's `ConnectionInit`).
    /// It is always 0 or 1, never NULL.
    pub fn to_sql(&self) -> SqlFragment {
        let mut ctx = sql::expr::Ctx::new(Source::Devices);
        let sql = match &self.expr {
            Some(e) => sql::expr::condition(&mut ctx, e),
            None => "1".to_string(),
        };
        SqlFragment {
            sql,
            params: ctx.params,
        }
    }

    /// Whether one twin, in IoT Hub's service shape (as `GET /twins/{id}` returns it, with
    /// `connectionState`), satisfies the condition.
    pub fn matches(&self, twin: &serde_json::Value) -> bool {
        match &self.expr {
            Some(e) => eval::truth(Source::Devices, e, twin),
            None => true,
        }
    }
}

impl fmt::Display for Condition {
    /// The condition in canonical, fully parenthesised form (`*` for every device).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.expr {
            Some(e) => write!(f, "{e}"),
            None => f.write_str("*"),
        }
    }
}

/// A parsed `SELECT` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    select: ast::Select,
    text: String,
}

/// Which page of a query to compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The most rows this page returns (`x-ms-max-item-count`; 0 is treated as 1). Ignored by
    /// aggregate queries, which return every group.
    pub limit: usize,
    /// The previous page's continuation token (`x-ms-continuation`), `None` for the first page.
    pub continuation: Option<String>,
}

/// What the rows of a compiled query hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    /// One row per document. `select_star`: the raw columns ([`DEVICE_COLUMNS`] or
    /// [`JOB_COLUMNS`]); otherwise one JSON-text column per projection (NULL = undefined).
    Rows { select_star: bool },
    /// One row per group: one column per select item, JSON text (COUNT as an integer).
    Aggregate,
}

/// One page of a query, compiled to SQLite.
///
/// Row layout: the output columns (named by `columns`), then `key_columns` paging-key columns
/// (`device_id`, or `job_id, device_id`). The SQL fetches up to `page_limit + 1` rows: the extra
/// row only shows that another page exists. [`CompiledQuery::execute`] does all of this.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledQuery {
    /// The statement; parameters are `?1`, `?2`, ….
    pub sql: String,
    /// Its parameters.
    pub params: Vec<rusqlite::types::Value>,
    /// What the rows hold.
    pub kind: ResultKind,
    /// Output names, one per output column (for `SELECT *`, the column names).
    pub columns: Vec<String>,
    /// How many paging-key columns follow the output columns (0 for aggregates).
    pub key_columns: usize,
    /// The most rows this page returns.
    pub page_limit: usize,
    returned_before: u64,
    top: Option<u64>,
    fingerprint: String,
}

/// One row of a page.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultRow {
    /// `SELECT *`: the raw columns, in [`DEVICE_COLUMNS`] / [`JOB_COLUMNS`] order.
    Columns(Vec<rusqlite::types::Value>),
    /// A projection or a group: a JSON object, undefined values left out.
    Document(serde_json::Value),
}

/// The rows of one page and the token for the next, if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    pub rows: Vec<ResultRow>,
    pub continuation: Option<String>,
}

impl CompiledQuery {
    /// Runs the page on a store connection (with [`register_sql_functions`] installed).
    pub fn execute(&self, conn: &rusqlite::Connection) -> rusqlite::Result<QueryPage> {
        sql::query::execute(self, conn)
    }
}

impl Query {
    /// Parses a query.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let select = parser::parse_select(text)?;
        Ok(Query {
            select,
            text: text.to_string(),
        })
    }

    /// What the query reads.
    pub fn source(&self) -> Source {
        self.select.source
    }

    /// Whether the query aggregates (GROUP BY or an aggregate function).
    pub fn is_aggregate(&self) -> bool {
        self.select.is_aggregate()
    }

    /// Whether the query is `SELECT *`.
    pub fn is_select_star(&self) -> bool {
        self.select.items.is_none()
    }

    /// `TOP n`, if given.
    pub fn top(&self) -> Option<u64> {
        self.select.top
    }

    /// The WHERE clause as a [`Condition`] (`*` when there is none); only for `FROM devices`.
    pub fn condition(&self) -> Option<Condition> {
        (self.select.source == Source::Devices).then(|| Condition {
            expr: self.select.filter.clone(),
        })
    }

    /// Compiles one page to SQLite. Fails only on a malformed or foreign continuation token.
    pub fn compile(&self, page: &Page) -> Result<CompiledQuery, QueryError> {
        sql::query::compile(&self.select, &self.text, page)
    }

    /// WHERE and projection over one document (a twin in service shape, or a devices.jobs
    /// row): `None` when it does not match; the document itself for `SELECT *`; else an object
    /// of the projections with undefined values left out. Aggregate items are skipped: use
    /// [`Query::aggregate`].
    pub fn evaluate(&self, doc: &serde_json::Value) -> Option<serde_json::Value> {
        eval::evaluate(&self.select, doc)
    }

    /// Runs an aggregate query over documents: one object per group, in group-key order.
    pub fn aggregate<'a>(
        &self,
        docs: impl IntoIterator<Item = &'a serde_json::Value>,
    ) -> Vec<serde_json::Value> {
        eval::aggregate(&self.select, docs)
    }
}

impl fmt::Display for Query {
    /// The query in canonical form: keywords upper-case, every item named, operators fully
    /// parenthesised.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.select)
    }
}
