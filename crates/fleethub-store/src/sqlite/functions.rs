//! The SQL functions compiled queries call (`fleethub_query::runtime`), registered on every
//! connection the store opens, so a compiled query or job condition runs on any of them.

use std::sync::Arc;

use fleethub_query::runtime::{self, Aggregate, AggregateState};
use parking_lot::RwLock;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::Value;

use crate::Presence;

/// Where `fh_connected` asks whether a device is connected: set by the hub once it runs
/// ([`crate::Store::set_presence`]); until then every device is disconnected.
pub(crate) type PresenceSlot = Arc<RwLock<Option<Presence>>>;

/// Argument `i` as a JSON value; NULL, non-text and malformed JSON are undefined.
fn json_arg(ctx: &Context<'_>, i: usize) -> Option<Value> {
    if i >= ctx.len() {
        return None;
    }
    json_of(ctx.get_raw(i))
}

/// A column or argument as JSON: text is JSON, numbers are numbers, NULL is undefined.
pub(crate) fn json_of(v: ValueRef<'_>) -> Option<Value> {
    match v {
        ValueRef::Text(t) => serde_json::from_slice(t).ok(),
        ValueRef::Integer(n) => Some(Value::from(n)),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map(Value::Number),
        ValueRef::Null | ValueRef::Blob(_) => None,
    }
}

fn text_arg(ctx: &Context<'_>, i: usize) -> String {
    match ctx.get_raw(i) {
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        _ => String::new(),
    }
}

/// Argument `i` as text, borrowed; `None` for NULL and anything not UTF-8 text.
fn str_arg<'a>(ctx: &'a Context<'_>, i: usize) -> Option<&'a str> {
    match ctx.get_raw(i) {
        ValueRef::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    }
}

fn to_text(v: Option<Value>) -> Option<String> {
    v.map(|v| v.to_string())
}

/// SQLite's side of one `fh_avg`/`fh_sum`/`fh_min`/`fh_max`, or (`partial`) of one
/// `fh_*_part`, which answers its running state instead of its value.
struct JsonAggregate {
    aggregate: Aggregate,
    partial: bool,
}

impl rusqlite::functions::Aggregate<AggregateState, Option<String>> for JsonAggregate {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<AggregateState> {
        Ok(self.aggregate.start())
    }

    fn step(&self, ctx: &mut Context<'_>, state: &mut AggregateState) -> rusqlite::Result<()> {
        state.step(json_arg(ctx, 0).as_ref());
        Ok(())
    }

    fn finalize(
        &self,
        _: &mut Context<'_>,
        state: Option<AggregateState>,
    ) -> rusqlite::Result<Option<String>> {
        let state = state.unwrap_or_else(|| self.aggregate.start());
        Ok(if self.partial {
            Some(state.finish_part())
        } else {
            to_text(state.finish())
        })
    }
}

/// Registers every function of [`runtime::SCALAR_FUNCTIONS`], [`runtime::AGGREGATES`] and
/// [`runtime::PARTIAL_AGGREGATES`] on `conn`; `fh_connected` answers from `presence`.
pub(crate) fn register(conn: &Connection, presence: PresenceSlot) -> rusqlite::Result<()> {
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("fh_connected", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let id = text_arg(ctx, 0);
        let connected = presence.read().as_ref().is_some_and(|p| p(&id));
        Ok(if connected {
            "Connected"
        } else {
            "Disconnected"
        })
    })?;
    conn.create_scalar_function("fh_semver", 1, det, |ctx| {
        Ok(runtime::semver(json_arg(ctx, 0).as_ref()))
    })?;
    conn.create_scalar_function("fh_cmp", 3, det, |ctx| {
        let (a, b) = (json_arg(ctx, 1), json_arg(ctx, 2));
        Ok(i64::from(runtime::cmp(
            &text_arg(ctx, 0),
            a.as_ref(),
            b.as_ref(),
        )))
    })?;
    conn.create_scalar_function("fh_op", -1, det, |ctx| {
        let args: Vec<Option<Value>> = (1..ctx.len()).map(|i| json_arg(ctx, i)).collect();
        Ok(to_text(runtime::op(&text_arg(ctx, 0), &args)))
    })?;
    conn.create_scalar_function("fh_in", 3, det, |ctx| {
        let (x, list) = (json_arg(ctx, 0), json_arg(ctx, 1));
        let negated = matches!(ctx.get_raw(2), ValueRef::Integer(n) if n != 0);
        Ok(i64::from(runtime::in_list(
            x.as_ref(),
            list.as_ref(),
            negated,
        )))
    })?;
    conn.create_scalar_function("fh_section", 1, det, |ctx| {
        Ok(runtime::section(json_arg(ctx, 0)))
    })?;
    conn.create_scalar_function("fh_metadata", 2, det, |ctx| {
        Ok(runtime::metadata(str_arg(ctx, 0), str_arg(ctx, 1)))
    })?;
    conn.create_scalar_function("fh_entry", 3, det, |ctx| {
        Ok(runtime::entry(
            str_arg(ctx, 0),
            str_arg(ctx, 1),
            str_arg(ctx, 2),
        ))
    })?;
    conn.create_scalar_function("fh_key", 1, det, |ctx| {
        Ok(runtime::group_key(json_arg(ctx, 0).as_ref()))
    })?;
    let aggregates = runtime::AGGREGATES.iter().map(|a| (a, false));
    let partials = runtime::PARTIAL_AGGREGATES.iter().map(|a| (a, true));
    for (&(name, aggregate), partial) in aggregates.chain(partials) {
        let function = JsonAggregate { aggregate, partial };
        conn.create_aggregate_function(name, 1, det, function)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query crate names the functions its SQL calls; every one must be registered here.
    #[test]
    fn every_function_compiled_sql_calls_is_registered() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn, PresenceSlot::default()).unwrap();
        for &(name, arity) in runtime::SCALAR_FUNCTIONS {
            let args = vec!["NULL"; arity.unwrap_or(2)].join(", ");
            conn.prepare(&format!("SELECT {name}({args})"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        for &(name, _) in runtime::AGGREGATES
            .iter()
            .chain(runtime::PARTIAL_AGGREGATES)
        {
            conn.prepare(&format!("SELECT {name}(NULL)"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
