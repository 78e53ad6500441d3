//! The bounds every query is checked against before anything walks it.
//!
//! Every walk over a query (parser, evaluator, SQL compiler, rendering, even dropping the tree)
//! recurses, so an unbounded query could overflow the stack and abort the whole hub. The bounds
//! are refused with a positioned [`crate::QueryError`] that names the limit. They were measured
//! in a debug build: at each limit every walk needs under 1 MiB of stack (a tokio worker has
//! 2 MiB), and the compiled SQL stays under SQLite's own limits (expression depth 1,000,
//! parser depth 2,500, 32,766 parameters, 2,000 result columns, 1,000 function arguments).

/// The longest query or condition, in characters: IoT Hub's limit.
pub const MAX_QUERY_CHARS: usize = 8192;

/// How many levels a query may nest: the top level is 1, and every parenthesis, array bracket,
/// function call, `NOT` and unary sign adds one. The parser spends up to about 23 KiB of stack
/// per level in a debug build (nested function calls), so 32 levels take about 750 KiB.
pub const MAX_NESTING: usize = 32;

/// How many nodes deep an expression tree may be. Each nesting level, and each operator of an
/// arithmetic chain such as `a + b + c`, adds one; an `AND`/`OR` chain is one node however long.
/// The evaluator and the SQL compiler each need about 330 KiB of stack at this depth in a debug
/// build, and the compiler emits at most three SQL levels per node (under SQLite's 1,000).
pub const MAX_DEPTH: usize = 128;

/// The most select items, GROUP BY expressions, or arguments of one function call.
pub const MAX_LIST: usize = 256;
