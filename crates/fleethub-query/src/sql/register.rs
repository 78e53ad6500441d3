//! The SQL functions compiled queries call, registered on every store connection.
//!
//! Each runs the evaluator's own code on JSON text (NULL is undefined), which is how the two
//! executors agree by construction wherever the compiler does not inline a comparison.

use std::sync::Arc;

use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::Value;

use crate::aggregate::Accumulator;
use crate::ast::{AggFunc, ArithOp, CmpOp};
use crate::functions::Func;
use crate::value;

/// Argument `i` as a JSON value; NULL, non-text and malformed JSON are undefined.
fn json_arg(ctx: &Context<'_>, i: usize) -> Option<Value> {
    if i >= ctx.len() {
        return None;
    }
    match ctx.get_raw(i) {
        ValueRef::Text(t) => serde_json::from_slice(t).ok(),
        ValueRef::Integer(n) => Some(Value::from(n)),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map(Value::Number),
        _ => None,
    }
}

fn text_arg(ctx: &Context<'_>, i: usize) -> String {
    match ctx.get_raw(i) {
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        _ => String::new(),
    }
}

fn to_text(v: Option<Value>) -> Option<String> {
    v.map(|v| v.to_string())
}

fn cmp_op(s: &str) -> Option<CmpOp> {
    Some(match s {
        "=" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        "<" => CmpOp::Lt,
        ">" => CmpOp::Gt,
        "<=" => CmpOp::Le,
        ">=" => CmpOp::Ge,
        _ => return None,
    })
}

fn arith_op(s: &str) -> Option<ArithOp> {
    Some(match s {
        "+" => ArithOp::Add,
        "-" => ArithOp::Sub,
        "*" => ArithOp::Mul,
        "/" => ArithOp::Div,
        "%" => ArithOp::Rem,
        _ => return None,
    })
}

/// `fh_op(name, args...)`: arithmetic (`+ - * / %`), `neg`, or a function by name.
fn op(ctx: &Context<'_>) -> Option<String> {
    let name = text_arg(ctx, 0);
    let args: Vec<Option<Value>> = (1..ctx.len()).map(|i| json_arg(ctx, i)).collect();
    let refs: Vec<Option<&Value>> = args.iter().map(Option::as_ref).collect();
    let arg = |i: usize| refs.get(i).copied().flatten();
    let out = if let Some(op) = arith_op(&name) {
        value::arith(op, arg(0), arg(1))
    } else if name == "neg" {
        value::negate(arg(0))
    } else {
        crate::functions::call(Func::from_name(&name)?, &refs)
    };
    to_text(out)
}

/// The AVG/SUM/MIN/MAX aggregate over JSON text.
struct JsonAggregate(AggFunc);

impl Aggregate<Accumulator, Option<String>> for JsonAggregate {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Accumulator> {
        Ok(Accumulator::new(self.0))
    }

    fn step(&self, ctx: &mut Context<'_>, acc: &mut Accumulator) -> rusqlite::Result<()> {
        acc.step(json_arg(ctx, 0).as_ref());
        Ok(())
    }

    fn finalize(
        &self,
        _: &mut Context<'_>,
        acc: Option<Accumulator>,
    ) -> rusqlite::Result<Option<String>> {
        let acc = acc.unwrap_or_else(|| Accumulator::new(self.0));
        Ok(to_text(acc.finish()))
    }
}

/// Registers the SQL functions compiled queries call. `connected(device_id)` answers whether a
/// device is connected right now (connection state is live, not stored).
///
/// Registered: `fh_connected(device_id)` ('Connected' or 'Disconnected'; not deterministic),
/// and, deterministic: `fh_semver(json)` (a version's sort key), `fh_cmp(op, a, b)`,
/// `fh_op(name, args...)`, `fh_in(x, list, negated)`, `fh_section(column)` (a stored
/// desired/reported column in twin shape), `fh_key(json)` (GROUP BY key) and the aggregates
/// `fh_avg`, `fh_sum`, `fh_min`, `fh_max`.
pub fn register_sql_functions(
    conn: &Connection,
    connected: Arc<dyn Fn(&str) -> bool + Send + Sync>,
) -> rusqlite::Result<()> {
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("fh_connected", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let id = text_arg(ctx, 0);
        Ok(if connected(&id) {
            "Connected"
        } else {
            "Disconnected"
        })
    })?;
    conn.create_scalar_function("fh_semver", 1, det, |ctx| {
        Ok(json_arg(ctx, 0)
            .as_ref()
            .and_then(Value::as_str)
            .and_then(fleethub_core::semver::semver_key))
    })?;
    conn.create_scalar_function("fh_cmp", 3, det, |ctx| {
        let (a, b) = (json_arg(ctx, 1), json_arg(ctx, 2));
        let hit =
            cmp_op(&text_arg(ctx, 0)).is_some_and(|op| value::compare(op, a.as_ref(), b.as_ref()));
        Ok(i64::from(hit))
    })?;
    conn.create_scalar_function("fh_op", -1, det, |ctx| Ok(op(ctx)))?;
    conn.create_scalar_function("fh_in", 3, det, |ctx| {
        let x = json_arg(ctx, 0);
        let list = json_arg(ctx, 1);
        let list = list
            .as_ref()
            .and_then(Value::as_array)
            .map_or(&[][..], |l| l);
        let negated = matches!(ctx.get_raw(2), ValueRef::Integer(n) if n != 0);
        Ok(i64::from(value::in_list(x.as_ref(), list, negated)))
    })?;
    conn.create_scalar_function("fh_section", 1, det, |ctx| {
        let props = json_arg(ctx, 0)
            .and_then(|v| serde_json::from_value::<fleethub_core::twin::TwinProperties>(v).ok());
        Ok(props.map(|p| p.to_twin_json().to_string()))
    })?;
    conn.create_scalar_function("fh_key", 1, det, |ctx| {
        Ok(value::group_key(json_arg(ctx, 0).as_ref()))
    })?;
    for (name, func) in [
        ("fh_avg", AggFunc::Avg),
        ("fh_sum", AggFunc::Sum),
        ("fh_min", AggFunc::Min),
        ("fh_max", AggFunc::Max),
    ] {
        conn.create_aggregate_function(name, 1, det, JsonAggregate(func))?;
    }
    Ok(())
}
