//! Aggregates over a split scan: one statement run in parts, each over its own range of the
//! `devices` table's row keys (on its own connection, so a scan uses every core), and a merge
//! that folds the parts' groups into the query's answer with the evaluator's own code
//! (`eval::finish_groups`), so a split query keeps the language's one meaning.

use serde_json::Value;

use crate::aggregate::Accumulator;
use crate::ast::{AggFunc, ItemExpr, Select};
use crate::eval::{finish_groups, Groups};
use crate::sql::{Dialect, SqlParam};

/// An aggregate query over `devices`, compiled to run in parts over disjoint ranges of the
/// table's row keys. Every part returns rows of plain SQL values (one per group it saw):
/// the group keys, the groups' values, then one column per aggregate (a count, or a running
/// state as text); [`SplitQuery::merge`] turns the parts' rows into the answer, which equals
/// the answer of the unsplit query.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitQuery {
    /// The dialect `sql` is written in.
    pub dialect: Dialect,
    /// One part's statement; [`SplitQuery::params_for`] gives its parameters for a range.
    pub sql: String,
    params: Vec<SqlParam>,
    select: Select,
}

/// A value a part's statement returned; `None` is SQL NULL.
pub type PartCell = Option<SqlParam>;

impl SplitQuery {
    pub(crate) fn new(
        dialect: Dialect,
        sql: String,
        params: Vec<SqlParam>,
        select: &Select,
    ) -> Self {
        SplitQuery {
            dialect,
            sql,
            params,
            select: select.clone(),
        }
    }

    /// The part's parameters for the rows whose row key is in `from..=to` (numbered from 1, as
    /// the query's own; the range is the first two).
    pub fn params_for(&self, from: i64, to: i64) -> Vec<SqlParam> {
        let mut params = self.params.clone();
        params[0] = SqlParam::Integer(from);
        params[1] = SqlParam::Integer(to);
        params
    }

    /// How many columns a part's rows have.
    pub fn columns(&self) -> usize {
        2 * self.select.group_by.len() + aggregates(&self.select).count()
    }

    /// Folds the parts' rows into the query's answer: one object per group, in group-key
    /// order, cut at TOP. Parts may come in any order; a group's values are those of the first
    /// part that saw it. Fails only on a row that no part's statement returns (a bug).
    pub fn merge<I>(&self, parts: I) -> Result<Vec<Value>, String>
    where
        I: IntoIterator<Item = Vec<Vec<PartCell>>>,
    {
        let keys = self.select.group_by.len();
        let mut groups = Groups::new();
        for row in parts.into_iter().flatten() {
            if row.len() != self.columns() {
                return Err(format!(
                    "a part of a split scan returned {} columns, not {}",
                    row.len(),
                    self.columns()
                ));
            }
            let (key_cells, rest) = row.split_at(keys);
            let (value_cells, agg_cells) = rest.split_at(keys);
            let key: Vec<Option<String>> = key_cells.iter().map(cell_text).collect();
            let accs = aggregates(&self.select)
                .zip(agg_cells)
                .map(|(func, cell)| part_state(func, cell))
                .collect::<Result<Vec<_>, String>>()?;
            match groups.get_mut(&key) {
                Some((_, merged)) => {
                    for (into, acc) in merged.iter_mut().zip(accs) {
                        into.merge(acc);
                    }
                }
                None => {
                    let values = value_cells.iter().map(cell_json).collect();
                    groups.insert(key, (values, accs));
                }
            }
        }
        Ok(finish_groups(&self.select, groups))
    }
}

/// The aggregate items of a query, in item order.
pub(crate) fn aggregates(select: &Select) -> impl Iterator<Item = AggFunc> + '_ {
    select.items.iter().flatten().filter_map(|i| match i.expr {
        ItemExpr::Aggregate(f, _) => Some(f),
        ItemExpr::Expr(_) => None,
    })
}

/// One aggregate's state from a part's column: COUNT is the count, the others their state.
fn part_state(func: AggFunc, cell: &PartCell) -> Result<Accumulator, String> {
    match (func, cell) {
        (AggFunc::Count, Some(SqlParam::Integer(n))) => Ok(Accumulator::counted(n.unsigned_abs())),
        (_, Some(SqlParam::Text(state))) => Accumulator::from_state(state)
            .filter(|_| func != AggFunc::Count)
            .ok_or_else(|| {
                format!(
                    "a part of a split scan returned a malformed {} state",
                    func.name()
                )
            }),
        _ => Err(format!(
            "a part of a split scan returned no {} state",
            func.name()
        )),
    }
}

fn cell_text(cell: &PartCell) -> Option<String> {
    match cell {
        Some(SqlParam::Text(t)) => Some(t.clone()),
        Some(SqlParam::Integer(i)) => Some(i.to_string()),
        Some(SqlParam::Real(f)) => Some(f.to_string()),
        None => None,
    }
}

/// A group's value column as JSON: text is JSON, numbers are numbers, NULL is undefined.
fn cell_json(cell: &PartCell) -> Option<Value> {
    match cell {
        Some(SqlParam::Text(t)) => serde_json::from_str(t).ok(),
        Some(SqlParam::Integer(i)) => Some(Value::from(*i)),
        Some(SqlParam::Real(f)) => serde_json::Number::from_f64(*f).map(Value::Number),
        None => None,
    }
}
