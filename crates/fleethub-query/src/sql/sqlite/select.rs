//! Whole statements in SQLite: projections, grouping, keyset paging.

use super::expr::{self, Ctx};
use crate::ast::{AggFunc, Expr, ItemExpr, Select, Source};
use crate::sql::paging::{fingerprint_of, PagePlan};
use crate::sql::schema::{key_columns, table, DEVICE_COLUMNS, DEVICE_ROW_KEY, JOB_COLUMNS};
use crate::sql::split::SplitQuery;
use crate::sql::{Dialect, SqlParam};
use crate::{CompiledQuery, Output};

/// One page of a row query, planned by `paging`.
pub(crate) fn compile(select: &Select, plan: PagePlan) -> CompiledQuery {
    let keys = key_columns(select.source);
    let page_limit = plan.page_limit;
    let mut ctx = Ctx::new(select.source);
    let (output, mut outputs) = match &select.items {
        None => {
            let (output, cols) = match select.source {
                Source::Devices => (Output::DeviceRows, DEVICE_COLUMNS),
                Source::DeviceJobs => (Output::DeviceJobRows, JOB_COLUMNS),
            };
            (output, cols.iter().map(|c| c.to_string()).collect())
        }
        Some(items) => {
            let mut outs = Vec::new();
            for item in items {
                if let ItemExpr::Expr(e) = &item.expr {
                    outs.push(expr::json_value(&mut ctx, e));
                }
            }
            let names = items.iter().map(|i| i.name.clone()).collect();
            (Output::Documents(names), outs)
        }
    };
    outputs.extend(keys.iter().map(|k| k.to_string()));
    let mut conds = Vec::new();
    if let Some(f) = &select.filter {
        conds.push(expr::condition(&mut ctx, f));
    }
    if let Some(after) = &plan.after {
        let params: Vec<String> = after
            .iter()
            .map(|k| ctx.param(SqlParam::Text(k.clone())))
            .collect();
        conds.push(match keys {
            [one] => format!("{one} > {}", params.join(", ")),
            many => format!("({}) > ({})", many.join(", "), params.join(", ")),
        });
    }
    let limit = if page_limit == 0 {
        "0".to_string()
    } else {
        ctx.param(SqlParam::Integer(
            i64::try_from(page_limit.saturating_add(1)).unwrap_or(i64::MAX),
        ))
    };
    let mut sql = format!(
        "SELECT {} FROM {}",
        outputs.join(", "),
        table(select.source)
    );
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", keys.join(", ")));
    CompiledQuery {
        dialect: Dialect::Sqlite,
        sql,
        params: ctx.params,
        split: None,
        output,
        key_columns: keys.len(),
        page_limit,
        aggregate: false,
        returned_before: plan.returned,
        top: select.top,
        fingerprint: plan.fingerprint,
    }
}

/// An aggregate query: every group in one page.
pub(crate) fn compile_aggregate(select: &Select) -> CompiledQuery {
    let mut ctx = Ctx::new(select.source);
    let items = select.items.as_deref().unwrap_or(&[]);
    let mut outputs = Vec::new();
    for item in items {
        outputs.push(match &item.expr {
            ItemExpr::Expr(e) => expr::json_value(&mut ctx, e),
            ItemExpr::Aggregate(f, arg) => aggregate(&mut ctx, *f, arg.as_ref(), ""),
        });
    }
    let mut sql = format!(
        "SELECT {} FROM {}",
        outputs.join(", "),
        table(select.source)
    );
    if let Some(f) = &select.filter {
        let cond = expr::condition(&mut ctx, f);
        sql.push_str(&format!(" WHERE {cond}"));
    }
    if !select.group_by.is_empty() {
        let keys: Vec<String> = select
            .group_by
            .iter()
            .map(|g| format!("fh_key({})", expr::json_value(&mut ctx, g)))
            .collect();
        sql.push_str(&format!(
            " GROUP BY {} ORDER BY {}",
            keys.join(", "),
            keys.join(", ")
        ));
    }
    if let Some(top) = select.top {
        let n = ctx.param(SqlParam::Integer(i64::try_from(top).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" LIMIT {n}"));
    }
    CompiledQuery {
        dialect: Dialect::Sqlite,
        sql,
        params: ctx.params,
        split: compile_aggregate_part(select),
        output: Output::Documents(items.iter().map(|i| i.name.clone()).collect()),
        key_columns: 0,
        page_limit: usize::MAX,
        aggregate: true,
        returned_before: 0,
        top: select.top,
        fingerprint: fingerprint_of(select),
    }
}

/// An aggregate item: `COUNT(*)`, or the registered `fh_{name}{suffix}` over its argument
/// (`suffix` is `_part` for a part of a split scan, which answers a state to merge).
fn aggregate(ctx: &mut Ctx, func: AggFunc, arg: Option<&Expr>, suffix: &str) -> String {
    if func == AggFunc::Count {
        return "COUNT(*)".to_string();
    }
    let j = match arg {
        Some(a) => expr::json_value(ctx, a),
        None => "NULL".to_string(),
    };
    format!("fh_{}{suffix}({j})", func.name().to_ascii_lowercase())
}

/// One part of an aggregate query over `devices` split by row key (`row BETWEEN ?1 AND ?2`): per group
/// it saw, the group keys, the group's values and each aggregate's count or running state. No
/// ORDER BY or TOP: those apply to the merged groups.
fn compile_aggregate_part(select: &Select) -> Option<SplitQuery> {
    if select.source != Source::Devices {
        return None;
    }
    let mut ctx = Ctx::new(select.source);
    let from = ctx.param(SqlParam::Integer(i64::MIN));
    let to = ctx.param(SqlParam::Integer(i64::MAX));
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for g in &select.group_by {
        let j = expr::json_value(&mut ctx, g);
        keys.push(format!("fh_key({j})"));
        values.push(j);
    }
    let mut outputs: Vec<String> = keys.iter().chain(&values).cloned().collect();
    for item in select.items.as_deref().unwrap_or(&[]) {
        outputs.push(match &item.expr {
            ItemExpr::Expr(_) => continue,
            ItemExpr::Aggregate(f, arg) => aggregate(&mut ctx, *f, arg.as_ref(), "_part"),
        });
    }
    let mut sql = format!(
        "SELECT {} FROM {} WHERE {DEVICE_ROW_KEY} BETWEEN {from} AND {to}",
        outputs.join(", "),
        table(select.source)
    );
    if let Some(f) = &select.filter {
        let cond = expr::condition(&mut ctx, f);
        sql.push_str(&format!(" AND ({cond})"));
    }
    if !keys.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", keys.join(", ")));
    }
    Some(SplitQuery::new(Dialect::Sqlite, sql, ctx.params, select))
}
