//! The built-in functions: names, arities, and what they compute (for both executors).
//!
//! Wrong argument types give `undefined`, never an error: a query must not fail because one twin
//! holds a number where others hold strings.

use serde_json::Value;

use crate::value::{json_type, Num};
use fleethub_core::semver;

/// A built-in scalar function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    IsDefined,
    IsNull,
    IsString,
    IsNumber,
    IsBool,
    IsObject,
    IsArray,
    IsPrimitive,
    StartsWith,
    EndsWith,
    Contains,
    Lower,
    Upper,
    Length,
    Concat,
    Substring,
    IndexOf,
    Abs,
    Ceiling,
    Floor,
    Round,
    Sign,
    Square,
    Sqrt,
    Power,
    Exp,
    AsNumber,
    Semver,
}

/// How many arguments a function takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    pub(crate) fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }

    pub(crate) fn describe(self) -> String {
        let plural = |k: usize| if k == 1 { "" } else { "s" };
        match self {
            Arity::Exactly(k) => format!("{k} argument{}", plural(k)),
            Arity::AtLeast(k) => format!("at least {k} argument{}", plural(k)),
        }
    }
}

const ALL: &[(Func, &str, Arity)] = &[
    (Func::IsDefined, "IS_DEFINED", Arity::Exactly(1)),
    (Func::IsNull, "IS_NULL", Arity::Exactly(1)),
    (Func::IsString, "IS_STRING", Arity::Exactly(1)),
    (Func::IsNumber, "IS_NUMBER", Arity::Exactly(1)),
    (Func::IsBool, "IS_BOOL", Arity::Exactly(1)),
    (Func::IsObject, "IS_OBJECT", Arity::Exactly(1)),
    (Func::IsArray, "IS_ARRAY", Arity::Exactly(1)),
    (Func::IsPrimitive, "IS_PRIMITIVE", Arity::Exactly(1)),
    (Func::StartsWith, "STARTSWITH", Arity::Exactly(2)),
    (Func::EndsWith, "ENDSWITH", Arity::Exactly(2)),
    (Func::Contains, "CONTAINS", Arity::Exactly(2)),
    (Func::Lower, "LOWER", Arity::Exactly(1)),
    (Func::Upper, "UPPER", Arity::Exactly(1)),
    (Func::Length, "LENGTH", Arity::Exactly(1)),
    (Func::Concat, "CONCAT", Arity::AtLeast(2)),
    (Func::Substring, "SUBSTRING", Arity::Exactly(3)),
    (Func::IndexOf, "INDEX_OF", Arity::Exactly(2)),
    (Func::Abs, "ABS", Arity::Exactly(1)),
    (Func::Ceiling, "CEILING", Arity::Exactly(1)),
    (Func::Floor, "FLOOR", Arity::Exactly(1)),
    (Func::Round, "ROUND", Arity::Exactly(1)),
    (Func::Sign, "SIGN", Arity::Exactly(1)),
    (Func::Square, "SQUARE", Arity::Exactly(1)),
    (Func::Sqrt, "SQRT", Arity::Exactly(1)),
    (Func::Power, "POWER", Arity::Exactly(2)),
    (Func::Exp, "EXP", Arity::Exactly(1)),
    (Func::AsNumber, "AS_NUMBER", Arity::Exactly(1)),
    (Func::Semver, "SEMVER", Arity::Exactly(1)),
];

impl Func {
    /// The function with this name (case-insensitive).
    pub(crate) fn from_name(name: &str) -> Option<Func> {
        ALL.iter()
            .find(|(_, n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(f, _, _)| f)
    }

    pub(crate) fn name(self) -> &'static str {
        ALL.iter()
            .find(|(f, _, _)| *f == self)
            .map(|&(_, n, _)| n)
            .unwrap_or("?")
    }

    pub(crate) fn arity(self) -> Arity {
        ALL.iter()
            .find(|(f, _, _)| *f == self)
            .map(|&(_, _, a)| a)
            .unwrap_or(Arity::Exactly(1))
    }

    /// Every function name, for "unknown function" messages.
    pub(crate) fn names() -> Vec<&'static str> {
        ALL.iter().map(|&(_, n, _)| n).collect()
    }

    /// For the `IS_*` functions: the JSON types (as `json_type` names) that make it true.
    pub(crate) fn type_test(self) -> Option<&'static [&'static str]> {
        Some(match self {
            Func::IsDefined => &[
                "null", "true", "false", "integer", "real", "text", "array", "object",
            ],
            Func::IsNull => &["null"],
            Func::IsString => &["text"],
            Func::IsNumber => &["integer", "real"],
            Func::IsBool => &["true", "false"],
            Func::IsObject => &["object"],
            Func::IsArray => &["array"],
            Func::IsPrimitive => &["null", "true", "false", "integer", "real", "text"],
            _ => return None,
        })
    }
}

fn string(v: Option<&Value>) -> Option<&str> {
    v?.as_str()
}

/// An integral number argument (SUBSTRING's start and length).
fn integer(v: Option<&Value>) -> Option<i64> {
    match Num::of(v?)? {
        Num::Int(i) => Some(i),
        Num::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
        Num::Float(_) => None,
    }
}

fn round_half_away(f: f64) -> f64 {
    f.round()
}

fn numeric(v: Option<&Value>, f: fn(f64) -> f64) -> Option<Value> {
    match Num::of(v?)? {
        Num::Int(i) => Some(Value::from(i)),
        Num::Float(x) => Num::Float(f(x)).normalized().to_value(),
    }
}

/// A float result as JSON, integral ones as integers; infinities and NaN are undefined.
fn float(x: f64) -> Option<Value> {
    if x.is_finite() {
        Num::Float(x).normalized().to_value()
    } else {
        None
    }
}

/// `base` to the power `exp`: exact for integers while it fits, else a float.
fn power(base: Num, exp: Num) -> Option<Value> {
    if let (Num::Int(b), Num::Int(e)) = (base, exp) {
        if let Some(v) = u32::try_from(e).ok().and_then(|e| b.checked_pow(e)) {
            return Some(Value::from(v));
        }
    }
    float(base.as_f64().powf(exp.as_f64()))
}

/// A number, or a string that holds one in JSON's number syntax (`'42'`, `'-1.5e3'`); anything
/// else is undefined. Tags written as strings compare as numbers through it.
fn as_number(v: &Value) -> Option<Value> {
    match v {
        Value::Number(_) => Some(v.clone()),
        Value::String(s) => match serde_json::from_str::<Value>(s.trim()) {
            Ok(n @ Value::Number(_)) => Some(n),
            _ => None,
        },
        _ => None,
    }
}

/// Applies `func` to evaluated arguments; `None` is undefined.
pub(crate) fn call(func: Func, args: &[Option<&Value>]) -> Option<Value> {
    let arg = |i: usize| args.get(i).copied().flatten();
    if let Some(types) = func.type_test() {
        let t = arg(0).map(json_type);
        return Some(Value::Bool(t.is_some_and(|t| types.contains(&t))));
    }
    match func {
        Func::StartsWith => Some(Value::Bool(string(arg(0))?.starts_with(string(arg(1))?))),
        Func::EndsWith => Some(Value::Bool(string(arg(0))?.ends_with(string(arg(1))?))),
        Func::Contains => Some(Value::Bool(string(arg(0))?.contains(string(arg(1))?))),
        Func::Lower => Some(Value::String(string(arg(0))?.to_lowercase())),
        Func::Upper => Some(Value::String(string(arg(0))?.to_uppercase())),
        Func::Length => Some(Value::from(string(arg(0))?.chars().count())),
        Func::Concat => {
            let mut out = String::new();
            for a in args {
                out.push_str(string(*a)?);
            }
            Some(Value::String(out))
        }
        Func::Substring => {
            let s = string(arg(0))?;
            let start = integer(arg(1))?.max(0);
            let len = integer(arg(2))?.max(0);
            let start = usize::try_from(start).unwrap_or(usize::MAX);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            Some(Value::String(s.chars().skip(start).take(len).collect()))
        }
        Func::IndexOf => {
            let (s, needle) = (string(arg(0))?, string(arg(1))?);
            let index = match s.find(needle) {
                Some(byte) => s.get(..byte).map_or(0, |head| head.chars().count() as i64),
                None => -1,
            };
            Some(Value::from(index))
        }
        Func::Abs => match Num::of(arg(0)?)? {
            Num::Int(i) => match i.checked_abs() {
                Some(a) => Some(Value::from(a)),
                None => Num::Float((i as f64).abs()).to_value(),
            },
            Num::Float(f) => Num::Float(f.abs()).to_value(),
        },
        Func::Ceiling => numeric(arg(0), f64::ceil),
        Func::Floor => numeric(arg(0), f64::floor),
        Func::Round => numeric(arg(0), round_half_away),
        Func::Sign => {
            let x = Num::of(arg(0)?)?.as_f64();
            Some(Value::from(if x > 0.0 {
                1
            } else if x < 0.0 {
                -1
            } else {
                0
            }))
        }
        Func::Square => {
            let n = Num::of(arg(0)?)?;
            power(n, Num::Int(2))
        }
        Func::Sqrt => {
            let x = Num::of(arg(0)?)?.as_f64();
            (x >= 0.0).then(|| x.sqrt()).and_then(float)
        }
        Func::Power => power(Num::of(arg(0)?)?, Num::of(arg(1)?)?),
        Func::Exp => float(Num::of(arg(0)?)?.as_f64().exp()),
        Func::AsNumber => as_number(arg(0)?),
        Func::Semver => semver::parse(string(arg(0))?).map(|v| Value::String(v.canonical())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(func: Func, args: &[Value]) -> Option<Value> {
        let refs: Vec<Option<&Value>> = args.iter().map(Some).collect();
        call(func, &refs)
    }

    #[test]
    fn numeric_helpers_compute_exactly_or_are_undefined() {
        assert_eq!(c(Func::Sign, &[json!(-3.5)]), Some(json!(-1)));
        assert_eq!(c(Func::Sign, &[json!(0)]), Some(json!(0)));
        assert_eq!(c(Func::Sign, &[json!("1")]), None);
        assert_eq!(c(Func::Square, &[json!(-4)]), Some(json!(16)));
        assert_eq!(c(Func::Square, &[json!(1.5)]), Some(json!(2.25)));
        assert_eq!(
            c(Func::Square, &[json!(i64::MAX)]),
            Some(json!(8.507059173023462e37))
        );
        assert_eq!(c(Func::Sqrt, &[json!(16)]), Some(json!(4)));
        assert_eq!(c(Func::Sqrt, &[json!(-1)]), None);
        assert_eq!(c(Func::Power, &[json!(2), json!(10)]), Some(json!(1024)));
        assert_eq!(c(Func::Power, &[json!(2), json!(-1)]), Some(json!(0.5)));
        assert_eq!(c(Func::Power, &[json!(10), json!(400)]), None);
        assert_eq!(c(Func::Exp, &[json!(0)]), Some(json!(1)));
        assert_eq!(c(Func::Exp, &[json!(1000)]), None);
        assert_eq!(c(Func::AsNumber, &[json!("42")]), Some(json!(42)));
        assert_eq!(
            c(Func::AsNumber, &[json!(" -1.5e3 ")]),
            Some(json!(-1500.0))
        );
        assert_eq!(c(Func::AsNumber, &[json!(7)]), Some(json!(7)));
        for not_a_number in [
            json!("4x"),
            json!("NaN"),
            json!("inf"),
            json!(""),
            json!(true),
        ] {
            assert_eq!(c(Func::AsNumber, &[not_a_number]), None);
        }
    }

    #[test]
    fn string_functions_count_characters_not_bytes() {
        assert_eq!(c(Func::Length, &[json!("héllo")]), Some(json!(5)));
        assert_eq!(
            c(Func::IndexOf, &[json!("héllo"), json!("llo")]),
            Some(json!(2))
        );
        assert_eq!(
            c(Func::IndexOf, &[json!("abc"), json!("x")]),
            Some(json!(-1))
        );
        assert_eq!(
            c(Func::Substring, &[json!("héllo"), json!(1), json!(3)]),
            Some(json!("éll"))
        );
        assert_eq!(
            c(Func::Substring, &[json!("abc"), json!(-5), json!(99)]),
            Some(json!("abc"))
        );
        assert_eq!(
            c(Func::Substring, &[json!("abc"), json!(0.5), json!(1)]),
            None
        );
    }

    #[test]
    fn wrong_argument_types_are_undefined() {
        assert_eq!(c(Func::Lower, &[json!(1)]), None);
        assert_eq!(c(Func::Concat, &[json!("a"), json!(1)]), None);
        assert_eq!(c(Func::Abs, &[json!("1")]), None);
        assert_eq!(call(Func::IsDefined, &[None]), Some(json!(false)));
    }

    #[test]
    fn rounding_gives_integers() {
        assert_eq!(c(Func::Round, &[json!(2.5)]), Some(json!(3)));
        assert_eq!(c(Func::Round, &[json!(-2.5)]), Some(json!(-3)));
        assert_eq!(c(Func::Floor, &[json!(-1.5)]), Some(json!(-2)));
        assert_eq!(c(Func::Ceiling, &[json!(1.2)]), Some(json!(2)));
        assert_eq!(
            c(Func::Abs, &[json!(i64::MIN)]),
            Some(json!(9.223372036854776e18))
        );
    }
}
