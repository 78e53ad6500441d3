//! IoT Hub's query language: one parser, two executors that agree.
//!
//! SKELETON — the public contract other crates build against while this crate is written.
//! Bodies marked `todo!` are being implemented.

use std::fmt;

/// A parse or validation error, positioned in the query text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// 1-based line of the offending token.
    pub line: usize,
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// What was found there (`end of query` at the end).
    pub found: String,
    /// What would have been valid there.
    pub expected: String,
    /// One line a person can act on.
    pub message: String,
    /// The source line and a caret under the spot, ready to print.
    pub rendered: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rendered)
    }
}

impl std::error::Error for QueryError {}

/// A SQL fragment with its positional parameters (`?1`, `?2`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFragment {
    pub sql: String,
    pub params: Vec<rusqlite::types::Value>,
}

/// A parsed WHERE condition over `devices` (a job's `queryCondition`), or `*` for every device.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    _private: (),
}

impl Condition {
    /// Parses a condition: the text after WHERE, a `deviceId IN [...]` list, or `*`.
    pub fn parse(_text: &str) -> Result<Condition, QueryError> {
        todo!()
    }

    /// The condition as a boolean SQL expression over the `devices` table's columns, usable as
    /// `SELECT device_id FROM devices WHERE {sql} ORDER BY device_id` on a store connection
    /// (which has this crate's SQL functions registered through the store's `ConnectionInit`).
    pub fn to_sql(&self) -> SqlFragment {
        todo!()
    }

    /// Whether one twin, in IoT Hub's service shape (as `GET /twins/{id}` returns it, with
    /// `connectionState`), satisfies the condition.
    pub fn matches(&self, _twin: &serde_json::Value) -> bool {
        todo!()
    }
}

/// Registers the SQL functions compiled queries call. `connected(device_id)` answers whether a
/// device is connected right now (connection state is live, not stored).
pub fn register_sql_functions(
    _conn: &rusqlite::Connection,
    _connected: std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>,
) -> rusqlite::Result<()> {
    todo!()
}
