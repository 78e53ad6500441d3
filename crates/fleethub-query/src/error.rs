//! Positioned query errors and their caret rendering.

use std::fmt;

/// A parse or validation error, positioned in the query text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// 1-based line of the offending token.
    pub line: usize,
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// What was found there (`end of query` at the end).
    pub found: String,
    /// What would have been valid there.
    pub expected: String,
    /// One line a person can act on.
    pub message: String,
    /// The source line and a caret under the spot, ready to print.
    pub rendered: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rendered)
    }
}

impl std::error::Error for QueryError {}

/// A position in the query text: byte offset (for slicing) plus 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub(crate) const START: Pos = Pos {
        offset: 0,
        line: 1,
        column: 1,
    };
}

/// The most characters of a query line an error shows.
const SHOWN_CHARS: usize = 120;

impl QueryError {
    /// An error at `pos` in `source`: "`message` at line L, column C", the line and a caret.
    pub(crate) fn at(
        source: &str,
        pos: Pos,
        found: impl Into<String>,
        expected: impl Into<String>,
        message: impl Into<String>,
    ) -> QueryError {
        let message = message.into();
        let line_text = source.lines().nth(pos.line.saturating_sub(1)).unwrap_or("");
        // Tabs become one space each so the caret, counted in characters, lines up.
        let chars: Vec<char> = line_text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        // A long line is shown as a window around the spot, so a message stays short whatever
        // the query's size.
        let at = pos.column.saturating_sub(1).min(chars.len());
        let start = at.saturating_sub(SHOWN_CHARS / 2);
        let end = (start + SHOWN_CHARS).min(chars.len());
        let mut shown: String = chars[start..end].iter().collect();
        let mut caret_at = at - start;
        if start > 0 {
            shown.insert(0, '…');
            caret_at += 1;
        }
        if end < chars.len() {
            shown.push('…');
        }
        let caret = " ".repeat(caret_at);
        let rendered = format!(
            "{message} at line {}, column {}\n{shown}\n{caret}^",
            pos.line, pos.column
        );
        QueryError {
            line: pos.line,
            column: pos.column,
            found: found.into(),
            expected: expected.into(),
            message,
            rendered,
        }
    }

    /// "expected X, found Y" at `pos`.
    pub(crate) fn expected(source: &str, pos: Pos, expected: &str, found: &str) -> QueryError {
        let message = format!("expected {expected}, found {found}");
        QueryError::at(source, pos, found, expected, message)
    }

    /// An error about the whole query that shows none of it (its size, for one).
    pub(crate) fn whole(expected: &str, message: impl Into<String>) -> QueryError {
        let message = message.into();
        QueryError {
            line: 1,
            column: 1,
            found: String::new(),
            expected: expected.into(),
            rendered: message.clone(),
            message,
        }
    }

    /// An error about the whole query or a continuation token, reported at line 1, column 1.
    pub(crate) fn general(source: &str, expected: &str, message: impl Into<String>) -> QueryError {
        QueryError::at(source, Pos::START, "", expected, message)
    }
}
