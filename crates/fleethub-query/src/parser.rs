//! The recursive-descent parser: tokens to [`Select`] or a bare condition.
//!
//! Precedence, loosest first: OR, AND, NOT, comparisons (`= != <> < > <= >= IN NIN`),
//! `+ -`, `* / %`, unary `-`.

use serde_json::Value;

use crate::ast::{AggFunc, ArithOp, CmpOp, Expr, ItemExpr, Select, SelectItem, Source};
use crate::error::{Pos, QueryError};
use crate::functions::Func;
use crate::lexer::{tokenize, Tok, Token};
use crate::limits::{MAX_DEPTH, MAX_LIST, MAX_NESTING, MAX_QUERY_CHARS};
use crate::paths;
use fleethub_core::twin::limits::thousands;

const RESERVED: &[&str] = &[
    "SELECT",
    "TOP",
    "AS",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "TRUE",
    "FALSE",
    "NULL",
    "UNDEFINED",
];

/// Whether `word` is a keyword (so a path segment named so needs `[[ ]]` in canonical form).
pub(crate) fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

pub(crate) struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    source: Source,
    /// How many levels deep the parser is now (see [`MAX_NESTING`]).
    nesting: usize,
}

/// Parses a whole `SELECT` statement.
pub(crate) fn parse_select(src: &str) -> Result<Select, QueryError> {
    let mut p = Parser::new(src, Source::Devices)?;
    let select = p.select()?;
    p.expect_end()?;
    Ok(select)
}

/// Parses a condition over `source` (an optional leading WHERE is allowed).
pub(crate) fn parse_condition(src: &str, source: Source) -> Result<Expr, QueryError> {
    let mut p = Parser::new(src, source)?;
    p.eat_keyword("WHERE");
    let e = p.expr()?;
    p.expect_end()?;
    Ok(e)
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, source: Source) -> Result<Parser<'a>, QueryError> {
        let chars = src.chars().count();
        if chars > MAX_QUERY_CHARS {
            return Err(QueryError::whole(
                "a shorter query",
                format!(
                    "query is {} characters long; at most {} are allowed (IoT Hub's limit)",
                    thousands(chars as u64),
                    thousands(MAX_QUERY_CHARS as u64)
                ),
            ));
        }
        let toks = tokenize(src)?;
        check_brackets(src, &toks)?;
        Ok(Parser {
            src,
            toks,
            i: 0,
            source,
            nesting: 0,
        })
    }

    /// Goes one level deeper, refusing to pass [`MAX_NESTING`]; pair with [`Parser::leave`].
    fn enter(&mut self) -> Result<(), QueryError> {
        self.nesting += 1;
        if self.nesting <= MAX_NESTING {
            return Ok(());
        }
        Err(self.limit_here(
            "a shallower query",
            nesting_message(&format!("more than {MAX_NESTING}")),
        ))
    }

    /// A limit refused at the current token.
    fn limit_here(&self, expected: &str, message: String) -> QueryError {
        let t = self.peek();
        QueryError::at(self.src, t.pos, t.describe(), expected, message)
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// Refuses an expression tree deeper than [`MAX_DEPTH`], reported at `pos`.
    fn check_depth(&self, depth: usize, pos: Pos) -> Result<(), QueryError> {
        if depth <= MAX_DEPTH {
            return Ok(());
        }
        Err(QueryError::at(
            self.src,
            pos,
            "",
            "a shallower expression",
            format!(
                "query expression is {depth} levels deep; at most {MAX_DEPTH} are allowed \
                 (each nesting level, and each operator of a chain like a + b + c, adds one)"
            ),
        ))
    }

    /// Refuses a list (select items, GROUP BY, arguments) longer than [`MAX_LIST`].
    fn check_list(&self, what: &str, len: usize) -> Result<(), QueryError> {
        if len <= MAX_LIST {
            return Ok(());
        }
        Err(self.limit_here(
            "a shorter list",
            format!("query has more than {MAX_LIST} {what}; at most {MAX_LIST} are allowed"),
        ))
    }

    fn peek(&self) -> &Token {
        let last = self.toks.len().saturating_sub(1);
        &self.toks[self.i.min(last)]
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        let last = self.toks.len().saturating_sub(1);
        &self.toks[(self.i + ahead).min(last)].tok
    }

    fn advance(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn error_here(&self, expected: &str) -> QueryError {
        let t = self.peek();
        QueryError::expected(self.src, t.pos, expected, &t.describe())
    }

    fn error_at(&self, pos: Pos, found: &str, expected: &str, message: String) -> QueryError {
        QueryError::at(self.src, pos, found, expected, message)
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        let yes = self.is_keyword(kw);
        if yes {
            self.advance();
        }
        yes
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.error_here(kw))
        }
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek().tok, Tok::Sym(x) if x == s)
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        let yes = self.is_sym(s);
        if yes {
            self.advance();
        }
        yes
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), QueryError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.error_here(&format!("'{s}'")))
        }
    }

    fn expect_end(&mut self) -> Result<(), QueryError> {
        if matches!(self.peek().tok, Tok::End) {
            return Ok(());
        }
        if self.is_keyword("ORDER") {
            let t = self.peek().clone();
            return Err(self.error_at(
                t.pos,
                &t.describe(),
                "end of query",
                "ORDER BY is not supported (IoT Hub has no ORDER BY either)".into(),
            ));
        }
        Err(self.error_here("end of query"))
    }

    fn select(&mut self) -> Result<Select, QueryError> {
        self.expect_keyword("SELECT")?;
        // The select list comes before FROM but its paths depend on the source: look ahead.
        self.source = self.lookahead_source();
        let top = if self.eat_keyword("TOP") {
            Some(self.top_count()?)
        } else {
            None
        };
        let items = if self.eat_sym("*") {
            None
        } else {
            Some(self.items()?)
        };
        self.expect_keyword("FROM")?;
        self.source = self.from()?;
        let filter = if self.eat_keyword("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut group_by = Vec::new();
        let group_pos = self.peek().pos;
        if self.eat_keyword("GROUP") {
            self.expect_keyword("BY")?;
            loop {
                group_by.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
                self.check_list("GROUP BY expressions", group_by.len() + 1)?;
            }
        }
        let select = Select {
            top,
            items,
            source: self.source,
            filter,
            group_by,
        };
        self.check_grouping(&select, group_pos)?;
        Ok(select)
    }

    /// The source named after the first top-level FROM (devices when there is none yet).
    fn lookahead_source(&self) -> Source {
        let toks = &self.toks;
        for (i, t) in toks.iter().enumerate().skip(self.i) {
            let after_dot = i > 0 && toks[i - 1].tok == Tok::Sym(".");
            if matches!(&t.tok, Tok::Word(w) if w.eq_ignore_ascii_case("FROM")) && !after_dot {
                let jobs = matches!(toks.get(i + 2).map(|t| &t.tok), Some(Tok::Sym(".")))
                    && matches!(toks.get(i + 3).map(|t| &t.tok),
                        Some(Tok::Word(w)) if w.eq_ignore_ascii_case("jobs"));
                return if jobs {
                    Source::DeviceJobs
                } else {
                    Source::Devices
                };
            }
        }
        Source::Devices
    }

    fn top_count(&mut self) -> Result<u64, QueryError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Int(n) if n >= 0 => {
                self.advance();
                Ok(n as u64)
            }
            _ => Err(QueryError::expected(
                self.src,
                t.pos,
                "a non-negative integer after TOP",
                &t.describe(),
            )),
        }
    }

    fn from(&mut self) -> Result<Source, QueryError> {
        if !self.is_keyword("devices") {
            return Err(self.error_here("devices or devices.jobs"));
        }
        self.advance();
        if !self.eat_sym(".") {
            return Ok(Source::Devices);
        }
        if self.eat_keyword("jobs") {
            return Ok(Source::DeviceJobs);
        }
        let t = self.peek().clone();
        let message = if matches!(&t.tok, Tok::Word(w) if w.eq_ignore_ascii_case("modules")) {
            "devices.modules is not supported; query devices or devices.jobs".to_string()
        } else {
            format!("expected jobs after 'devices.', found {}", t.describe())
        };
        Err(self.error_at(t.pos, &t.describe(), "jobs", message))
    }

    fn items(&mut self) -> Result<Vec<SelectItem>, QueryError> {
        let mut items = Vec::new();
        let mut unnamed = 0;
        loop {
            let start = self.peek().pos;
            let expr = self.item_expr()?;
            let alias = if self.eat_keyword("AS") {
                Some(self.alias()?)
            } else {
                None
            };
            let name = match (&alias, &expr) {
                (Some(a), _) => a.clone(),
                (None, ItemExpr::Expr(Expr::Path(p))) => {
                    p.segments.last().cloned().unwrap_or_default()
                }
                _ => {
                    unnamed += 1;
                    format!("${unnamed}")
                }
            };
            if items.iter().any(|i: &SelectItem| i.name == name) {
                return Err(self.error_at(
                    start,
                    &format!("'{name}'"),
                    "a unique output name",
                    format!("two select items are named '{name}'; give one an alias with AS"),
                ));
            }
            items.push(SelectItem {
                expr,
                alias,
                name,
                pos: start,
            });
            if !self.eat_sym(",") {
                return Ok(items);
            }
            self.check_list("select items", items.len() + 1)?;
        }
    }

    fn alias(&mut self) -> Result<String, QueryError> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Word(w) if !is_reserved(w) => {
                self.advance();
                Ok(w.clone())
            }
            Tok::Str(s) if !s.is_empty() => {
                self.advance();
                Ok(s.clone())
            }
            _ => Err(QueryError::expected(
                self.src,
                t.pos,
                "a name after AS",
                &t.describe(),
            )),
        }
    }

    fn item_expr(&mut self) -> Result<ItemExpr, QueryError> {
        if let Tok::Word(w) = &self.peek().tok {
            if let Some(agg) = AggFunc::from_name(w) {
                if matches!(self.peek_at(1), Tok::Sym("(")) {
                    self.advance();
                    self.advance();
                    if agg == AggFunc::Count {
                        self.eat_sym("*");
                        self.expect_sym(")")?;
                        return Ok(ItemExpr::Aggregate(agg, None));
                    }
                    let arg = self.expr()?;
                    self.expect_sym(")")?;
                    return Ok(ItemExpr::Aggregate(agg, Some(arg)));
                }
            }
        }
        Ok(ItemExpr::Expr(self.expr()?))
    }

    fn check_grouping(&self, select: &Select, group_pos: Pos) -> Result<(), QueryError> {
        if !select.is_aggregate() {
            return Ok(());
        }
        let Some(items) = &select.items else {
            return Err(self.error_at(
                group_pos,
                "'GROUP'",
                "a select list",
                "SELECT * cannot be grouped; select the GROUP BY expressions and aggregates".into(),
            ));
        };
        for item in items {
            if let ItemExpr::Expr(e) = &item.expr {
                if !select.group_by.contains(e) {
                    return Err(self.error_at(
                        item.pos,
                        &format!("'{e}'"),
                        "an aggregate or a GROUP BY expression",
                        format!(
                            "select item '{}' is neither an aggregate nor a GROUP BY expression",
                            item.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A whole expression, one nesting level deeper than the caller.
    pub(crate) fn expr(&mut self) -> Result<Expr, QueryError> {
        let start = self.peek().pos;
        self.enter()?;
        let e = self.or();
        self.leave();
        let e = e?;
        self.check_depth(e.height(), start)?;
        Ok(e)
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let first = self.and()?;
        if !self.is_keyword("OR") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.eat_keyword("OR") {
            terms.push(self.and()?);
        }
        Ok(Expr::Or(terms))
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let first = self.not()?;
        if !self.is_keyword("AND") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.eat_keyword("AND") {
            terms.push(self.not()?);
        }
        Ok(Expr::And(terms))
    }

    fn not(&mut self) -> Result<Expr, QueryError> {
        if self.eat_keyword("NOT") {
            self.enter()?;
            let inner = self.not();
            self.leave();
            return Ok(Expr::Not(Box::new(inner?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, QueryError> {
        let left = self.additive()?;
        let op = match self.peek().tok {
            Tok::Sym("=") => Some(CmpOp::Eq),
            Tok::Sym("!=") | Tok::Sym("<>") => Some(CmpOp::Ne),
            Tok::Sym("<") => Some(CmpOp::Lt),
            Tok::Sym(">") => Some(CmpOp::Gt),
            Tok::Sym("<=") => Some(CmpOp::Le),
            Tok::Sym(">=") => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.advance();
            let right = self.additive()?;
            return Ok(Expr::Cmp(op, Box::new(left), Box::new(right)));
        }
        let negated = if self.eat_keyword("IN") {
            false
        } else if self.eat_keyword("NIN") {
            true
        } else {
            return Ok(left);
        };
        if !self.is_sym("[") {
            return Err(self.error_here(&format!(
                "an array constant like ['a', 'b'] after {}",
                if negated { "NIN" } else { "IN" }
            )));
        }
        let Value::Array(list) = self.constant()? else {
            return Err(self.error_here("an array constant"));
        };
        Ok(Expr::In {
            expr: Box::new(left),
            list,
            negated,
        })
    }

    fn additive(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.multiplicative()?;
        // A chain deepens the tree by one per operator without recursing: track its depth.
        let mut depth = left.height();
        loop {
            let op = match self.peek().tok {
                Tok::Sym("+") => ArithOp::Add,
                Tok::Sym("-") => ArithOp::Sub,
                _ => return Ok(left),
            };
            let at = self.advance().pos;
            let right = self.multiplicative()?;
            depth = depth.max(right.height()) + 1;
            self.check_depth(depth, at)?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.unary()?;
        let mut depth = left.height();
        loop {
            let op = match self.peek().tok {
                Tok::Sym("*") => ArithOp::Mul,
                Tok::Sym("/") => ArithOp::Div,
                Tok::Sym("%") => ArithOp::Rem,
                _ => return Ok(left),
            };
            let at = self.advance().pos;
            let right = self.unary()?;
            depth = depth.max(right.height()) + 1;
            self.check_depth(depth, at)?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        let negate = if self.eat_sym("-") {
            true
        } else if self.eat_sym("+") {
            false
        } else {
            return self.primary();
        };
        self.enter()?;
        let inner = self.unary();
        self.leave();
        let inner = inner?;
        if !negate {
            return Ok(inner);
        }
        Ok(match inner {
            Expr::Const(v) => match crate::value::negate(Some(&v)) {
                Some(n) => Expr::Const(n),
                None => Expr::Neg(Box::new(Expr::Const(v))),
            },
            e => Expr::Neg(Box::new(e)),
        })
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Sym("(") => {
                self.advance();
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("undefined") => {
                self.advance();
                Ok(Expr::Undefined)
            }
            Tok::Str(_) | Tok::Int(_) | Tok::Float(_) | Tok::Sym("[") => {
                Ok(Expr::Const(self.constant()?))
            }
            Tok::Word(w)
                if ["true", "false", "null"]
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(w)) =>
            {
                Ok(Expr::Const(self.constant()?))
            }
            Tok::Word(w) if matches!(self.peek_at(1), Tok::Sym("(")) => self.call(w.clone(), t.pos),
            Tok::Word(w) if !is_reserved(w) => self.path(),
            _ => Err(self.error_here("an expression")),
        }
    }

    fn call(&mut self, name: String, pos: Pos) -> Result<Expr, QueryError> {
        let found = format!("'{name}'");
        if AggFunc::from_name(&name).is_some() {
            return Err(self.error_at(
                pos,
                &found,
                "a scalar function",
                format!(
                    "aggregate {} is allowed only as a select item",
                    name.to_uppercase()
                ),
            ));
        }
        let Some(func) = Func::from_name(&name) else {
            return Err(self.error_at(
                pos,
                &found,
                "a function name",
                format!(
                    "unknown function '{name}'; functions are {}",
                    Func::names().join(", ")
                ),
            ));
        };
        self.advance();
        self.advance();
        let mut args = Vec::new();
        if !self.eat_sym(")") {
            loop {
                args.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
                self.check_list("arguments in one function call", args.len() + 1)?;
            }
            self.expect_sym(")")?;
        }
        if !func.arity().accepts(args.len()) {
            return Err(self.error_at(
                pos,
                &found,
                &func.arity().describe(),
                format!(
                    "function {} takes {}, found {}",
                    func.name(),
                    func.arity().describe(),
                    args.len()
                ),
            ));
        }
        Ok(Expr::Call(func, args))
    }

    fn path(&mut self) -> Result<Expr, QueryError> {
        let mut segments = Vec::new();
        let mut positions = Vec::new();
        let first = self.advance();
        if let Tok::Word(w) = first.tok {
            segments.push(w);
            positions.push(first.pos);
        }
        while self.eat_sym(".") {
            let t = self.advance();
            match t.tok {
                Tok::Word(w) | Tok::Escaped(w) => {
                    segments.push(w);
                    positions.push(t.pos);
                }
                _ => {
                    return Err(QueryError::expected(
                        self.src,
                        t.pos,
                        "a property name (use [[name]] for unusual names)",
                        &t.describe(),
                    ))
                }
            }
        }
        paths::resolve(self.source, segments)
            .map(Expr::Path)
            .map_err(|e| {
                let pos = positions.get(e.segment).copied().unwrap_or(Pos::START);
                let found = self.src.get(pos.offset..).unwrap_or("");
                let found: String = found
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                    .collect();
                self.error_at(pos, &format!("'{found}'"), &e.expected, e.message)
            })
    }

    /// A constant: string, number, true/false/null, or an array of constants. Signs and
    /// brackets each nest one level deeper.
    fn constant(&mut self) -> Result<Value, QueryError> {
        if matches!(self.peek().tok, Tok::Sym("-" | "[")) {
            self.enter()?;
            let c = self.constant_inner();
            self.leave();
            return c;
        }
        self.constant_inner()
    }

    fn constant_inner(&mut self) -> Result<Value, QueryError> {
        let t = self.advance();
        match t.tok {
            Tok::Str(s) => Ok(Value::String(s)),
            Tok::Int(i) => Ok(Value::from(i)),
            Tok::Float(f) => Ok(serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => Ok(Value::Null),
            Tok::Sym("-") => {
                let inner = self.constant()?;
                crate::value::negate(Some(&inner)).ok_or_else(|| {
                    QueryError::expected(self.src, t.pos, "a number after '-'", &t.describe())
                })
            }
            Tok::Sym("[") => {
                let mut items = Vec::new();
                if self.eat_sym("]") {
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.constant()?);
                    if self.eat_sym("]") {
                        return Ok(Value::Array(items));
                    }
                    self.expect_sym(",")?;
                }
            }
            _ => Err(QueryError::expected(
                self.src,
                t.pos,
                "a constant (string, number, true, false, null or array)",
                &t.describe(),
            )),
        }
    }
}

/// "query nests N levels deep; at most …", the message for every nesting refusal.
fn nesting_message(levels: &str) -> String {
    format!(
        "query nests {levels} levels deep; at most {MAX_NESTING} are allowed (each parenthesis, \
         bracket, function call, NOT and sign adds a level)"
    )
}

/// Refuses brackets nested past [`MAX_NESTING`] before any parsing recurses, naming how deep
/// they go (the top level is level 1, so 800 parentheses nest 801 levels).
fn check_brackets(src: &str, toks: &[Token]) -> Result<(), QueryError> {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut first_too_deep = None;
    for t in toks {
        match t.tok {
            Tok::Sym("(" | "[") => {
                depth += 1;
                if depth + 1 > MAX_NESTING && first_too_deep.is_none() {
                    first_too_deep = Some(t);
                }
                deepest = deepest.max(depth);
            }
            Tok::Sym(")" | "]") => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    match first_too_deep {
        None => Ok(()),
        Some(t) => Err(QueryError::at(
            src,
            t.pos,
            t.describe(),
            "a shallower query",
            nesting_message(&thousands(deepest as u64 + 1)),
        )),
    }
}
