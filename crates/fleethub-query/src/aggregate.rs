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
        self.sum = Some(match (self.sum, n) {
            (None, n) => n,
            (Some(Num::Int(a)), Num::Int(b)) => match a.checked_add(b) {
                Some(s) => Num::Int(s),
                None => Num::Float(a as f64 + b as f64),
            },
            (Some(a), b) => Num::Float(a.as_f64() + b.as_f64()),
        });
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
            self.best = Some((n, v.clone()));
        }
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
}
