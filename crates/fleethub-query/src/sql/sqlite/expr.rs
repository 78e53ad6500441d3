//! Expressions to SQLite SQL over the store's schema, with the evaluator's meaning.
//!
//! Every compiled condition yields 0 or 1, never NULL, so NOT and the other boolean operators
//! behave as in the evaluator (two-valued logic). A value compiles to one of:
//! - a known constant or `undefined` (folded at compile time);
//! - a *leaf*: a column or a JSON path into a column, with SQL for its `json_type` (NULL when
//!   undefined), its scalar (`->>`) and its JSON text (`->`); comparisons of a leaf with a
//!   constant are inlined with type guards, so `json_extract` turning `true` into 1 never leaks;
//! - JSON text (NULL for undefined) computed by a registered `fh_*` function that runs the
//!   evaluator's own code;
//! - a boolean (0/1).

use crate::sql::SqlParam;
use serde_json::Value;

use crate::ast::{CmpOp, Expr, Path, Source};
use crate::functions::Func;
use crate::value::{self, json_type};
use fleethub_core::semver;

/// Compilation state: the parameters collected so far.
pub(crate) struct Ctx {
    pub params: Vec<SqlParam>,
    pub source: Source,
}

impl Ctx {
    pub(crate) fn new(source: Source) -> Ctx {
        Ctx {
            params: Vec::new(),
            source,
        }
    }

    /// Adds a parameter and returns its placeholder.
    pub(crate) fn param(&mut self, v: SqlParam) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }

    fn json_param(&mut self, v: &Value) -> String {
        self.param(SqlParam::Text(v.to_string()))
    }
}

/// Which index a leaf can use for typed equality.
#[derive(Debug, Clone, PartialEq)]
enum Index {
    None,
    /// `devices.device_id`, the primary key.
    PrimaryKey,
    /// A tag leaf: its `device_tags.path` (json_tree's fullkey).
    Tag(String),
}

#[derive(Debug, Clone)]
struct Leaf {
    kind: String,
    scalar: String,
    json: String,
    /// The JSON type when the leaf is a non-null column of one type.
    known: Option<&'static str>,
    index: Index,
}

#[derive(Debug, Clone)]
enum Sv {
    Undef,
    Const(Value),
    Leaf(Leaf),
    Json(String),
    Bool(String),
}

/// A SQL string literal.
pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A JSON path SQLite's lookups accept for these keys: every key quoted and JSON-escaped.
fn json_path(prefix: &[&str], keys: &[String]) -> String {
    let mut p = String::from("$");
    for k in prefix
        .iter()
        .copied()
        .chain(keys.iter().map(String::as_str))
    {
        p.push('.');
        p.push_str(&Value::String(k.to_string()).to_string());
    }
    p
}

/// The fullkey `json_tree` gives these keys, when we render it exactly as SQLite does: keys of
/// ASCII letters and digits starting with a letter bare, others in double quotes. Keys holding
/// characters that JSON escapes are stored escaped, so those never use the index.
pub(crate) fn tag_fullkey(keys: &[String]) -> Option<String> {
    let mut p = String::from("$");
    for k in keys {
        if k.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return None;
        }
        let bare = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && k.chars().all(|c| c.is_ascii_alphanumeric());
        if bare {
            p.push('.');
            p.push_str(k);
        } else {
            p.push_str(&format!(".\"{k}\""));
        }
    }
    Some(p)
}

fn json_leaf(column: &str, path: String, index: Index) -> Sv {
    let p = lit(&path);
    Sv::Leaf(Leaf {
        kind: format!("json_type({column}, {p})"),
        scalar: format!("({column} ->> {p})"),
        json: format!("({column} -> {p})"),
        known: None,
        index,
    })
}

fn column_leaf(column: &str, known: &'static str, index: Index) -> Sv {
    Sv::Leaf(Leaf {
        kind: lit(known),
        scalar: column.to_string(),
        json: format!("json_quote({column})"),
        known: Some(known),
        index,
    })
}

fn nullable_text_leaf(column: &str) -> Sv {
    Sv::Leaf(Leaf {
        kind: format!("iif({column} IS NULL, NULL, 'text')"),
        scalar: column.to_string(),
        json: format!("iif({column} IS NULL, NULL, json_quote({column}))"),
        known: None,
        index: Index::None,
    })
}

/// A whole section as the twin shows it (values, `$metadata`, `$version`), as JSON text.
fn section(column: &str) -> String {
    format!("fh_section({})", crate::sql::schema::stored_section(column))
}

fn device_path(path: &Path) -> Sv {
    let segs = &path.segments;
    let rest = segs.get(1..).unwrap_or(&[]);
    let scalar_only = |sv: Sv| if rest.is_empty() { sv } else { Sv::Undef };
    match segs.first().map(String::as_str) {
        Some("deviceId") => scalar_only(column_leaf("device_id", "text", Index::PrimaryKey)),
        Some("status") => scalar_only(column_leaf("status", "text", Index::None)),
        Some("connectionState") => {
            scalar_only(column_leaf("fh_connected(device_id)", "text", Index::None))
        }
        Some("$version") => scalar_only(column_leaf("twin_version", "integer", Index::None)),
        Some("lastActivityTime") => json_leaf(
            crate::sql::schema::REGISTRY_ENTRY,
            json_path(&["lastActivityTime"], rest),
            Index::None,
        ),
        Some("tags") => {
            let index = match (rest.is_empty(), tag_fullkey(rest)) {
                (false, Some(k)) => Index::Tag(k),
                _ => Index::None,
            };
            json_leaf("tags", json_path(&[], rest), index)
        }
        Some("properties") => properties_path(rest),
        Some("configurations") => json_leaf(CONFIGURATIONS, json_path(&[], rest), Index::None),
        _ => Sv::Undef,
    }
}

/// The twin's `configurations` object (`{id: {status}}`), built from the store's
/// `device_configurations` rows; NULL (undefined) when no configuration targets the device, as
/// the twin then has no `configurations`.
const CONFIGURATIONS: &str = "(SELECT CASE WHEN count(*) = 0 THEN NULL ELSE \
    json_group_object(config_id, json_object('status', status)) END \
    FROM device_configurations WHERE device_configurations.device_id = devices.device_id)";

fn properties_path(rest: &[String]) -> Sv {
    let Some(section_name) = rest.first() else {
        return Sv::Json(format!(
            "json_object('desired', json({}), 'reported', json({}))",
            section("desired"),
            section("reported")
        ));
    };
    let column = section_name.as_str();
    let keys = &rest[1..];
    match keys.first().map(String::as_str) {
        None => Sv::Json(section(column)),
        Some("$version") if keys.len() == 1 => {
            column_leaf(&format!("{column}_version"), "integer", Index::None)
        }
        Some("$version") => Sv::Undef,
        Some("$metadata") => json_leaf(&section(column), json_path(&[], keys), Index::None),
        // The section's values are the JSONB column itself.
        Some(_) => json_leaf(column, json_path(&[], keys), Index::None),
    }
}

fn job_path(path: &Path) -> Sv {
    let segs = &path.segments;
    let rest = segs.get(1..).unwrap_or(&[]);
    let scalar_only = |sv: Sv| if rest.is_empty() { sv } else { Sv::Undef };
    let text = |c: &str| scalar_only(column_leaf(c, "text", Index::None));
    match segs.first().map(String::as_str) {
        Some("deviceId") => text("device_id"),
        Some("jobId") => text("job_id"),
        Some("jobType") => text("job_type"),
        Some("status") => text("status"),
        Some("createdDateTimeUtc") => text("created_time"),
        Some("lastUpdatedDateTimeUtc") => text("updated_time"),
        Some("startTimeUtc") => scalar_only(nullable_text_leaf("start_time")),
        Some("endTimeUtc") => scalar_only(nullable_text_leaf("end_time")),
        Some("outcome") => json_leaf("outcome", json_path(&[], rest), Index::None),
        Some("error") => json_leaf("error", json_path(&[], rest), Index::None),
        _ => Sv::Undef,
    }
}

fn json_of(ctx: &mut Ctx, sv: &Sv) -> String {
    match sv {
        Sv::Undef => "NULL".to_string(),
        Sv::Const(v) => ctx.json_param(v),
        Sv::Leaf(l) => l.json.clone(),
        Sv::Json(s) => s.clone(),
        Sv::Bool(b) => format!("(CASE WHEN {b} THEN 'true' ELSE 'false' END)"),
    }
}

fn kind_of(sv: &Sv) -> String {
    match sv {
        Sv::Undef => "NULL".to_string(),
        Sv::Const(v) => lit(json_type(v)),
        Sv::Leaf(l) => l.kind.clone(),
        Sv::Json(s) => format!("json_type({s})"),
        Sv::Bool(b) => format!("(CASE WHEN {b} THEN 'true' ELSE 'false' END)"),
    }
}

fn bool_lit(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// A condition: SQL that is 1 exactly when the evaluator finds `e` true, else 0.
pub(crate) fn condition(ctx: &mut Ctx, e: &Expr) -> String {
    // A result folded to a constant references none of the parameters its parts made, and
    // SQLite refuses unreferenced trailing parameters: drop them.
    let mark = ctx.params.len();
    let sql = condition_parts(ctx, e);
    if sql == "0" || sql == "1" {
        ctx.params.truncate(mark);
    }
    sql
}

fn condition_parts(ctx: &mut Ctx, e: &Expr) -> String {
    match e {
        Expr::Not(x) => format!("(NOT {})", condition(ctx, x)),
        Expr::And(xs) => chain(ctx, xs, " AND "),
        Expr::Or(xs) => chain(ctx, xs, " OR "),
        Expr::Cmp(op, x, y) => comparison(ctx, *op, x, y),
        Expr::In {
            expr,
            list,
            negated,
        } => in_list(ctx, expr, list, *negated),
        other => {
            let sv = value_of(ctx, other);
            truth(&sv)
        }
    }
}

/// An AND/OR chain. SQLite nests `a OR b OR c` one level per operator and refuses expressions
/// deeper than 1,000 levels, so the terms are grouped as a balanced tree: a chain of n terms
/// nests about log2(n) levels. The terms are 0 or 1, never NULL, so grouping keeps the meaning.
fn chain(ctx: &mut Ctx, xs: &[Expr], op: &str) -> String {
    let terms: Vec<String> = xs.iter().map(|x| condition(ctx, x)).collect();
    balanced(&terms, op)
}

fn balanced(terms: &[String], op: &str) -> String {
    match terms {
        // An empty AND is true and an empty OR false (the parser never makes either).
        [] => bool_lit(op == " AND "),
        [one] => one.clone(),
        _ => {
            let (left, right) = terms.split_at(terms.len() / 2);
            format!("({}{op}{})", balanced(left, op), balanced(right, op))
        }
    }
}

fn truth(sv: &Sv) -> String {
    match sv {
        Sv::Undef => "0".to_string(),
        Sv::Const(v) => bool_lit(value::truthy(Some(v))),
        Sv::Leaf(l) => format!("({} IS 'true')", l.kind),
        Sv::Json(s) => format!("({s} IS 'true')"),
        Sv::Bool(b) => b.clone(),
    }
}

/// The JSON text (NULL when undefined) of a value expression, for projections and group keys.
pub(crate) fn json_value(ctx: &mut Ctx, e: &Expr) -> String {
    let sv = value_of(ctx, e);
    json_of(ctx, &sv)
}

fn value_of(ctx: &mut Ctx, e: &Expr) -> Sv {
    let mark = ctx.params.len();
    let sv = value_parts(ctx, e);
    if let Sv::Const(_) | Sv::Undef = sv {
        ctx.params.truncate(mark);
    }
    sv
}

fn value_parts(ctx: &mut Ctx, e: &Expr) -> Sv {
    match e {
        Expr::Const(v) => Sv::Const(v.clone()),
        Expr::Undefined => Sv::Undef,
        Expr::Path(p) => match ctx.source {
            Source::Devices => device_path(p),
            Source::DeviceJobs => job_path(p),
        },
        Expr::Not(_) | Expr::And(..) | Expr::Or(..) | Expr::Cmp(..) | Expr::In { .. } => {
            Sv::Bool(condition(ctx, e))
        }
        Expr::Neg(x) => match value_of(ctx, x) {
            Sv::Const(v) => value::negate(Some(&v)).map_or(Sv::Undef, Sv::Const),
            Sv::Undef => Sv::Undef,
            other => {
                let j = json_of(ctx, &other);
                Sv::Json(format!("fh_op('neg', {j})"))
            }
        },
        Expr::Arith(op, x, y) => {
            let (a, b) = (value_of(ctx, x), value_of(ctx, y));
            match (&a, &b) {
                (Sv::Undef, _) | (_, Sv::Undef) => Sv::Undef,
                (Sv::Const(p), Sv::Const(q)) => {
                    value::arith(*op, Some(p), Some(q)).map_or(Sv::Undef, Sv::Const)
                }
                _ => {
                    let (ja, jb) = (json_of(ctx, &a), json_of(ctx, &b));
                    Sv::Json(format!("fh_op({}, {ja}, {jb})", lit(op.symbol())))
                }
            }
        }
        Expr::Call(func, args) => call(ctx, *func, args),
    }
}

fn call(ctx: &mut Ctx, func: Func, args: &[Expr]) -> Sv {
    let svs: Vec<Sv> = args.iter().map(|a| value_of(ctx, a)).collect();
    if let Some(types) = func.type_test() {
        let arg = svs.first().cloned().unwrap_or(Sv::Undef);
        if let Sv::Const(_) | Sv::Undef = arg {
            return fold(func, &svs);
        }
        let list: Vec<String> = types.iter().map(|t| lit(t)).collect();
        return Sv::Bool(format!(
            "IFNULL({} IN ({}), 0)",
            kind_of(&arg),
            list.join(", ")
        ));
    }
    if svs.iter().all(|s| matches!(s, Sv::Const(_) | Sv::Undef)) {
        return fold(func, &svs);
    }
    let mut sql = format!("fh_op({}", lit(func.name()));
    for sv in &svs {
        sql.push_str(", ");
        sql.push_str(&json_of(ctx, sv));
    }
    sql.push(')');
    Sv::Json(sql)
}

fn fold(func: Func, svs: &[Sv]) -> Sv {
    let args: Vec<Option<&Value>> = svs
        .iter()
        .map(|s| match s {
            Sv::Const(v) => Some(v),
            _ => None,
        })
        .collect();
    crate::functions::call(func, &args).map_or(Sv::Undef, Sv::Const)
}

/// SQL for the semantic-version sort key of one side of a SEMVER comparison, or `None` when it
/// is known not to be a version.
fn semver_side(ctx: &mut Ctx, e: &Expr) -> Option<String> {
    let inner = match e {
        Expr::Call(Func::Semver, args) => args.first()?,
        other => other,
    };
    match value_of(ctx, inner) {
        Sv::Const(Value::String(s)) => {
            let key = semver::semver_key(&s)?;
            Some(ctx.param(SqlParam::Text(key)))
        }
        Sv::Const(_) | Sv::Undef => None,
        sv => Some(format!("fh_semver({})", json_of(ctx, &sv))),
    }
}

fn sql_op(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Ne => "<>",
        other => other.symbol(),
    }
}

fn comparison(ctx: &mut Ctx, op: CmpOp, x: &Expr, y: &Expr) -> String {
    if x.is_semver() || y.is_semver() {
        let (Some(a), Some(b)) = (semver_side(ctx, x), semver_side(ctx, y)) else {
            return "0".to_string();
        };
        return format!("IFNULL({a} {} {b}, 0)", sql_op(op));
    }
    let (a, b) = (value_of(ctx, x), value_of(ctx, y));
    match (a, b) {
        (Sv::Undef, _) | (_, Sv::Undef) => "0".to_string(),
        (Sv::Const(p), Sv::Const(q)) => bool_lit(value::compare(op, Some(&p), Some(&q))),
        (Sv::Leaf(l), Sv::Const(c)) => leaf_cmp(ctx, op, &l, &c),
        (Sv::Const(c), Sv::Leaf(l)) => leaf_cmp(ctx, op.flipped(), &l, &c),
        (a, b) => {
            let (ja, jb) = (json_of(ctx, &a), json_of(ctx, &b));
            format!("fh_cmp({}, {ja}, {jb})", lit(op.symbol()))
        }
    }
}

/// The SQL parameter for a primitive constant's scalar.
fn scalar_param(ctx: &mut Ctx, c: &Value) -> Option<String> {
    let v = match c {
        Value::String(s) => SqlParam::Text(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlParam::Integer(i),
            None => SqlParam::Real(n.as_f64()?),
        },
        _ => return None,
    };
    Some(ctx.param(v))
}

/// The `json_type` names a constant's type category covers (numbers: integer and real).
fn category(c: &Value) -> &'static [&'static str] {
    match c {
        Value::String(_) => &["text"],
        Value::Number(_) => &["integer", "real"],
        Value::Bool(true) => &["true"],
        Value::Bool(false) => &["false"],
        Value::Null => &["null"],
        Value::Array(_) => &["array"],
        Value::Object(_) => &["object"],
    }
}

fn in_kinds(kind: &str, kinds: &[&str]) -> String {
    let list: Vec<String> = kinds.iter().map(|k| lit(k)).collect();
    format!("{kind} IN ({})", list.join(", "))
}

fn leaf_cmp(ctx: &mut Ctx, op: CmpOp, l: &Leaf, c: &Value) -> String {
    let cat = category(c);
    let primitive = !matches!(c, Value::Array(_) | Value::Object(_));
    let scalar = matches!(c, Value::String(_) | Value::Number(_));
    let ordered = !matches!(op, CmpOp::Eq | CmpOp::Ne);
    if ordered && !scalar {
        return "0".to_string();
    }
    if let Some(known) = l.known {
        // A non-null column of one type: the type test is decided now.
        if !cat.contains(&known) {
            return bool_lit(op == CmpOp::Ne);
        }
        let p = scalar_param(ctx, c).unwrap_or_else(|| "NULL".into());
        return format!("({} {} {p})", l.scalar, sql_op(op));
    }
    if op == CmpOp::Eq {
        if let (Index::Tag(path), true) = (&l.index, primitive) {
            return tag_lookup(ctx, path, std::slice::from_ref(c));
        }
    }
    let guard = in_kinds(&l.kind, cat);
    match (op, scalar, primitive) {
        (CmpOp::Eq, _, false) => "0".to_string(),
        (CmpOp::Ne, _, false) => format!("({} IS NOT NULL)", l.kind),
        (CmpOp::Eq, false, true) => format!("IFNULL({guard}, 0)"),
        (CmpOp::Ne, false, true) => {
            format!(
                "IFNULL({} <> {}, 0)",
                l.kind,
                lit(cat.first().unwrap_or(&""))
            )
        }
        (CmpOp::Ne, true, _) => {
            let p = scalar_param(ctx, c).unwrap_or_else(|| "NULL".into());
            format!(
                "(CASE WHEN {guard} THEN {} <> {p} ELSE {} IS NOT NULL END)",
                l.scalar, l.kind
            )
        }
        _ => {
            let p = scalar_param(ctx, c).unwrap_or_else(|| "NULL".into());
            format!(
                "(CASE WHEN {guard} THEN {} {} {p} ELSE 0 END)",
                l.scalar,
                sql_op(op)
            )
        }
    }
}

/// Typed membership through the tag index: `device_id IN (SELECT ... FROM device_tags ...)`.
fn tag_lookup(ctx: &mut Ctx, path: &str, values: &[Value]) -> String {
    let path_param = ctx.param(SqlParam::Text(path.to_string()));
    let mut scalars = Vec::new();
    let mut clauses = Vec::new();
    for v in values {
        match v {
            Value::String(_) | Value::Number(_) => {
                scalars.extend(scalar_param(ctx, v));
            }
            Value::Bool(true) => clauses.push("(value = 1 AND kind = 'true')".to_string()),
            Value::Bool(false) => clauses.push("(value = 0 AND kind = 'false')".to_string()),
            // The index keeps a null leaf's value as '' (a key column cannot be NULL).
            Value::Null => clauses.push("(value = '' AND kind = 'null')".to_string()),
            _ => {}
        }
    }
    if !scalars.is_empty() {
        // `value` has no type affinity, so text never equals a number here: typed already.
        let test = if scalars.len() == 1 {
            format!("value = {}", scalars[0])
        } else {
            format!("value IN ({})", scalars.join(", "))
        };
        clauses.insert(
            0,
            format!("({test} AND kind IN ('text', 'integer', 'real'))"),
        );
    }
    if clauses.is_empty() {
        return "0".to_string();
    }
    format!(
        "(device_id IN (SELECT device_id FROM device_tags WHERE path = {path_param} AND ({})))",
        clauses.join(" OR ")
    )
}

fn in_list(ctx: &mut Ctx, expr: &Expr, list: &[Value], negated: bool) -> String {
    if expr.is_semver() {
        let Some(key) = semver_side(ctx, expr) else {
            return "0".to_string();
        };
        let keys: Vec<String> = list
            .iter()
            .filter_map(|v| v.as_str().and_then(semver::semver_key))
            .map(|k| ctx.param(SqlParam::Text(k)))
            .collect();
        let not = if negated { "NOT " } else { "" };
        return format!("IFNULL({key} {not}IN ({}), 0)", keys.join(", "));
    }
    match value_of(ctx, expr) {
        Sv::Undef => "0".to_string(),
        Sv::Const(v) => bool_lit(value::in_list(Some(&v), list, negated)),
        Sv::Leaf(l) => leaf_in(ctx, &l, list, negated),
        other => {
            let j = json_of(ctx, &other);
            let l = ctx.json_param(&Value::Array(list.to_vec()));
            format!("fh_in({j}, {l}, {})", bool_lit(negated))
        }
    }
}

fn leaf_in(ctx: &mut Ctx, l: &Leaf, list: &[Value], negated: bool) -> String {
    if let (Index::Tag(path), false) = (&l.index, negated) {
        return tag_lookup(ctx, path, list);
    }
    let texts: Vec<&Value> = list.iter().filter(|v| v.is_string()).collect();
    let numbers: Vec<&Value> = list.iter().filter(|v| v.is_number()).collect();
    let mut others = Vec::new();
    for v in list {
        match v {
            Value::Bool(true) => others.push("true"),
            Value::Bool(false) => others.push("false"),
            Value::Null => others.push("null"),
            _ => {}
        }
    }
    // Parameters are made only for the branches used: SQLite refuses unreferenced trailing ones.
    let mut member = |values: &[&Value]| {
        let params: Vec<String> = values.iter().filter_map(|v| scalar_param(ctx, v)).collect();
        if params.is_empty() {
            "0".to_string()
        } else {
            format!("{} IN ({})", l.scalar, params.join(", "))
        }
    };
    let test = match l.known {
        Some("text") => member(&texts),
        Some("integer") => member(&numbers),
        Some(_) => "0".to_string(),
        None => {
            let mut arms = String::new();
            if !texts.is_empty() {
                arms.push_str(&format!(" WHEN 'text' THEN {}", member(&texts)));
            }
            if !numbers.is_empty() {
                let m = member(&numbers);
                arms.push_str(&format!(" WHEN 'integer' THEN {m} WHEN 'real' THEN {m}"));
            }
            for k in &others {
                arms.push_str(&format!(" WHEN '{k}' THEN 1"));
            }
            if arms.is_empty() {
                "0".to_string()
            } else {
                format!("(CASE {}{arms} ELSE 0 END)", l.kind)
            }
        }
    };
    match (negated, l.known) {
        (false, _) => format!("({test})"),
        (true, Some(_)) => format!("(NOT ({test}))"),
        (true, None) => format!(
            "(CASE WHEN {} IS NULL THEN 0 ELSE NOT ({test}) END)",
            l.kind
        ),
    }
}
