//! The query language: lexer, parser with its limits, canonical rendering, the evaluator and the
//! SQL compiler, fed query text as `POST /devices/query` and job `queryCondition`s carry it.
//!
//! The input is parsed both as a whole query and as a bare condition. Everything runs on a
//! thread with a tokio worker's 2 MiB stack, because that is where the hub parses queries: a
//! query that passes the limits but overflows that stack would abort the hub.
//!
//! Invariants beyond "never panics":
//! - the canonical rendering parses back to the same rendering (the continuation token's
//!   fingerprint is taken from it), unless re-parsing hits a limit (the rendering adds
//!   parentheses and characters);
//! - a parsed query compiles to SQL for a first page, and for the next page with the
//!   continuation token it issued;
//! - evaluation, aggregation and the condition's SQL never fail on any twin.

use fleethub_query::{Condition, Dialect, Page, Query, QueryError, Source};
use serde_json::{json, Value};

/// The stack of a tokio worker thread, on which the hub parses and evaluates queries.
const WORKER_STACK: usize = 2 * 1024 * 1024;

/// Parses, renders, compiles and evaluates `data` as query text.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.to_string();
    std::thread::Builder::new()
        .stack_size(WORKER_STACK)
        .spawn(move || check(&text))
        .expect("spawn a query thread")
        .join()
        .expect("query thread panicked");
}

fn check(text: &str) {
    if let Ok(query) = Query::parse(text) {
        check_query(&query);
    }
    if let Ok(condition) = Condition::parse(text) {
        check_condition(&condition);
    }
    // The text as an `x-ms-continuation` header: refused unless it is this query's token.
    let query = Query::parse("SELECT * FROM devices").expect("a valid query");
    let _ = query.compile(
        &Page {
            limit: 10,
            continuation: Some(text.to_string()),
        },
        Dialect::Sqlite,
    );
}

fn check_query(query: &Query) {
    let canonical = query.to_string();
    match Query::parse(&canonical) {
        Ok(again) => assert_eq!(again.to_string(), canonical, "canonical form is not stable"),
        Err(e) => assert_limit(&e, &canonical),
    }
    let first = Page {
        limit: 10,
        continuation: None,
    };
    let compiled = query
        .compile(&first, Dialect::Sqlite)
        .expect("a first page always compiles");
    assert!(!compiled.sql.is_empty());
    let last_key: Vec<String> = (0..compiled.key_columns).map(|i| format!("k{i}")).collect();
    if let Some(token) = compiled.continuation_after(1, &last_key) {
        let next = Page {
            limit: 10,
            continuation: Some(token),
        };
        if let Err(e) = query.compile(&next, Dialect::Sqlite) {
            panic!(
                "the query refuses its own continuation token: {}",
                e.message
            );
        }
    }

    let docs = match query.source() {
        Source::Devices => twins(),
        Source::DeviceJobs => vec![device_job()],
    };
    if query.is_aggregate() {
        let _ = query.aggregate(&docs);
    } else {
        for doc in &docs {
            match query.evaluate(doc) {
                None | Some(Value::Object(_)) => {}
                Some(other) => panic!("a row must be an object, got {other}"),
            }
        }
    }
    if let Some(condition) = query.condition() {
        check_condition(&condition);
    }
}

fn check_condition(condition: &Condition) {
    let canonical = condition.to_string();
    match Condition::parse(&canonical) {
        Ok(again) => assert_eq!(again.to_string(), canonical, "canonical form is not stable"),
        Err(e) => assert_limit(&e, &canonical),
    }
    let _ = condition.to_sql(Dialect::Sqlite);
    for twin in twins() {
        let _ = condition.matches(&twin);
    }
}

/// Re-parsing the canonical form may only fail on a limit: it is longer and more parenthesised.
fn assert_limit(e: &QueryError, canonical: &str) {
    assert!(
        e.message.contains("at most"),
        "canonical form {canonical:?} does not parse: {}",
        e.message
    );
}

/// Twins in the service shape, as `GET /twins/{id}` returns them.
fn twins() -> Vec<Value> {
    let full = json!({
        "deviceId": "pump-01",
        "etag": "AAAAAAAAAAE=",
        "status": "enabled",
        "connectionState": "Connected",
        "lastActivityTime": "2026-11-22T10:00:00.0000000Z",
        "$version": 4,
        "tags": {
            "site": "north", "floor": "3", "flag": true, "roles": ["a", 1, null],
            "location": {"building": "b-1", "x": 2.5, "y": -3},
            "building-name": "HQ", "from": 0,
        },
        "properties": {
            "desired": {
                "fw": "v2.10.0-rc.1", "n": 9007199254740993u64, "$version": 3,
                "$metadata": {"$lastUpdated": "2026-11-22T10:00:00.0000000Z"},
            },
            "reported": {
                "fw": "2.9.1", "temp": 21.5, "drift": -7, "error": null,
                "firmware": {"current_version": "2.9.1+build5"},
                "$version": 2,
                "$metadata": {"$lastUpdated": "2026-11-22T10:00:00.0000000Z"},
            },
        },
    });
    let bare = json!({
        "deviceId": "d",
        "status": "disabled",
        "connectionState": "Disconnected",
        "$version": 1,
        "tags": {},
        "properties": {"desired": {"$version": 1}, "reported": {"$version": 1}},
    });
    vec![full, bare]
}

/// One `devices.jobs` row.
fn device_job() -> Value {
    json!({
        "deviceId": "pump-01",
        "jobId": "job-1",
        "jobType": "scheduleDeviceMethod",
        "status": "completed",
        "startTimeUtc": "2026-11-22T10:00:00.0000000Z",
        "endTimeUtc": "2026-11-22T10:00:05.0000000Z",
        "createdDateTimeUtc": "2026-11-22T09:59:00.0000000Z",
        "lastUpdatedDateTimeUtc": "2026-11-22T10:00:05.0000000Z",
        "outcome": {"deviceMethodResponse": {"status": 200, "payload": {"ok": true, "n": 1}}},
        "error": {"code": "x", "description": "y"},
    })
}
