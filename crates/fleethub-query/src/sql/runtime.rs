//! What the functions compiled SQL calls mean, as plain Rust over JSON values.
//!
//! Compiled SQL calls a few functions the database does not have (`fh_cmp`, `fh_op`, …); the
//! store registers them on its connections and each one calls the function of the same name
//! here, which runs the evaluator's own code. That is how the two executors agree by
//! construction wherever the compiler does not inline a comparison. Arguments and results are
//! JSON values; `None` is undefined (SQL NULL). Connection state (`fh_connected`) is live, not
//! stored: the store answers it from what the hub tells it.

use serde_json::Value;

use crate::aggregate::Accumulator;
use crate::ast::{AggFunc, ArithOp, CmpOp};
use crate::functions::Func;
use crate::value;

/// The SQL functions compiled SQL calls, with their argument counts (`None`: any number): each
/// maps to the function of this module named after it (`fh_cmp` → [`cmp`]). `fh_connected`
/// takes a device id and answers `'Connected'` or `'Disconnected'`; it is the only one that is
/// not deterministic. The aggregates are in [`AGGREGATES`].
pub const SCALAR_FUNCTIONS: &[(&str, Option<usize>)] = &[
    ("fh_connected", Some(1)),
    ("fh_semver", Some(1)),
    ("fh_cmp", Some(3)),
    ("fh_op", None),
    ("fh_in", Some(3)),
    ("fh_section", Some(1)),
    ("fh_key", Some(1)),
    ("fh_metadata", Some(2)),
    ("fh_entry", Some(3)),
];

/// The aggregate functions compiled SQL calls, each over one JSON argument.
pub const AGGREGATES: &[(&str, Aggregate)] = &[
    ("fh_avg", Aggregate::Avg),
    ("fh_sum", Aggregate::Sum),
    ("fh_min", Aggregate::Min),
    ("fh_max", Aggregate::Max),
];

/// The aggregates a part of a split scan calls ([`crate::SplitQuery`]): each is the aggregate
/// of the same name in [`AGGREGATES`] but answers its running state as text, which
/// [`crate::SplitQuery::merge`] folds together with the other parts' states.
pub const PARTIAL_AGGREGATES: &[(&str, Aggregate)] = &[
    ("fh_avg_part", Aggregate::Avg),
    ("fh_sum_part", Aggregate::Sum),
    ("fh_min_part", Aggregate::Min),
    ("fh_max_part", Aggregate::Max),
];

/// `fh_semver(json)`: a version string's sort key; `None` when it is not a version.
pub fn semver(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .and_then(fleethub_core::semver::semver_key)
}

/// `fh_cmp(op, a, b)`: the evaluator's comparison (`=`, `!=`, `<`, `>`, `<=`, `>=`); an unknown
/// operator is false.
pub fn cmp(op: &str, a: Option<&Value>, b: Option<&Value>) -> bool {
    cmp_op(op).is_some_and(|op| value::compare(op, a, b))
}

/// `fh_op(name, args…)`: arithmetic (`+ - * / %`), `neg`, or a query-language function by name.
pub fn op(name: &str, args: &[Option<Value>]) -> Option<Value> {
    let refs: Vec<Option<&Value>> = args.iter().map(Option::as_ref).collect();
    let arg = |i: usize| refs.get(i).copied().flatten();
    if let Some(op) = arith_op(name) {
        value::arith(op, arg(0), arg(1))
    } else if name == "neg" {
        value::negate(arg(0))
    } else {
        crate::functions::call(Func::from_name(name)?, &refs)
    }
}

/// `fh_in(x, list, negated)`: typed membership of `x` in a JSON array.
pub fn in_list(x: Option<&Value>, list: Option<&Value>, negated: bool) -> bool {
    let list = list.and_then(Value::as_array).map_or(&[][..], |l| l);
    value::in_list(x, list, negated)
}

/// `fh_section(column)`: a stored desired/reported column as the twin shows it, as JSON text.
pub fn section(stored: Option<Value>) -> Option<String> {
    let props = stored
        .and_then(|v| serde_json::from_value::<fleethub_core::twin::TwinProperties>(v).ok())?;
    Some(props.to_twin_json().to_string())
}

/// `fh_metadata(values, stored)`: a section's whole `$metadata` tree as JSON text, from its
/// values (JSON text) and the metadata the store keeps (packed or full,
/// [`fleethub_core::twin::stored_metadata`]); full text comes back as it is, without a parse.
pub fn metadata(values: Option<&str>, stored: Option<&str>) -> Option<String> {
    use fleethub_core::twin::stored_metadata;
    let stored = stored?;
    if !stored_metadata::is_packed(stored) {
        return Some(stored.to_string());
    }
    let values = serde_json::from_str(values?).ok()?;
    let full = stored_metadata::unpack(&values, stored).ok()?;
    serde_json::to_string(&full).ok()
}

/// `fh_entry(stored, device_id, status)`: a device's whole registry entry as JSON text, from
/// the text the store keeps (packed or full, [`fleethub_core::stored_entry`]) and the row's id
/// and status columns; full text comes back as it is, without a parse.
pub fn entry(
    stored: Option<&str>,
    device_id: Option<&str>,
    status: Option<&str>,
) -> Option<String> {
    fleethub_core::stored_entry::unpack_text(stored?, device_id?, status?).ok()
}

/// `fh_key(json)`: the GROUP BY key (equal typed values share one).
pub fn group_key(v: Option<&Value>) -> Option<String> {
    value::group_key(v)
}

/// Which aggregate an `fh_avg`/`fh_sum`/`fh_min`/`fh_max` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// AVG over numbers.
    Avg,
    /// SUM over numbers (0 over none).
    Sum,
    /// The least number.
    Min,
    /// The greatest number.
    Max,
}

/// One group's running aggregate, stepped once per row.
#[derive(Debug, Clone)]
pub struct AggregateState(Accumulator);

impl Aggregate {
    /// A fresh state for one group.
    pub fn start(self) -> AggregateState {
        AggregateState(Accumulator::new(match self {
            Aggregate::Avg => AggFunc::Avg,
            Aggregate::Sum => AggFunc::Sum,
            Aggregate::Min => AggFunc::Min,
            Aggregate::Max => AggFunc::Max,
        }))
    }
}

impl AggregateState {
    /// Adds one row's value (`None`: undefined).
    pub fn step(&mut self, v: Option<&Value>) {
        self.0.step(v);
    }

    /// The group's value; `None` is undefined.
    pub fn finish(self) -> Option<Value> {
        self.0.finish()
    }

    /// The group's running state as text, for a partial aggregate ([`PARTIAL_AGGREGATES`]).
    pub fn finish_part(self) -> String {
        self.0.to_state()
    }
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
