//! The in-process evaluator: an expression over one document.
//!
//! A twin is read in IoT Hub's service shape (`GET /twins/{id}`); a `devices.jobs` row as the
//! document `{deviceId, jobId, jobType, status, startTimeUtc, ..., outcome, error}` with missing
//! fields left out.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::aggregate::Accumulator;
use crate::ast::{Expr, ItemExpr, Path, Select, Source};
use crate::functions::{self, Func};
use crate::value::{self, group_key};
use fleethub_core::semver;

/// The value at `path` in `doc`.
pub(crate) fn lookup<'d>(source: Source, path: &Path, doc: &'d Value) -> Option<&'d Value> {
    let mut segments = path.segments.iter();
    let root = segments.next()?;
    let mut cur = match (source, root.as_str()) {
        (Source::Devices, "$version") => doc.get("version")?,
        _ => doc.get(root)?,
    };
    for s in segments {
        cur = cur.as_object()?.get(s)?;
    }
    Some(cur)
}

/// A value that may borrow from the document.
type Val<'d> = Option<std::borrow::Cow<'d, Value>>;

fn owned<'d>(v: Option<Value>) -> Val<'d> {
    v.map(std::borrow::Cow::Owned)
}

/// Evaluates `e` over `doc`; `None` is undefined.
pub(crate) fn eval<'d>(source: Source, e: &Expr, doc: &'d Value) -> Val<'d> {
    let b = |x: bool| owned(Some(Value::Bool(x)));
    match e {
        Expr::Const(v) => owned(Some(v.clone())),
        Expr::Undefined => None,
        Expr::Path(p) => lookup(source, p, doc).map(std::borrow::Cow::Borrowed),
        Expr::Not(x) => b(!truth(source, x, doc)),
        Expr::And(xs) => b(xs.iter().all(|x| truth(source, x, doc))),
        Expr::Or(xs) => b(xs.iter().any(|x| truth(source, x, doc))),
        Expr::Neg(x) => owned(value::negate(eval(source, x, doc).as_deref())),
        Expr::Arith(op, x, y) => {
            let (x, y) = (eval(source, x, doc), eval(source, y, doc));
            owned(value::arith(*op, x.as_deref(), y.as_deref()))
        }
        Expr::Cmp(op, x, y) if x.is_semver() || y.is_semver() => {
            let (kx, ky) = (semver_key(source, x, doc), semver_key(source, y, doc));
            b(value::compare_keys(*op, kx.as_deref(), ky.as_deref()))
        }
        Expr::Cmp(op, x, y) => {
            let (x, y) = (eval(source, x, doc), eval(source, y, doc));
            b(value::compare(*op, x.as_deref(), y.as_deref()))
        }
        Expr::In {
            expr,
            list,
            negated,
        } if expr.is_semver() => {
            let Some(k) = semver_key(source, expr, doc) else {
                return b(false);
            };
            let hit = list
                .iter()
                .any(|v| v.as_str().and_then(semver::semver_key).as_deref() == Some(&k));
            b(hit != *negated)
        }
        Expr::In {
            expr,
            list,
            negated,
        } => b(value::in_list(
            eval(source, expr, doc).as_deref(),
            list,
            *negated,
        )),
        Expr::Call(func, args) => {
            let vals: Vec<Val<'d>> = args.iter().map(|a| eval(source, a, doc)).collect();
            let refs: Vec<Option<&Value>> = vals.iter().map(|v| v.as_deref()).collect();
            owned(functions::call(*func, &refs))
        }
    }
}

/// The semantic-version sort key of `e`: a string that parses as a version, else `None`.
fn semver_key(source: Source, e: &Expr, doc: &Value) -> Option<String> {
    let v = match e {
        Expr::Call(Func::Semver, args) => eval(source, args.first()?, doc),
        other => eval(source, other, doc),
    };
    semver::semver_key(v.as_deref()?.as_str()?)
}

/// Whether `e` is `true` over `doc` (anything else counts as false).
pub(crate) fn truth(source: Source, e: &Expr, doc: &Value) -> bool {
    value::truthy(eval(source, e, doc).as_deref())
}

/// WHERE and projection for one document: `None` if it does not match; the document itself for
/// `SELECT *`; otherwise an object of the projections with undefined ones left out.
pub(crate) fn evaluate(select: &Select, doc: &Value) -> Option<Value> {
    if let Some(filter) = &select.filter {
        if !truth(select.source, filter, doc) {
            return None;
        }
    }
    let Some(items) = &select.items else {
        return Some(doc.clone());
    };
    let mut out = Map::new();
    for item in items {
        if let ItemExpr::Expr(e) = &item.expr {
            if let Some(v) = eval(select.source, e, doc) {
                out.insert(item.name.clone(), v.into_owned());
            }
        }
    }
    Some(Value::Object(out))
}

/// The groups of an aggregate query: the group key (one entry per GROUP BY expression) ->
/// the group's representative values and one accumulator per aggregate item, in key order.
pub(crate) type Groups = BTreeMap<Vec<Option<String>>, (Vec<Option<Value>>, Vec<Accumulator>)>;

/// Fresh accumulators for a group: one per aggregate item, in item order.
pub(crate) fn new_accumulators(select: &Select) -> Vec<Accumulator> {
    select
        .items
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter_map(|i| match &i.expr {
            ItemExpr::Aggregate(f, _) => Some(Accumulator::new(*f)),
            ItemExpr::Expr(_) => None,
        })
        .collect()
}

/// Runs an aggregate query over documents: one object per group, ordered by group key.
pub(crate) fn aggregate<'d>(
    select: &Select,
    docs: impl IntoIterator<Item = &'d Value>,
) -> Vec<Value> {
    let items = select.items.as_deref().unwrap_or(&[]);
    let mut groups = Groups::new();
    for doc in docs {
        if let Some(filter) = &select.filter {
            if !truth(select.source, filter, doc) {
                continue;
            }
        }
        let values: Vec<Option<Value>> = select
            .group_by
            .iter()
            .map(|g| eval(select.source, g, doc).map(|v| v.into_owned()))
            .collect();
        let key: Vec<Option<String>> = values.iter().map(|v| group_key(v.as_ref())).collect();
        let entry = groups
            .entry(key)
            .or_insert_with(|| (values, new_accumulators(select)));
        let mut accs = entry.1.iter_mut();
        for item in items {
            if let ItemExpr::Aggregate(_, arg) = &item.expr {
                if let Some(acc) = accs.next() {
                    let v = arg.as_ref().map(|a| eval(select.source, a, doc));
                    acc.step(v.as_ref().and_then(|v| v.as_deref()));
                }
            }
        }
    }
    finish_groups(select, groups)
}

/// The answer of an aggregate query from its groups: one object per group in key order (one
/// over no rows when nothing is grouped), undefined values left out, cut at TOP.
pub(crate) fn finish_groups(select: &Select, mut groups: Groups) -> Vec<Value> {
    let items = select.items.as_deref().unwrap_or(&[]);
    if groups.is_empty() && select.group_by.is_empty() {
        groups.insert(Vec::new(), (Vec::new(), new_accumulators(select)));
    }
    let mut rows: Vec<Value> = groups
        .into_values()
        .map(|(values, accs)| {
            let mut out = Map::new();
            let mut accs = accs.into_iter();
            for item in items {
                let v = match &item.expr {
                    ItemExpr::Aggregate(..) => accs.next().and_then(Accumulator::finish),
                    ItemExpr::Expr(e) => select
                        .group_by
                        .iter()
                        .position(|g| g == e)
                        .and_then(|i| values.get(i).cloned().flatten()),
                };
                if let Some(v) = v {
                    out.insert(item.name.clone(), v);
                }
            }
            Value::Object(out)
        })
        .collect();
    if let Some(top) = select.top {
        rows.truncate(usize::try_from(top).unwrap_or(usize::MAX));
    }
    rows
}
