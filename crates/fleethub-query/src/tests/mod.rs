//! Crate tests: parser snapshots and the bounds on queries. The SQL executor's tests run the
//! compiled SQL in a real store: `tests/sql/`.

mod limits;
mod parse;
