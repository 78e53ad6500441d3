//! IoT Hub's query language: one parser, two executors that agree.
//!
//! - [`Query::parse`] reads `SELECT ... FROM devices | devices.jobs [WHERE ...] [GROUP BY ...]`
//!   and [`Condition::parse`] a bare condition (a job's `queryCondition`, or `*`).
//! - The evaluator ([`Query::evaluate`], [`Query::aggregate`], [`Condition::matches`]) runs over
//!   documents in IoT Hub's service shape.
//! - The SQL compiler ([`Query::compile`], [`Condition::to_sql`]) targets the store's schema in
//!   a named [`Dialect`] and returns SQL text, [`SqlParam`]s and a description of the rows; it
//!   does no I/O. The store runs it, with the functions the SQL calls registered on its
//!   connections; they run the evaluator's own code ([`runtime`]), so both executors give every
//!   query one meaning.
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
pub use sql::runtime;
pub use sql::schema::{DEVICE_COLUMNS, JOB_COLUMNS};
pub use sql::split::{PartCell, SplitQuery};
pub use sql::{Dialect, SqlParam};

/// A boolean SQL expression over the `devices` table with its positional parameters (`?1`, `?2`,
/// … in SQLite), in one dialect.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFragment {
    /// The dialect `sql` is written in.
    pub dialect: Dialect,
    /// The expression; always 0 or 1, never NULL.
    pub sql: String,
    /// Its parameters, numbered from 1.
    pub params: Vec<SqlParam>,
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

    /// The condition as a boolean SQL expression over the `devices` table's columns in
    /// `dialect`, for the store to run (as `… FROM devices WHERE {sql}`, on a connection with
    /// the [`runtime`] functions registered). It is always 0 or 1, never NULL.
    pub fn to_sql(&self, dialect: Dialect) -> SqlFragment {
        match dialect {
            Dialect::Sqlite => {
                let mut ctx = sql::sqlite::expr::Ctx::new(Source::Devices);
                let sql = match &self.expr {
                    Some(e) => sql::sqlite::expr::condition(&mut ctx, e),
                    None => "1".to_string(),
                };
                SqlFragment {
                    dialect,
                    sql,
                    params: ctx.params,
                }
            }
        }
    }

    /// Every property path the condition reads, each as its segments with the root spelled
    /// canonically (`["properties", "reported", "firmware", "current_version"]`, `["$version"]`);
    /// none for `*`. A change that touches none of them cannot change what the condition says.
    pub fn paths(&self) -> Vec<Vec<String>> {
        self.expr
            .iter()
            .flat_map(|e| e.paths())
            .map(|p| p.segments.clone())
            .collect()
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

/// What the rows of a compiled query hold, column by column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `SELECT * FROM devices`: the columns of [`DEVICE_COLUMNS`], in that order.
    DeviceRows,
    /// `SELECT * FROM devices.jobs`: the columns of [`JOB_COLUMNS`], in that order.
    DeviceJobRows,
    /// A projection or a group per row: one column per name, JSON text (NULL: undefined; an
    /// integer for COUNT), to be read as a JSON object that leaves undefined values out.
    Documents(Vec<String>),
}

/// One page of a query, compiled to one dialect's SQL.
///
/// Row layout: the output columns (described by `output`), then `key_columns` paging-key
/// columns (`device_id`, or `job_id, device_id`). The SQL fetches up to `page_limit + 1` rows:
/// the extra row only shows that another page exists, and then
/// [`CompiledQuery::continuation_after`] gives the next page's token.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledQuery {
    /// The dialect `sql` is written in.
    pub dialect: Dialect,
    /// The statement.
    pub sql: String,
    /// Its parameters, numbered from 1.
    pub params: Vec<SqlParam>,
    /// For an aggregate over `devices`: the same query split into parts over ranges of row
    /// keys, which a store may run on several connections at once and merge.
    pub split: Option<SplitQuery>,
    /// What the output columns hold.
    pub output: Output,
    /// How many paging-key columns follow the output columns (0 for aggregates).
    pub key_columns: usize,
    /// The most rows this page returns.
    pub page_limit: usize,
    aggregate: bool,
    returned_before: u64,
    top: Option<u64>,
    fingerprint: String,
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

    /// Compiles one page to `dialect`. Fails only on a malformed or foreign continuation token.
    pub fn compile(&self, page: &Page, dialect: Dialect) -> Result<CompiledQuery, QueryError> {
        if self.select.is_aggregate() {
            return Ok(match dialect {
                Dialect::Sqlite => sql::sqlite::select::compile_aggregate(&self.select),
            });
        }
        let plan = sql::paging::plan(&self.select, &self.text, page)?;
        Ok(match dialect {
            Dialect::Sqlite => sql::sqlite::select::compile(&self.select, plan),
        })
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
