//! The lexer: query text to tokens with positions.
//!
//! `[[name]]` escapes are recognised only right after a `.` (a path segment); everywhere else
//! `[[` opens a nested array constant, so `[[1, 2], [3]]` stays an array.

use crate::error::{Pos, QueryError};

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An identifier or keyword, as written.
    Word(String),
    /// A `[[...]]`-escaped path segment.
    Escaped(String),
    /// A string constant, escapes resolved.
    Str(String),
    /// An integer constant that fits an `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// Punctuation or an operator.
    Sym(&'static str),
    /// The end of the text.
    End,
}

/// A token, where it starts, and its text for error messages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: Pos,
    pub text: String,
}

impl Token {
    /// How the token is named in "found ..." messages.
    pub(crate) fn describe(&self) -> String {
        match self.tok {
            Tok::End => "end of query".to_string(),
            Tok::Str(_) => self.text.clone(),
            _ => format!("'{}'", self.text),
        }
    }
}

const SYMBOLS: &[&str] = &[
    "!=", "<>", "<=", ">=", "(", ")", "[", "]", ",", ".", "*", "+", "-", "/", "%", "=", "<", ">",
];

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    i: usize,
    line: usize,
    column: usize,
}

/// Splits `src` into tokens, ending with [`Tok::End`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, QueryError> {
    let mut lx = Lexer {
        src,
        chars: src.char_indices().collect(),
        i: 0,
        line: 1,
        column: 1,
    };
    let mut out: Vec<Token> = Vec::new();
    loop {
        lx.skip_space();
        let pos = lx.pos();
        let Some(c) = lx.peek(0) else {
            out.push(Token {
                tok: Tok::End,
                pos,
                text: String::new(),
            });
            return Ok(out);
        };
        let after_dot = matches!(
            out.last(),
            Some(Token {
                tok: Tok::Sym("."),
                ..
            })
        );
        let tok = if after_dot && c == '[' && lx.peek(1) == Some('[') {
            lx.escaped(pos)?
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            lx.word()
        } else if c.is_ascii_digit() {
            lx.number(pos)?
        } else if c == '\'' || c == '"' {
            lx.string(pos, c)?
        } else {
            lx.symbol(pos)?
        };
        let text = lx
            .src
            .get(pos.offset..lx.offset())
            .unwrap_or("")
            .to_string();
        out.push(Token { tok, pos, text });
    }
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).map(|&(_, c)| c)
    }

    fn offset(&self) -> usize {
        self.chars
            .get(self.i)
            .map(|&(o, _)| o)
            .unwrap_or(self.src.len())
    }

    fn pos(&self) -> Pos {
        Pos {
            offset: self.offset(),
            line: self.line,
            column: self.column,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_space(&mut self) {
        while self.peek(0).is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn error(&self, pos: Pos, found: &str, expected: &str, message: String) -> QueryError {
        QueryError::at(self.src, pos, found, expected, message)
    }

    fn word(&mut self) -> Tok {
        let mut s = String::new();
        while let Some(c) = self.peek(0) {
            if c.is_alphanumeric() || c == '_' || c == '$' {
                s.push(c);
                self.bump();
            } else {
                break;
            }
        }
        Tok::Word(s)
    }

    fn escaped(&mut self, pos: Pos) -> Result<Tok, QueryError> {
        self.bump();
        self.bump();
        let mut s = String::new();
        loop {
            match self.peek(0) {
                None => {
                    return Err(self.error(
                        pos,
                        "end of query",
                        "']]'",
                        "unterminated [[ ]] escape: expected ']]'".to_string(),
                    ))
                }
                Some(']') if self.peek(1) == Some(']') => {
                    self.bump();
                    self.bump();
                    break;
                }
                Some(c) => {
                    s.push(c);
                    self.bump();
                }
            }
        }
        if s.is_empty() {
            return Err(self.error(
                pos,
                "'[[]]'",
                "a name",
                "empty [[ ]] escape: put the property name between the brackets".to_string(),
            ));
        }
        Ok(Tok::Escaped(s))
    }

    fn digits(&mut self, radix: u32) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek(0).filter(|c| c.is_digit(radix)) {
            s.push(c);
            self.bump();
        }
        s
    }

    fn number(&mut self, pos: Pos) -> Result<Tok, QueryError> {
        let bad = |lx: &Self, text: &str| {
            lx.error(
                pos,
                &format!("'{text}'"),
                "a number",
                format!("invalid number '{text}'"),
            )
        };
        if self.peek(0) == Some('0') && matches!(self.peek(1), Some('x' | 'X')) {
            self.bump();
            self.bump();
            let hex = self.digits(16);
            let text = format!("0x{hex}");
            if self
                .peek(0)
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                return Err(bad(self, &text));
            }
            return i64::from_str_radix(&hex, 16)
                .map(Tok::Int)
                .map_err(|_| bad(self, &text));
        }
        let mut text = self.digits(10);
        let mut float = false;
        if self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            text.push('.');
            text.push_str(&self.digits(10));
            float = true;
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            let sign = matches!(self.peek(1), Some('+' | '-'));
            let first_digit = if sign { self.peek(2) } else { self.peek(1) };
            if first_digit.is_some_and(|c| c.is_ascii_digit()) {
                text.push('e');
                self.bump();
                if sign {
                    text.extend(self.bump());
                }
                text.push_str(&self.digits(10));
                float = true;
            }
        }
        if self
            .peek(0)
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            while let Some(c) = self.peek(0).filter(|c| c.is_alphanumeric() || *c == '_') {
                text.push(c);
                self.bump();
            }
            return Err(bad(self, &text));
        }
        if !float {
            if let Ok(n) = text.parse::<i64>() {
                return Ok(Tok::Int(n));
            }
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Tok::Float(f)),
            _ => Err(bad(self, &text)),
        }
    }

    fn string(&mut self, pos: Pos, quote: char) -> Result<Tok, QueryError> {
        self.bump();
        let mut s = String::new();
        loop {
            let here = self.pos();
            match self.bump() {
                None => {
                    return Err(self.error(
                        pos,
                        "end of query",
                        &format!("closing {quote}"),
                        format!("unterminated string: expected a closing {quote}"),
                    ))
                }
                Some(c) if c == quote => return Ok(Tok::Str(s)),
                Some('\\') => s.push(self.escape(here)?),
                Some(c) => s.push(c),
            }
        }
    }

    fn escape(&mut self, pos: Pos) -> Result<char, QueryError> {
        let c = self.bump();
        let simple = match c {
            Some('\'') => Some('\''),
            Some('"') => Some('"'),
            Some('\\') => Some('\\'),
            Some('/') => Some('/'),
            Some('n') => Some('\n'),
            Some('t') => Some('\t'),
            Some('r') => Some('\r'),
            Some('b') => Some('\u{8}'),
            Some('f') => Some('\u{c}'),
            _ => None,
        };
        if let Some(ch) = simple {
            return Ok(ch);
        }
        let bad = |lx: &Self, what: String| {
            lx.error(
                pos,
                &format!("'\\{what}'"),
                "an escape (\\' \\\" \\\\ \\/ \\n \\t \\r \\b \\f \\uXXXX)",
                format!("invalid escape '\\{what}' in string"),
            )
        };
        if c != Some('u') {
            return Err(bad(self, c.map(String::from).unwrap_or_default()));
        }
        let high = self.hex4().ok_or_else(|| bad(self, "u".into()))?;
        if !(0xD800..0xDC00).contains(&high) {
            return char::from_u32(high).ok_or_else(|| bad(self, format!("u{high:04X}")));
        }
        // A high surrogate must be followed by \uDC00-\uDFFF.
        if self.peek(0) == Some('\\') && self.peek(1) == Some('u') {
            self.bump();
            self.bump();
            if let Some(low) = self.hex4().filter(|l| (0xDC00..0xE000).contains(l)) {
                let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                if let Some(ch) = char::from_u32(code) {
                    return Ok(ch);
                }
            }
        }
        Err(bad(self, format!("u{high:04X}")))
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self.peek(0)?.to_digit(16)?;
            self.bump();
            v = v * 16 + d;
        }
        Some(v)
    }

    fn symbol(&mut self, pos: Pos) -> Result<Tok, QueryError> {
        let first = self.peek(0).unwrap_or(' ');
        let second = self.peek(1);
        for sym in SYMBOLS {
            let mut cs = sym.chars();
            let a = cs.next();
            let b = cs.next();
            if a == Some(first) && (b.is_none() || b == second) {
                self.bump();
                if b.is_some() {
                    self.bump();
                }
                return Ok(Tok::Sym(sym));
            }
        }
        Err(self.error(
            pos,
            &format!("'{first}'"),
            "an operator, name or constant",
            format!("unexpected character '{first}'"),
        ))
    }
}
