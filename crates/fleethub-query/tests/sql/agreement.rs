//! The two executors agree: on generated twins and generated queries, the SQL compiled for the
//! store selects exactly the devices the evaluator selects, and projections and groups match.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use fleethub_core::configuration::ConfigurationStatus;
use fleethub_query::{Condition, Page, Query};
use fleethub_store::QueryRow;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

use super::{device, insert_all, open_store, run_compiled, run_split, runtime, selected, twin};

/// Conditions that selected some devices but not all: proof the comparison is not vacuous.
static SELECTIVE: AtomicUsize = AtomicUsize::new(0);

const KEYS: &[&str] = &["a", "b", "fw", "n", "odd key"];

fn primitive() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "x",
            "y",
            "X",
            "2.9.1",
            "2.10.0",
            "v2.10.0-rc.1",
            "1.0",
            ""
        ])
        .prop_map(|s| json!(s)),
        prop::sample::select(vec![-3i64, 0, 1, 2, 100]).prop_map(|n| json!(n)),
        prop::sample::select(vec![1.5f64, -0.5, 2.25]).prop_map(|f| json!(f)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => primitive(),
        1 => (primitive(), primitive()).prop_map(|(x, y)| json!({"x": x, "y": y})),
        1 => prop::collection::vec(primitive(), 0..3).prop_map(Value::Array),
    ]
}

fn object() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), value()), 0..5).prop_map(|pairs| {
        let mut m = Map::new();
        for (k, v) in pairs {
            m.insert(k.to_string(), v);
        }
        Value::Object(m)
    })
}

fn path() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "tags.a",
        "tags.b",
        "tags.fw",
        "tags.n",
        "tags.[[odd key]]",
        "tags.a.x",
        "tags.b.y",
        "properties.desired.a",
        "properties.desired.n",
        "properties.reported.fw",
        "properties.reported.n",
        "properties.reported.b.x",
        "properties.reported.a",
        "deviceId",
        "status",
        "connectionState",
        "$version",
        "properties.desired.$version",
        "lastActivityTime",
        "tags.missing",
        "tags",
        "properties.reported.$version",
        "configurations.[[cfg-1]].status",
        "configurations.p2.status",
        "configurations.[[cfg-1]]",
        "configurations",
    ])
    .prop_map(String::from)
}

fn constant() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "'x'",
        "'y'",
        "'X'",
        "'2.9.1'",
        "'2.10.0'",
        "'1.0'",
        "''",
        "-3",
        "0",
        "1",
        "2",
        "100",
        "1.5",
        "-0.5",
        "2.25",
        "true",
        "false",
        "null",
        "undefined",
        "[1, 'x']",
        "'d01'",
        "'Connected'",
        "'enabled'",
        "7",
        "5",
        "0x2",
        "'Applied'",
        "'Targeted'",
    ])
    .prop_map(String::from)
}

fn operand() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => path(),
        3 => constant(),
        1 => (path(), prop::sample::select(vec!["+", "-", "*", "/", "%"]), constant())
            .prop_map(|(p, op, c)| format!("({p} {op} {c})")),
        1 => (prop::sample::select(vec!["LOWER", "UPPER", "LENGTH", "ABS", "CEILING", "FLOOR",
                                        "ROUND", "SEMVER", "-", "SIGN", "SQUARE", "SQRT", "EXP",
                                        "AS_NUMBER"]), path())
            .prop_map(|(f, p)| format!("{f}({p})")),
        1 => (path(), constant()).prop_map(|(p, c)| format!("POWER({p}, {c})")),
        1 => (path(), constant()).prop_map(|(p, c)| format!("CONCAT({p}, {c})")),
        1 => (path(), constant(), constant())
            .prop_map(|(p, s, l)| format!("SUBSTRING({p}, {s}, {l})")),
    ]
}

fn list() -> impl Strategy<Value = String> {
    prop::collection::vec(
        constant().prop_filter("no undefined", |c| c != "undefined"),
        0..4,
    )
    .prop_map(|items| format!("[{}]", items.join(", ")))
}

fn atom() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec!["=", "!=", "<>", "<", ">", "<=", ">="]);
    prop_oneof![
        5 => (operand(), op.clone(), operand()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        2 => (path(), prop::sample::select(vec!["IN", "NIN"]), list())
            .prop_map(|(p, o, l)| format!("{p} {o} {l}")),
        2 => (prop::sample::select(vec!["IS_DEFINED", "IS_NULL", "IS_STRING", "IS_NUMBER",
                                        "IS_BOOL", "IS_OBJECT", "IS_ARRAY", "IS_PRIMITIVE"]),
              operand())
            .prop_map(|(f, a)| format!("{f}({a})")),
        2 => (prop::sample::select(vec!["STARTSWITH", "ENDSWITH", "CONTAINS", "INDEX_OF"]),
              path(), constant())
            .prop_map(|(f, p, c)| if f == "INDEX_OF" {
                format!("{f}({p}, {c}) >= 0")
            } else {
                format!("{f}({p}, {c})")
            }),
        2 => (path(), op.clone(), prop::sample::select(vec!["'2.9.1'", "'2.10.0'", "'v2'",
                                                             "'2.10.0-rc.1'", "'bad'"]))
            .prop_map(|(p, o, v)| format!("SEMVER({p}) {o} {v}")),
        1 => (path(), op, path()).prop_map(|(p, o, q)| format!("SEMVER({p}) {o} SEMVER({q})")),
        1 => (path(), prop::sample::select(vec!["IN", "NIN"]))
            .prop_map(|(p, o)| format!("SEMVER({p}) {o} ['2.9.1', 'v2.10']")),
        1 => path(),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    atom().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

#[derive(Debug, Clone)]
struct Fleet {
    twins: Vec<(Value, Value, Value, bool, Statuses)>,
    conditions: Vec<String>,
}

fn fleet() -> impl Strategy<Value = Fleet> {
    (
        prop::collection::vec(
            (object(), object(), object(), any::<bool>(), statuses()),
            20..40,
        ),
        prop::collection::vec(condition(), 30),
    )
        .prop_map(|(twins, conditions)| Fleet { twins, conditions })
}

/// A twin's `configurations.{id}.status`, by configuration id.
type Statuses = BTreeMap<&'static str, ConfigurationStatus>;

fn statuses() -> impl Strategy<Value = Statuses> {
    prop::collection::btree_map(
        prop::sample::select(vec!["cfg-1", "p2"]),
        prop::sample::select(vec![
            ConfigurationStatus::Targeted,
            ConfigurationStatus::Applied,
        ]),
        0..3,
    )
}

fn projection_rows(rows: Vec<QueryRow>) -> Vec<Value> {
    rows.into_iter()
        .map(|r| match r {
            QueryRow::Document(d) => d,
            other => panic!("projection returned a row {other:?}"),
        })
        .collect()
}

const PROJECTION: &str = "SELECT deviceId, tags.a, properties.reported.fw AS fw, \
    LOWER(tags.b) AS lb, tags.n + 1 AS inc, SEMVER(properties.reported.fw) AS sv, \
    properties.desired, tags, IS_NUMBER(tags.n) AS isnum, $version, configurations.[[cfg-1]].status AS cfg, \
    configurations FROM devices WHERE ";

const GROUPED: &str = "SELECT tags.a AS a, COUNT() AS n, SUM(properties.reported.n) AS s, \
    AVG(tags.n) AS av, MIN(tags.b) AS lo, MAX(properties.desired.n) AS hi FROM devices WHERE ";

/// Aggregates without GROUP BY: one row, even over no devices.
const TOTALS: &str = "SELECT COUNT() AS n, SUM(tags.n) AS s, MIN(properties.reported.n) AS lo, \
    MAX(tags.n) AS hi, AVG(properties.desired.n) AS av FROM devices WHERE ";

/// Two GROUP BY keys and TOP: the merge orders the groups and cuts them as SQL does.
const TOP_GROUPS: &str = "SELECT TOP 3 tags.b AS b, properties.reported.fw AS fw, COUNT() AS n, \
    SUM(tags.n) AS s, MIN(tags.n) AS lo FROM devices WHERE ";

/// Parses `text`, runs its first page (up to 1,000 rows) in the store, and returns the query
/// with the rows as documents.
fn run_text(
    rt: &tokio::runtime::Runtime,
    store: &fleethub_store::Store,
    text: &str,
) -> Result<(Query, Vec<Value>), TestCaseError> {
    run_text_with(rt, store, text, false)
}

/// [`run_text`] for an aggregate, run split over two connections and merged.
fn run_text_split(
    rt: &tokio::runtime::Runtime,
    store: &fleethub_store::Store,
    text: &str,
) -> Result<(Query, Vec<Value>), TestCaseError> {
    run_text_with(rt, store, text, true)
}

fn run_text_with(
    rt: &tokio::runtime::Runtime,
    store: &fleethub_store::Store,
    text: &str,
    split: bool,
) -> Result<(Query, Vec<Value>), TestCaseError> {
    let q = Query::parse(text).map_err(|e| TestCaseError::fail(e.rendered))?;
    let page = Page {
        limit: 1000,
        continuation: None,
    };
    let compiled = q
        .compile(&page, store.dialect())
        .map_err(|e| TestCaseError::fail(e.rendered))?;
    if split && compiled.split.is_none() {
        return Err(TestCaseError::fail(format!(
            "{text}: not compiled for a split scan"
        )));
    }
    let rows = if split {
        rt.block_on(run_split(store, compiled))
    } else {
        rt.block_on(run_compiled(store, compiled))
    };
    let rows = rows.map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok((q, projection_rows(rows.rows)))
}

fn check_fleet(f: Fleet) -> Result<(), TestCaseError> {
    let rows: Vec<_> = f
        .twins
        .iter()
        .enumerate()
        .map(|(i, (t, d, r, _, _))| device(&format!("d{i:02}"), t.clone(), d.clone(), r.clone()))
        .collect();
    let connected: HashSet<String> = rows
        .iter()
        .zip(&f.twins)
        .filter(|(_, t)| t.3)
        .map(|(r, _)| r.device_id.clone())
        .collect();
    let docs: Vec<Value> = rows
        .iter()
        .zip(&f.twins)
        .map(|(r, t)| {
            let mut doc = twin(r, connected.contains(&r.device_id));
            if !t.4.is_empty() {
                let configurations: Map<String, Value> =
                    t.4.iter()
                        .map(|(id, s)| (id.to_string(), json!({ "status": s.as_str() })))
                        .collect();
                doc["configurations"] = Value::Object(configurations);
            }
            doc
        })
        .collect();
    let statuses: Vec<(String, Statuses)> = rows
        .iter()
        .zip(&f.twins)
        .map(|(r, t)| (r.device_id.clone(), t.4.clone()))
        .collect();
    let rt = runtime();
    let (store, _dir) = open_store(connected);
    rt.block_on(insert_all(&store, rows));
    rt.block_on(store.write(move |tx| {
        for (device, statuses) in &statuses {
            for (id, status) in statuses {
                tx.set_device_configuration(id, device, *status)?;
            }
        }
        Ok::<_, fleethub_store::StoreError>(())
    }))
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (i, text) in f.conditions.iter().enumerate() {
        let cond = Condition::parse(text).map_err(|e| TestCaseError::fail(e.rendered))?;
        let expected: BTreeSet<String> = docs
            .iter()
            .filter(|d| cond.matches(d))
            .map(|d| d["deviceId"].as_str().unwrap_or_default().to_string())
            .collect();
        let sql_text = cond.to_sql(store.dialect()).sql;
        let got: BTreeSet<String> = rt
            .block_on(selected(&store, &cond))
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}\n{sql_text}")))?
            .into_iter()
            .collect();
        prop_assert_eq!(&got, &expected, "condition {}\nsql {}", text, sql_text);
        if !expected.is_empty() && expected.len() < docs.len() {
            SELECTIVE.fetch_add(1, Ordering::Relaxed);
        }

        // Projections and groups for a few of the conditions.
        if i % 5 == 0 {
            let (q, rows) = run_text(&rt, &store, &format!("{PROJECTION}{text}"))?;
            let expected: Vec<Value> = docs.iter().filter_map(|d| q.evaluate(d)).collect();
            prop_assert_eq!(rows, expected, "projection where {}", text);

            let grouped = format!("{GROUPED}{text} GROUP BY tags.a");
            let (g, rows) = run_text(&rt, &store, &grouped)?;
            prop_assert_eq!(&rows, &g.aggregate(&docs), "groups where {}", text);
            let (_, split) = run_text_split(&rt, &store, &grouped)?;
            prop_assert_eq!(&split, &rows, "split groups where {}", text);
        }
        // The split path (two parts, merged) for more shapes of aggregate.
        if i % 5 == 1 {
            for shape in [
                format!("{TOTALS}{text}"),
                format!("{TOP_GROUPS}{text} GROUP BY tags.b, properties.reported.fw"),
            ] {
                let (g, rows) = run_text(&rt, &store, &shape)?;
                prop_assert_eq!(&rows, &g.aggregate(&docs), "{}", shape);
                let (_, split) = run_text_split(&rt, &store, &shape)?;
                prop_assert_eq!(&split, &rows, "split {}", shape);
            }
        }
    }
    store.close();
    Ok(())
}

#[test]
fn sql_and_evaluator_select_the_same_devices() {
    let cases = std::env::var("FLEETHUB_QUERY_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&fleet(), check_fleet)
        .unwrap_or_else(|e| panic!("{e}"));
    let selective = SELECTIVE.load(Ordering::Relaxed);
    assert!(
        selective >= cases as usize * 3,
        "only {selective} generated conditions split the fleet"
    );
}
