//! Regression tests for "one query kills the hub": every nesting shape is refused with an error
//! naming the limit, never a stack overflow; queries at the limits run every walk on a 1 MiB
//! stack (half a tokio worker's) and compile (tests/sql/limits.rs runs the largest in SQLite).

use crate::limits::{MAX_DEPTH, MAX_LIST, MAX_NESTING};
use crate::{Condition, Page, Query};
use serde_json::json;

fn wh(cond: &str) -> String {
    format!("SELECT * FROM devices WHERE {cond}")
}

fn refused(text: &str) -> String {
    match Query::parse(text) {
        Ok(_) => panic!("accepted: {}", &text[..text.len().min(80)]),
        Err(e) => e.message,
    }
}

/// Parses, evaluates, compiles, renders, lists the paths of, clones, compares and drops `text`
/// on a 1 MiB stack.
fn every_walk_on_a_small_stack(text: String) {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            let q = Query::parse(&text).unwrap_or_else(|e| panic!("{}", e.message));
            let doc = json!({"deviceId": "d", "tags": {"a": 1}});
            let _ = q.evaluate(&doc);
            let page = Page {
                limit: 10,
                continuation: None,
            };
            q.compile(&page, crate::Dialect::Sqlite).expect("compiles");
            let _ = q.to_string();
            let _ = q.condition().map(|c| c.paths());
            let copy = q.clone();
            assert!(copy == q);
        })
        .expect("thread")
        .join()
        .expect("every walk finished");
}

#[test]
fn eight_hundred_nested_parentheses_are_refused_naming_the_limit() {
    let text = wh(&format!("{}tags.a = 1{}", "(".repeat(800), ")".repeat(800)));
    let m = refused(&text);
    assert!(
        m.starts_with(&format!(
            "query nests 801 levels deep; at most {MAX_NESTING}"
        )),
        "{m}"
    );
}

#[test]
fn a_condition_with_a_thousand_parentheses_is_refused() {
    let text = format!("{}tags.a = 1{}", "(".repeat(1000), ")".repeat(1000));
    let e = Condition::parse(&text).unwrap_err();
    assert!(e.message.contains("1,001 levels deep"), "{}", e.message);
}

#[test]
fn long_not_and_sign_chains_are_refused_naming_the_limit() {
    for text in [
        wh(&format!("{}tags.a = 1", "NOT ".repeat(1500))),
        wh(&format!("tags.a = {}1", "-".repeat(8000))),
        wh(&format!("tags.a = {}tags.b", "- ".repeat(3000))),
        wh(&format!("tags.a IN [{}1]", "-".repeat(5000))),
    ] {
        let m = refused(&text);
        assert!(m.contains(&format!("at most {MAX_NESTING}")), "{m}");
    }
}

#[test]
fn thousands_of_plus_terms_are_refused_naming_the_depth_limit() {
    let m = refused(&wh(&format!("{} = 1", vec!["1"; 4000].join("+"))));
    assert!(m.contains(&format!("at most {MAX_DEPTH}")), "{m}");
}

#[test]
fn thousands_of_nested_calls_and_arrays_are_refused() {
    for text in [
        wh(&format!(
            "{}tags.a{} = 'x'",
            "LOWER(".repeat(1000),
            ")".repeat(1000)
        )),
        wh(&format!(
            "tags.a IN [{}1{}]",
            "[".repeat(3000),
            "]".repeat(3000)
        )),
    ] {
        let m = refused(&text);
        assert!(m.contains(&format!("at most {MAX_NESTING}")), "{m}");
    }
}

#[test]
fn queries_past_eight_kilobytes_are_refused_without_echoing_them() {
    let ids: Vec<String> = (0..50_000).map(|i| format!("'d{i}'")).collect();
    let e = Query::parse(&wh(&format!("deviceId IN [{}]", ids.join(",")))).unwrap_err();
    assert!(e.message.contains("at most 8,192"), "{}", e.message);
    assert!(
        e.rendered.len() < 200,
        "the message does not echo the query"
    );
}

#[test]
fn too_many_select_items_group_keys_or_arguments_are_refused() {
    let items = vec!["1"; MAX_LIST + 1].join(", ");
    let m = refused(&format!("SELECT {items} FROM devices"));
    assert!(
        m.contains("select items") && m.contains(&format!("at most {MAX_LIST}")),
        "{m}"
    );
    let args = vec!["'a'"; MAX_LIST + 1].join(",");
    let m = refused(&wh(&format!("CONCAT({args}) = 'x'")));
    assert!(m.contains("arguments"), "{m}");
}

#[test]
fn queries_at_the_limits_run_every_walk_on_a_one_mebibyte_stack() {
    let n = MAX_NESTING - 1;
    every_walk_on_a_small_stack(wh(&format!(
        "{}tags.a{} = 'x'",
        "LOWER(".repeat(n),
        ")".repeat(n)
    )));
    every_walk_on_a_small_stack(wh(&format!(
        "{}tags.a{}",
        "IS_BOOL(".repeat(n),
        ")".repeat(n)
    )));
    every_walk_on_a_small_stack(wh(&format!(
        "{}tags.a{}",
        "(".repeat(n),
        " = true)".repeat(n)
    )));
    every_walk_on_a_small_stack(wh(&format!("{}tags.a = 1", "NOT ".repeat(n))));
    every_walk_on_a_small_stack(wh(&format!(
        "{} = 1",
        vec!["tags.a"; MAX_DEPTH - 1].join(" + ")
    )));
    every_walk_on_a_small_stack(wh(&vec!["tags.a = 1"; 500].join(" OR ")));
}
