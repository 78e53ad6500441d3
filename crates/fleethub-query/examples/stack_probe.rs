//! Measures how deep a query shape can go before one of the query walks overflows a stack:
//! `cargo run -p fleethub-query --example stack_probe -- <shape> <n> <stack KiB> <walk>`.
//! Exits 0 when the walk finished; a stack overflow aborts the process.
#![allow(clippy::unwrap_used)] // a panic here fails a test or a probe; it never reaches the hub
use std::sync::Arc;

fn text(shape: &str, n: usize) -> String {
    let w = |inner: String| format!("SELECT * FROM devices WHERE {inner}");
    match shape {
        "parens" => w(format!("{}tags.a = 1{}", "(".repeat(n), ")".repeat(n))),
        "not" => w(format!("{}tags.a = 1", "NOT ".repeat(n))),
        "neg" => w(format!("{}tags.a = 1", "-".repeat(n))),
        "or" => w(vec!["tags.a = 1"; n].join(" OR ")),
        "and" => w(vec!["tags.a = 1"; n].join(" AND ")),
        "plus" => w(format!("{} = 1", vec!["tags.a"; n].join(" + "))),
        "calls" => w(format!(
            "{}tags.a{} = 'x'",
            "LOWER(".repeat(n),
            ")".repeat(n)
        )),
        "isbool" => w(format!("{}tags.a{}", "IS_BOOL(".repeat(n), ")".repeat(n))),
        "cmp" => w(format!("{}tags.a{}", "(".repeat(n), " = true)".repeat(n))),
        "arrays" => w(format!("tags.a IN [{}1{}]", "[".repeat(n), "]".repeat(n))),
        other => panic!("unknown shape {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape = args[1].clone();
    let n: usize = args[2].parse().unwrap();
    let kib: usize = args[3].parse().unwrap();
    let walk = args[4].clone();
    let q = text(&shape, n);
    let big = 512 << 20;
    let parsed = if walk == "parse" {
        None
    } else {
        let q = q.clone();
        Some(Arc::new(
            std::thread::Builder::new()
                .stack_size(big)
                .spawn(move || fleethub_query::Query::parse(&q))
                .unwrap()
                .join()
                .unwrap(),
        ))
    };
    let run = move || match walk.as_str() {
        "parse" => {
            let r = fleethub_query::Query::parse(&q);
            let ok = r.is_ok();
            std::mem::forget(r);
            println!("parse ok={ok}");
        }
        other => {
            let parsed = parsed.unwrap();
            let query = match &*parsed {
                Ok(query) => query,
                Err(e) => {
                    println!("refused: {}", e.message);
                    return;
                }
            };
            match other {
                "eval" => {
                    let doc = serde_json::json!({"deviceId": "d", "tags": {"a": 1}});
                    println!("eval {:?}", query.evaluate(&doc).is_some());
                }
                "compile" => {
                    let page = fleethub_query::Page {
                        limit: 10,
                        continuation: None,
                    };
                    let c = query
                        .compile(&page, fleethub_query::Dialect::Sqlite)
                        .unwrap();
                    println!("compile {} bytes", c.sql.len());
                    std::mem::forget(c);
                }
                "display" => println!("display {}", query.to_string().len()),
                "clone" => {
                    let c = query.clone();
                    std::mem::forget(c);
                    println!("clone");
                }
                "drop" => {
                    let q2 = q.clone();
                    let c = std::thread::Builder::new()
                        .stack_size(big)
                        .spawn(move || fleethub_query::Query::parse(&q2))
                        .unwrap()
                        .join()
                        .unwrap();
                    drop(c);
                    println!("drop");
                }
                "eq" => println!("eq {}", query == &query.clone()),
                w => panic!("unknown walk {w}"),
            }
        }
    };
    std::thread::Builder::new()
        .stack_size(kib << 10)
        .spawn(run)
        .unwrap()
        .join()
        .unwrap();
}
