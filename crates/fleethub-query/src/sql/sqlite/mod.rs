//! The SQLite dialect: expressions (`expr.rs`) and whole statements (`select.rs`) as SQLite SQL.

pub(crate) mod expr;
pub(crate) mod select;
