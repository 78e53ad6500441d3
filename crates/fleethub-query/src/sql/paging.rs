//! Keyset paging, the same in every dialect: which rows a page starts after and how many it
//! returns, and the continuation token for the page after.

use super::schema::key_columns;
use super::token::{fingerprint, Token};
use crate::ast::Select;
use crate::error::QueryError;
use crate::{CompiledQuery, Page};

/// What one page of a row query fetches.
pub(crate) struct PagePlan {
    /// The previous page's last key, when this is not the first page.
    pub after: Option<Vec<String>>,
    /// Rows returned on earlier pages.
    pub returned: u64,
    /// The most rows this page returns (TOP included).
    pub page_limit: usize,
    /// The canonical query's fingerprint, which tokens carry.
    pub fingerprint: String,
}

/// Plans one page of `select` (whose text is `text`); fails on a malformed or foreign token.
pub(crate) fn plan(select: &Select, text: &str, page: &Page) -> Result<PagePlan, QueryError> {
    let fp = fingerprint(&select.to_string());
    let keys = key_columns(select.source);
    let token = match &page.continuation {
        Some(t) => Some(Token::decode(t, text, &fp, keys.len())?),
        None => None,
    };
    let returned = token.as_ref().map_or(0, |t| t.n);
    let remaining = select.top.map(|t| t.saturating_sub(returned));
    let page_limit = match remaining {
        Some(r) => page
            .limit
            .max(1)
            .min(usize::try_from(r).unwrap_or(usize::MAX)),
        None => page.limit.max(1),
    };
    Ok(PagePlan {
        after: token.map(|t| t.k),
        returned,
        page_limit,
        fingerprint: fp,
    })
}

/// The canonical fingerprint of `select`, for statements that do not page.
pub(crate) fn fingerprint_of(select: &Select) -> String {
    fingerprint(&select.to_string())
}

impl CompiledQuery {
    /// The token for the page after one that returned `rows_returned` rows ending at `last_key`
    /// (the row's trailing key columns as text), when more rows may follow; `None` once TOP is
    /// reached or for aggregates. The store calls it when it fetched the extra row.
    pub fn continuation_after(&self, rows_returned: usize, last_key: &[String]) -> Option<String> {
        if self.aggregate || last_key.len() != self.key_columns {
            return None;
        }
        let n = self.returned_before.saturating_add(rows_returned as u64);
        if self.top.is_some_and(|top| n >= top) {
            return None;
        }
        Some(
            Token {
                v: 1,
                q: self.fingerprint.clone(),
                k: last_key.to_vec(),
                n,
            }
            .encode(),
        )
    }
}
