//! Prints the SQL a query compiles to: `cargo run -p fleethub-query --example explain -- "SELECT …"`.
#![allow(clippy::unwrap_used)] // a panic here fails a test or a probe; it never reaches the hub
fn main() {
    let text = std::env::args().nth(1).unwrap_or_default();
    match fleethub_query::Query::parse(&text) {
        Ok(q) => match q.compile(
            &fleethub_query::Page {
                limit: 100,
                continuation: None,
            },
            fleethub_query::Dialect::Sqlite,
        ) {
            Ok(c) => println!("{}\n{:?}", c.sql, c.params),
            Err(e) => eprintln!("{e}"),
        },
        Err(e) => eprintln!("{e}"),
    }
}
