//! The largest queries under the limits compile to SQL that SQLite accepts.

use std::collections::HashSet;

use fleethub_query::limits::{MAX_DEPTH, MAX_LIST, MAX_NESTING};
use fleethub_query::{Page, Query};
use serde_json::json;

use super::{device, insert_all, open_store, run_compiled, runtime};

fn wh(cond: &str) -> String {
    format!("SELECT * FROM devices WHERE {cond}")
}

#[test]
fn the_largest_queries_under_the_limits_run_in_sqlite() {
    runtime().block_on(async {
        let (store, _dir) = open_store(HashSet::new());
        insert_all(
            &store,
            vec![device("d1", json!({"a": 1}), json!({}), json!({}))],
        )
        .await;
        let n = MAX_NESTING - 1;
        let chain = vec!["tags.a"; MAX_DEPTH - n - 2].join(" + ");
        let texts = [
            // Long OR chains compile to a balanced tree, far under SQLite's depth of 1,000.
            wh(&vec!["tags.a = 1"; 500].join(" OR ")),
            wh(&vec!["tags.a = 1"; 500].join(" AND ")),
            // As many parameters as fit in 8 KB.
            wh(&format!("tags.a IN [{}]", vec!["1"; 4000].join(","))),
            wh(&format!("deviceId IN [{}]", vec!["'x'"; 1900].join(","))),
            // The deepest SQL: type tests over a comparison over an arithmetic chain.
            wh(&format!(
                "{}({chain}) = 1{}",
                "IS_BOOL(".repeat(n - 1),
                ")".repeat(n - 1)
            )),
            format!(
                "SELECT {} FROM devices",
                vec!["tags.a + 1"; MAX_LIST].join(", ")
            ),
            wh(&format!(
                "CONCAT({}) = 'x'",
                vec!["deviceId"; MAX_LIST].join(",")
            )),
        ];
        for text in texts {
            let q = Query::parse(&text).unwrap_or_else(|e| panic!("{}", e.message));
            let page = Page {
                limit: 10,
                continuation: None,
            };
            let compiled = q.compile(&page, store.dialect()).expect("compiles");
            run_compiled(&store, compiled)
                .await
                .unwrap_or_else(|e| panic!("SQLite refused {}: {e}", &text[..60]));
        }
    });
}
