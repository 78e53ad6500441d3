//! Aggregates (COUNT, AVG, SUM, MIN, MAX), shared by the evaluator and SQLite (registered as
//! `fh_avg`, `fh_sum`, `fh_min`, `fh_max`). AVG, SUM, MIN and MAX look at numbers only and
//! ignore every other value; over no numbers AVG, MIN and MAX are undefined and SUM is 0.

use std::cmp::Ordering;

use serde_json::Value;

use crate::ast::AggFunc;
use crate::value::{cmp_num, Num};

/// The running state of one aggregate over one group.
#[derive(Debug, Clone)]
pub(crate) struct Accumulator {
    func: AggFunc,
    rows: u64,
    numbers: u64,
    sum: Option<Num>,
    float_sum: f64,
    best: Option<(Num, Value)>,
}

impl Accumulator {
    pub(crate) fn new(func: AggFunc) -> Accumulator {
        Accumulator {
            func,
            rows: 0,
            numbers: 0,
            sum: None,
            float_sum: 0.0,
            best: None,
        }
    }

    /// Adds one row's value (`None` for undefined; COUNT ignores it).
    pub(crate) fn step(&mut self, v: Option<&Value>) {
        self.rows += 1;
        let Some(v) = v else { return };
        let Some(n) = Num::of(v) else { return };
        self.numbers += 1;
        self.float_sum += n.as_f64();
        self.add(n);
        if matches!(self.func, AggFunc::Min | AggFunc::Max) {
            self.offer(n, v.clone());
        }
    }

    /// A COUNT over `rows` rows, as one part of a split scan reports it.
    pub(crate) fn counted(rows: u64) -> Accumulator {
        Accumulator {
            rows,
            ..Accumulator::new(AggFunc::Count)
        }
    }

    /// Folds in the state of the same aggregate over other rows (another part of a split
    /// scan): the result is the state over both sets of rows. Exact for COUNT, MIN, MAX and
    /// integer sums; a floating-point sum adds the parts' sums, so its last bits may differ from
    /// adding row by row.
    pub(crate) fn merge(&mut self, other: Accumulator) {
        self.rows += other.rows;
        self.numbers += other.numbers;
        self.float_sum += other.float_sum;
        if let Some(n) = other.sum {
            self.add(n);
        }
        if let Some((n, v)) = other.best {
            self.offer(n, v);
        }
    }

    fn add(&mut self, n: Num) {
        self.sum = Some(match (self.sum, n) {
            (None, n) => n,
            (Some(Num::Int(a)), Num::Int(b)) => match a.checked_add(b) {
                Some(s) => Num::Int(s),
                None => Num::Float(a as f64 + b as f64),
            },
            (Some(a), b) => Num::Float(a.as_f64() + b.as_f64()),
        });
    }

    fn offer(&mut self, n: Num, v: Value) {
        let wanted = match self.func {
            AggFunc::Min => Ordering::Less,
            AggFunc::Max => Ordering::Greater,
            _ => return,
        };
        let better = match &self.best {
            None => true,
            Some((b, _)) => cmp_num(n, *b) == wanted,
        };
        if better {
            self.best = Some((n, v));
        }
    }

    /// The running state as JSON text, for a part of a split scan to hand to the merge
    /// ([`Accumulator::from_state`] reads it back exactly: floats travel as their bits).
    pub(crate) fn to_state(&self) -> String {
        let sum = match self.sum {
            None => Value::Null,
            Some(Num::Int(i)) => serde_json::json!(["i", i]),
            Some(Num::Float(f)) => serde_json::json!(["f", f.to_bits()]),
        };
        let best = self.best.as_ref().map_or(Value::Null, |(_, v)| v.clone());
        serde_json::json!([
            self.func.name(),
            self.rows,
            self.numbers,
            sum,
            self.float_sum.to_bits(),
            best
        ])
        .to_string()
    }

    /// Reads back what [`Accumulator::to_state`] wrote; `None` when `text` is not such a state.
    pub(crate) fn from_state(text: &str) -> Option<Accumulator> {
        let v: Value = serde_json::from_str(text).ok()?;
        let [func, rows, numbers, sum, float_sum, best] = v.as_array()?.as_slice() else {
            return None;
        };
        let func = AggFunc::from_name(func.as_str()?)?;
        let sum = match sum {
            Value::Null => None,
            Value::Array(pair) => match (pair.first()?.as_str()?, pair.get(1)?) {
                ("i", n) => Some(Num::Int(n.as_i64()?)),
                ("f", bits) => Some(Num::Float(f64::from_bits(bits.as_u64()?))),
                _ => return None,
            },
            _ => return None,
        };
        let best = match best {
            Value::Null => None,
            v => Some((Num::of(v)?, v.clone())),
        };
        Some(Accumulator {
            func,
            rows: rows.as_u64()?,
            numbers: numbers.as_u64()?,
            sum,
            float_sum: f64::from_bits(float_sum.as_u64()?),
            best,
        })
    }

    /// The aggregate's value; `None` is undefined.
    pub(crate) fn finish(self) -> Option<Value> {
        match self.func {
            AggFunc::Count => Some(Value::from(self.rows)),
            AggFunc::Sum => self.sum.unwrap_or(Num::Int(0)).to_value(),
            AggFunc::Avg if self.numbers == 0 => None,
            AggFunc::Avg => match self.sum {
                Some(Num::Int(s)) if s % (self.numbers as i64) == 0 => {
                    Some(Value::from(s / self.numbers as i64))
                }
                _ => Num::Float(self.float_sum / self.numbers as f64).to_value(),
            },
            AggFunc::Min | AggFunc::Max => self.best.map(|(_, v)| v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(func: AggFunc, values: &[Value]) -> Option<Value> {
        let mut acc = Accumulator::new(func);
        for v in values {
            acc.step(Some(v));
        }
        acc.finish()
    }

    #[test]
    fn aggregates_ignore_non_numbers() {
        let vals = [json!(1), json!("9"), json!(4), json!(true), json!(null)];
        assert_eq!(run(AggFunc::Sum, &vals), Some(json!(5)));
        assert_eq!(run(AggFunc::Avg, &vals), Some(json!(2.5)));
        assert_eq!(run(AggFunc::Min, &vals), Some(json!(1)));
        assert_eq!(run(AggFunc::Max, &vals), Some(json!(4)));
        assert_eq!(run(AggFunc::Count, &vals), Some(json!(5)));
        assert_eq!(run(AggFunc::Max, &[json!("a")]), None);
        assert_eq!(run(AggFunc::Sum, &[]), Some(json!(0)));
    }

    /// A split scan merges the parts' states: the result is the aggregate over all the rows,
    /// and a state survives its trip through SQL as text.
    #[test]
    fn merged_parts_give_the_aggregate_over_all_rows() {
        let vals = [
            json!(3),
            json!(-2.5),
            json!("x"),
            json!(7),
            json!(null),
            json!(0.25),
        ];
        for func in [
            AggFunc::Count,
            AggFunc::Sum,
            AggFunc::Avg,
            AggFunc::Min,
            AggFunc::Max,
        ] {
            for cut in 0..=vals.len() {
                let part = |vs: &[Value]| {
                    let mut acc = Accumulator::new(func);
                    vs.iter().for_each(|v| acc.step(Some(v)));
                    Accumulator::from_state(&acc.to_state()).expect("state reads back")
                };
                let mut merged = part(&vals[..cut]);
                merged.merge(part(&vals[cut..]));
                assert_eq!(merged.finish(), run(func, &vals), "{func:?} cut at {cut}");
            }
        }
        let mut count = Accumulator::counted(4);
        count.merge(Accumulator::counted(3));
        assert_eq!(count.finish(), Some(json!(7)));
        assert!(Accumulator::from_state("[\"SUM\", 1]").is_none());
    }
}
