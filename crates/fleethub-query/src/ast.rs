//! The syntax tree, and its canonical rendering (used by snapshots and error messages).

use std::fmt;

use serde_json::Value;

use crate::functions::Func;

/// What a query reads: twins, or the per-device rows of jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// `FROM devices`: one document per device twin.
    Devices,
    /// `FROM devices.jobs`: one document per (job, device).
    DeviceJobs,
}

/// A property path, validated against its source; the root is spelled canonically.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Path {
    pub segments: Vec<String>,
}

/// `=`, `!=` (also `<>`), `<`, `>`, `<=`, `>=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

impl CmpOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Ge => ">=",
        }
    }

    /// The operator with its operands swapped: `a < b` is `b > a`.
    pub(crate) fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }
}

/// `+ - * / %`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl ArithOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Rem => "%",
        }
    }
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// A JSON constant (string, number, bool, null, or an array of constants).
    Const(Value),
    /// The constant `undefined`.
    Undefined,
    Path(Path),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    /// `a AND b AND ...`: a chain is one node, so its length never deepens the tree.
    And(Vec<Expr>),
    /// `a OR b OR ...`, flat like `And`.
    Or(Vec<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `expr IN [...]`, or `NIN` when `negated`.
    In {
        expr: Box<Expr>,
        list: Vec<Value>,
        negated: bool,
    },
    Call(Func, Vec<Expr>),
}

impl Expr {
    /// Whether this is a `SEMVER(...)` call, which makes a comparison semantic-version typed.
    pub(crate) fn is_semver(&self) -> bool {
        matches!(self, Expr::Call(Func::Semver, _))
    }

    /// Every property path the expression reads, in the order written (without recursion,
    /// like [`Expr::height`]).
    pub(crate) fn paths(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::Path(p) => out.push(p),
                Expr::Const(_) | Expr::Undefined => {}
                Expr::Not(x) | Expr::Neg(x) | Expr::In { expr: x, .. } => stack.push(x),
                Expr::Cmp(_, x, y) | Expr::Arith(_, x, y) => {
                    stack.push(y);
                    stack.push(x);
                }
                Expr::And(xs) | Expr::Or(xs) | Expr::Call(_, xs) => stack.extend(xs.iter().rev()),
            }
        }
        out
    }

    /// How many nodes deep the tree is (a leaf is 1), measured without recursion so that it is
    /// safe on any tree; the parser refuses trees deeper than [`crate::limits::MAX_DEPTH`].
    pub(crate) fn height(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(self, 1)];
        while let Some((e, h)) = stack.pop() {
            deepest = deepest.max(h);
            match e {
                Expr::Const(_) | Expr::Undefined | Expr::Path(_) => {}
                Expr::Not(x) | Expr::Neg(x) | Expr::In { expr: x, .. } => stack.push((x, h + 1)),
                Expr::Cmp(_, x, y) | Expr::Arith(_, x, y) => {
                    stack.push((x, h + 1));
                    stack.push((y, h + 1));
                }
                Expr::And(xs) | Expr::Or(xs) | Expr::Call(_, xs) => {
                    stack.extend(xs.iter().map(|x| (x, h + 1)));
                }
            }
        }
        deepest
    }
}

/// COUNT, AVG, SUM, MIN, MAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggFunc {
    Count,
    Avg,
    Sum,
    Min,
    Max,
}

impl AggFunc {
    pub(crate) fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "COUNT",
            AggFunc::Avg => "AVG",
            AggFunc::Sum => "SUM",
            AggFunc::Min => "MIN",
            AggFunc::Max => "MAX",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<AggFunc> {
        [
            AggFunc::Count,
            AggFunc::Avg,
            AggFunc::Sum,
            AggFunc::Min,
            AggFunc::Max,
        ]
        .into_iter()
        .find(|f| f.name().eq_ignore_ascii_case(name))
    }
}

/// One select item's expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ItemExpr {
    Expr(Expr),
    /// An aggregate; COUNT has no argument.
    Aggregate(AggFunc, Option<Expr>),
}

/// One select item and its output name (the alias, else IoT Hub's default).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SelectItem {
    pub expr: ItemExpr,
    pub alias: Option<String>,
    pub name: String,
    /// Where the item starts, for errors found after the whole statement is read.
    pub pos: crate::error::Pos,
}

/// A whole `SELECT` statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Select {
    pub top: Option<u64>,
    /// `None` for `SELECT *`.
    pub items: Option<Vec<SelectItem>>,
    pub source: Source,
    pub filter: Option<Expr>,
    pub group_by: Vec<Expr>,
}

impl Select {
    /// Whether the query returns aggregated groups rather than documents.
    pub(crate) fn is_aggregate(&self) -> bool {
        !self.group_by.is_empty()
            || self
                .items
                .iter()
                .flatten()
                .any(|i| matches!(i.expr, ItemExpr::Aggregate(..)))
    }
}

/// Whether `s` reads back as one name: a word that is not a keyword.
fn is_plain_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        && !crate::parser::is_reserved(s)
}

fn write_segment(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if is_plain_name(s) {
        write!(f, "{s}")
    } else {
        write!(f, "[[{s}]]")
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.segments.iter().enumerate() {
            if i == 0 {
                write!(f, "{s}")?;
            } else {
                f.write_str(".")?;
                write_segment(f, s)?;
            }
        }
        Ok(())
    }
}

/// Renders a constant in query syntax (strings single-quoted).
pub(crate) fn write_const(f: &mut fmt::Formatter<'_>, v: &Value) -> fmt::Result {
    match v {
        Value::String(s) => {
            f.write_str("'")?;
            for c in s.chars() {
                match c {
                    '\'' => f.write_str("\\'")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\t' => f.write_str("\\t")?,
                    c if c.is_control() => write!(f, "\\u{:04X}", c as u32)?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("'")
        }
        Value::Array(items) => {
            f.write_str("[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_const(f, item)?;
            }
            f.write_str("]")
        }
        other => write!(f, "{other}"),
    }
}

/// `(a OP b OP c)`.
fn write_chain(f: &mut fmt::Formatter<'_>, xs: &[Expr], op: &str) -> fmt::Result {
    f.write_str("(")?;
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            f.write_str(op)?;
        }
        write!(f, "{x}")?;
    }
    f.write_str(")")
}

impl fmt::Display for Expr {
    /// Fully parenthesised, so the rendering shows how the parser grouped operators.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Const(v) => write_const(f, v),
            Expr::Undefined => f.write_str("undefined"),
            Expr::Path(p) => write!(f, "{p}"),
            Expr::Not(e) => write!(f, "(NOT {e})"),
            Expr::Neg(e) => write!(f, "(-{e})"),
            Expr::And(xs) => write_chain(f, xs, " AND "),
            Expr::Or(xs) => write_chain(f, xs, " OR "),
            Expr::Cmp(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            Expr::Arith(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            Expr::In {
                expr,
                list,
                negated,
            } => {
                write!(f, "({expr} {} ", if *negated { "NIN" } else { "IN" })?;
                write_const(f, &Value::Array(list.clone()))?;
                f.write_str(")")
            }
            Expr::Call(func, args) => {
                write!(f, "{}(", func.name())?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl fmt::Display for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        if let Some(n) = self.top {
            write!(f, "TOP {n} ")?;
        }
        match &self.items {
            None => f.write_str("*")?,
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match &item.expr {
                        ItemExpr::Expr(e) => write!(f, "{e}")?,
                        ItemExpr::Aggregate(a, None) => write!(f, "{}()", a.name())?,
                        ItemExpr::Aggregate(a, Some(e)) => write!(f, "{}({e})", a.name())?,
                    }
                    // An alias given as a string (`AS 'two words'`) is written back as one.
                    f.write_str(" AS ")?;
                    if is_plain_name(&item.name) {
                        f.write_str(&item.name)?;
                    } else {
                        write_const(f, &Value::String(item.name.clone()))?;
                    }
                }
            }
        }
        match self.source {
            Source::Devices => f.write_str(" FROM devices")?,
            Source::DeviceJobs => f.write_str(" FROM devices.jobs")?,
        }
        if let Some(w) = &self.filter {
            write!(f, " WHERE {w}")?;
        }
        for (i, g) in self.group_by.iter().enumerate() {
            f.write_str(if i == 0 { " GROUP BY " } else { ", " })?;
            write!(f, "{g}")?;
        }
        Ok(())
    }
}
