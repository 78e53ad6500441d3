//! The meaning of values, shared by both executors: typed comparison, arithmetic, truth and
//! group keys. SQLite reaches these through the registered `fh_*` functions, so wherever the SQL
//! compiler does not inline a comparison, the two executors run the very same code.
//!
//! A value is `Option<Value>`: `None` is `undefined` (a missing property).

use std::cmp::Ordering;

use serde_json::{Number, Value};

use crate::ast::{ArithOp, CmpOp};

/// A JSON number, kept as an integer when it is one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub(crate) fn of(v: &Value) -> Option<Num> {
        let n = v.as_number()?;
        match n.as_i64() {
            Some(i) => Some(Num::Int(i)),
            None => n.as_f64().map(Num::Float),
        }
    }

    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// The number as JSON; `None` for infinities and NaN, which JSON cannot hold.
    pub(crate) fn to_value(self) -> Option<Value> {
        match self {
            Num::Int(i) => Some(Value::from(i)),
            Num::Float(f) => Number::from_f64(f).map(Value::Number),
        }
    }

    /// An integral float within `i64` range becomes an integer (`ROUND(2.5)` is `3`, not `3.0`).
    pub(crate) fn normalized(self) -> Num {
        match self {
            Num::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Num::Int(f as i64),
            other => other,
        }
    }
}

/// Exact comparison of an integer and a float (as SQLite does it), without rounding the integer.
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    if f >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    match i.cmp(&(t as i64)) {
        Ordering::Equal => (t).partial_cmp(&f).unwrap_or(Ordering::Equal),
        other => other,
    }
}

pub(crate) fn cmp_num(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, x).reverse(),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Typed equality of two defined values: primitives of the same type only.
pub(crate) fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Number(_), Value::Number(_)) => match (Num::of(a), Num::of(b)) {
            (Some(x), Some(y)) => cmp_num(x, y) == Ordering::Equal,
            _ => false,
        },
        _ => false,
    }
}

/// Ordering of two values: number with number, string with string; anything else is unordered.
pub(crate) fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Number(_), Value::Number(_)) => Some(cmp_num(Num::of(a)?, Num::of(b)?)),
        _ => None,
    }
}

/// `a op b`. Undefined on either side is false; `!=` is true for any two defined values that
/// are not equal (so `1 != '1'` and `{} != {}` are true); ordering needs two numbers or two
/// strings.
pub(crate) fn compare(op: CmpOp, a: Option<&Value>, b: Option<&Value>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    match op {
        CmpOp::Eq => equal(a, b),
        CmpOp::Ne => !equal(a, b),
        CmpOp::Lt => order(a, b) == Some(Ordering::Less),
        CmpOp::Gt => order(a, b) == Some(Ordering::Greater),
        CmpOp::Le => matches!(order(a, b), Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Ge => matches!(order(a, b), Some(Ordering::Greater | Ordering::Equal)),
    }
}

/// Comparison of two semantic-version sort keys (from [`fleethub_core::semver`]).
pub(crate) fn compare_keys(op: CmpOp, a: Option<&str>, b: Option<&str>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    let o = a.cmp(b);
    match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }
}

/// `x IN list`: typed equality with some element. `NIN` is its negation, false for undefined.
pub(crate) fn in_list(x: Option<&Value>, list: &[Value], negated: bool) -> bool {
    let Some(x) = x else {
        return false;
    };
    list.iter().any(|item| equal(x, item)) != negated
}

/// Only `true` is true.
pub(crate) fn truthy(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true)))
}

/// Arithmetic on two numbers; anything else (or division by zero) is undefined. Integer results
/// stay integers while they fit, `/` gives an integer only when the division is exact.
pub(crate) fn arith(op: ArithOp, a: Option<&Value>, b: Option<&Value>) -> Option<Value> {
    let (x, y) = (Num::of(a?)?, Num::of(b?)?);
    let result = match (x, y) {
        (Num::Int(i), Num::Int(j)) => int_arith(op, i, j)?,
        _ => float_arith(op, x.as_f64(), y.as_f64())?,
    };
    result.to_value()
}

fn int_arith(op: ArithOp, i: i64, j: i64) -> Option<Num> {
    let exact = match op {
        ArithOp::Add => i.checked_add(j),
        ArithOp::Sub => i.checked_sub(j),
        ArithOp::Mul => i.checked_mul(j),
        ArithOp::Div if j == 0 => return None,
        ArithOp::Div => i
            .checked_rem(j)
            .filter(|r| *r == 0)
            .and_then(|_| i.checked_div(j)),
        ArithOp::Rem if j == 0 => return None,
        ArithOp::Rem => i.checked_rem(j),
    };
    match exact {
        Some(n) => Some(Num::Int(n)),
        None => float_arith(op, i as f64, j as f64),
    }
}

fn float_arith(op: ArithOp, x: f64, y: f64) -> Option<Num> {
    let r = match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div if y == 0.0 => return None,
        ArithOp::Div => x / y,
        ArithOp::Rem if y == 0.0 => return None,
        ArithOp::Rem => x % y,
    };
    r.is_finite().then_some(Num::Float(r))
}

/// Unary minus on a number; undefined otherwise.
pub(crate) fn negate(a: Option<&Value>) -> Option<Value> {
    match Num::of(a?)? {
        Num::Int(i) => match i.checked_neg() {
            Some(n) => Some(Value::from(n)),
            None => Num::Float(-(i as f64)).to_value(),
        },
        Num::Float(f) => Num::Float(-f).to_value(),
    }
}

/// The key that groups values for GROUP BY: equal (typed) values share a key. `None` for
/// undefined.
pub(crate) fn group_key(v: Option<&Value>) -> Option<String> {
    let v = v?;
    Some(match v {
        Value::Null => "z".to_string(),
        Value::Bool(b) => format!("b{b}"),
        Value::Number(_) => match Num::of(v).map(Num::normalized) {
            Some(Num::Int(i)) => format!("n{i}"),
            Some(Num::Float(f)) => format!("n{f:e}"),
            None => format!("n{v}"),
        },
        Value::String(s) => format!("s{s}"),
        other => format!("j{other}"),
    })
}

/// The JSON type name SQLite's `json_type` gives a value.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        Value::Number(n) if n.is_i64() => "integer",
        Value::Number(_) => "real",
        Value::String(_) => "text",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn comparisons_are_typed() {
        assert!(!compare(CmpOp::Eq, Some(&json!("1")), Some(&json!(1))));
        assert!(compare(CmpOp::Ne, Some(&json!("1")), Some(&json!(1))));
        assert!(compare(CmpOp::Eq, Some(&json!(1)), Some(&json!(1.0))));
        assert!(compare(CmpOp::Eq, Some(&json!(null)), Some(&json!(null))));
        assert!(!compare(CmpOp::Lt, Some(&json!("1")), Some(&json!(2))));
        assert!(!compare(CmpOp::Ne, None, Some(&json!(2))));
        assert!(!compare(CmpOp::Eq, Some(&json!([1])), Some(&json!([1]))));
        assert!(compare(
            CmpOp::Lt,
            Some(&json!(9007199254740993_i64)),
            Some(&json!(9.007199254740994e15))
        ));
    }

    #[test]
    fn arithmetic_keeps_integers_and_refuses_division_by_zero() {
        let a = |op, x: Value, y: Value| arith(op, Some(&x), Some(&y));
        assert_eq!(a(ArithOp::Div, json!(6), json!(3)), Some(json!(2)));
        assert_eq!(a(ArithOp::Div, json!(7), json!(2)), Some(json!(3.5)));
        assert_eq!(a(ArithOp::Div, json!(7), json!(0)), None);
        assert_eq!(
            a(ArithOp::Add, json!(i64::MAX), json!(1)),
            Some(json!(9.223372036854776e18))
        );
        assert_eq!(a(ArithOp::Add, json!("a"), json!(1)), None);
        assert_eq!(a(ArithOp::Rem, json!(7), json!(-2)), Some(json!(1)));
    }
}
