//! Continuation tokens: opaque to clients, base64url of a small JSON document naming the query
//! they belong to, the last key returned and how many rows were returned so far (for TOP).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::QueryError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Token {
    /// Format version.
    pub v: u32,
    /// The fingerprint of the query the token continues.
    pub q: String,
    /// The paging key of the last row returned.
    pub k: Vec<String>,
    /// Rows returned on earlier pages.
    pub n: u64,
}

/// A stable 64-bit FNV-1a fingerprint of the canonical query text.
pub(crate) fn fingerprint(canonical: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Token {
    pub(crate) fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a token for the query with fingerprint `q` whose keys have `key_len` parts.
    pub(crate) fn decode(
        text: &str,
        query: &str,
        q: &str,
        key_len: usize,
    ) -> Result<Token, QueryError> {
        let bad = || {
            QueryError::general(
                query,
                "a continuation token from the previous page of this query",
                "the continuation token is malformed; pass x-ms-continuation exactly as the \
                 previous page returned it",
            )
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .map_err(|_| bad())?;
        let token: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if token.v != 1 || token.k.len() != key_len {
            return Err(bad());
        }
        if token.q != q {
            return Err(QueryError::general(
                query,
                "a continuation token from the previous page of this query",
                "the continuation token belongs to a different query; send the same query \
                 text with its continuation token",
            ));
        }
        Ok(token)
    }
}
