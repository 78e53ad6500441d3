//! The SQL executor's compiler: a query or condition becomes one dialect's SQL text over the
//! store's schema, with parameters of our own type ([`SqlParam`]) and a description of the rows
//! ([`crate::Output`]). The store runs it: it owns the connections, the functions the SQL calls
//! (their meaning is [`runtime`]) and the mapping of the database's errors.
//!
//! Dialect-neutral: the schema the SQL targets (`schema.rs`) and paging (`paging.rs`, `token.rs`).
//! Per dialect: the SQL text (`sqlite/`). A PostgreSQL dialect is another module beside
//! `sqlite/` and another arm where [`Dialect`] is matched.

pub(crate) mod paging;
pub mod runtime;
pub(crate) mod schema;
pub(crate) mod split;
pub(crate) mod sqlite;
pub(crate) mod token;

/// The SQL dialect a statement is compiled for; a store runs only statements in its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// SQLite with its JSON functions, the `->`/`->>` operators, `?N` parameters, and the
    /// functions of [`runtime`] registered under their `fh_*` names.
    Sqlite,
}

impl Dialect {
    /// The dialect's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SQLite",
        }
    }
}

/// A statement parameter, in the dialect's numbering (`?1`, `?2`, … in SQLite).
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    /// A 64-bit integer.
    Integer(i64),
    /// A double.
    Real(f64),
    /// Text (JSON documents are passed as their text).
    Text(String),
}
