//! The SQL executor: compiles queries to SQLite over the store's schema.

pub(crate) mod expr;
pub(crate) mod query;
pub(crate) mod register;
pub(crate) mod token;
