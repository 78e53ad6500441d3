//! Parser snapshots: canonical renderings of valid queries, caret errors for invalid ones.

use crate::{Condition, Query};

fn render_all(queries: &[&str]) -> String {
    let mut out = String::new();
    for q in queries {
        let result = match Query::parse(q) {
            Ok(parsed) => format!("ok: {parsed}"),
            Err(e) => format!("error:\n{}", e.rendered),
        };
        out.push_str(&format!("--- {q}\n{result}\n\n"));
    }
    out
}

#[test]
fn valid_queries_parse_to_their_canonical_form() {
    insta::assert_snapshot!(render_all(&[
        "SELECT * FROM devices",
        "select * from devices where tags.location.building = 'B1' and properties.reported.temp > 20.5",
        "SELECT TOP 10 deviceId, tags.[[odd key]] AS odd, properties.desired.$version FROM devices",
        "SELECT * FROM devices WHERE tags.a = 1 OR NOT tags.x = 2 AND tags.y <> 3",
        "SELECT * FROM devices WHERE tags.x = 1 + 2 * 3 - -4 % 5 / 6",
        "SELECT * FROM devices WHERE deviceId IN ['a', \"b\"] AND tags.n NIN [1, 0x1F, 2.5e3, true, null, [1, 'x']]",
        "SELECT * FROM devices WHERE SEMVER(properties.reported.firmware.current_version) < '2.10.0'",
        "SELECT * FROM devices WHERE is_defined(tags.x) AND StartsWith(deviceId, 'dev-') AND LENGTH(CONCAT(tags.a, 'x', tags.b)) >= 3",
        "SELECT * FROM devices WHERE configurations.[[cfg-1]].status = 'Applied' AND tags.[[from]] = 'x'",
        "SELECT * FROM devices WHERE connectionState = 'Connected' AND lastActivityTime > '2024-01-01' AND $version >= 2",
        "SELECT COUNT() AS n, tags.site FROM devices GROUP BY tags.site",
        "SELECT properties.reported.fw, COUNT(*), AVG(properties.reported.temp) AS avgTemp FROM devices GROUP BY properties.reported.fw",
        "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'job1' AND status = 'completed'",
        "SELECT deviceId, outcome.deviceMethodResponse.status AS code FROM devices.jobs WHERE error.code = 404",
        "SELECT * FROM devices WHERE tags.s = 'it\\'s \\u00e9\\n' AND tags.t = \"q\\\"\\\\\"",
        "SELECT LOWER(deviceId), UPPER(status), tags.a + 1 FROM devices",
        "SELECT * FROM devices\nWHERE\n  (tags.a = 1 OR tags.b = 2)\n  AND tags.c = undefined",
    ]));
}

/// Found by an hour of fuzzing (fuzz/seeds/query/crash_string_alias_written_back_bare): an alias
/// given as a string that is not a plain name was written back bare, and the canonical form of
/// `SELECT LENGTH(deviceId) AS ', "d"] OR ...'` no longer parsed.
#[test]
fn an_alias_that_is_not_a_plain_name_is_written_back_quoted() {
    for q in [
        "SELECT deviceId AS 'two words' FROM devices",
        "SELECT LENGTH(deviceId) AS ', \"d\"] OR deviceId IN [1' FROM devices",
        "SELECT deviceId AS 'select' FROM devices",
        "SELECT deviceId AS 'it\\'s' FROM devices",
        "SELECT deviceId AS '9lives' FROM devices",
        "SELECT COUNT() AS 'a\tb' FROM devices",
    ] {
        let parsed = Query::parse(q).unwrap();
        let canonical = parsed.to_string();
        let again = Query::parse(&canonical)
            .unwrap_or_else(|e| panic!("{canonical:?} does not parse: {}", e.message));
        assert_eq!(again.select, parsed.select, "{q} -> {canonical}");
        assert_eq!(again.to_string(), canonical);
    }
    assert_eq!(
        Query::parse("SELECT deviceId AS 'plain' FROM devices")
            .unwrap()
            .to_string(),
        "SELECT deviceId AS plain FROM devices",
        "a string alias that is a plain name is written as one"
    );
}

#[test]
fn invalid_queries_point_at_the_mistake() {
    insta::assert_snapshot!(render_all(&[
        "SELECT * WHERE tags.x = 1",
        "SELECT * FROM devices WHERE foo.bar = 1",
        "SELECT * FROM devices WHERE properties.wanted.x = 1",
        "SELECT * FROM devices WHERE tags.x = 'open",
        "SELECT * FROM devices WHERE tags.x = 'bad \\q escape'",
        "SELECT * FROM devices WHERE STARTSWITH(deviceId) = true",
        "SELECT * FROM devices WHERE NOSUCH(deviceId)",
        "SELECT * FROM devices WHERE tags.x IN 'a'",
        "SELECT * FROM devices WHERE tags.x = 12abc",
        "SELECT * FROM devices WHERE tags.[[open = 1",
        "SELECT * FROM devices WHERE tags.x = 1 ORDER BY deviceId",
        "SELECT * FROM devices.modules",
        "SELECT * FROM devices WHERE COUNT() > 1",
        "SELECT deviceId, COUNT() FROM devices",
        "SELECT * FROM devices GROUP BY tags.a",
        "SELECT tags.a, tags.a FROM devices",
        "SELECT TOP -1 * FROM devices",
        "SELECT * FROM devices WHERE jobId = 'x'",
        "SELECT * FROM devices.jobs WHERE tags.x = 1",
        "SELECT * FROM devices WHERE tags.x = 1 AND",
        "SELECT * FROM devices\nWHERE tags.x = 1\n  AND tags.y = # 2",
        "SELECT * FROM devices WHERE tags.x = 'é' AND ) ",
        "",
    ]));
}

#[test]
fn conditions_accept_star_where_and_device_lists() {
    assert_eq!(Condition::parse("*").unwrap().to_string(), "*");
    assert_eq!(
        Condition::parse("deviceId IN ['a','b']")
            .unwrap()
            .to_string(),
        "(deviceId IN ['a', 'b'])"
    );
    assert_eq!(
        Condition::parse("WHERE tags.x = 1").unwrap().to_string(),
        "(tags.x = 1)"
    );
    let e = Condition::parse("tags.x = ").unwrap_err();
    assert_eq!((e.line, e.column), (1, 10));
    assert_eq!(e.found, "end of query");
}

#[test]
fn a_condition_names_every_path_it_reads_with_roots_spelled_canonically() {
    let c = Condition::parse(
        "TAGS.product = 'aq' AND (SEMVER(Properties.Reported.firmware.current_version) < '2.1.0' \
         OR NOT IS_DEFINED(properties.desired.x)) AND $version + 1 > LENGTH(deviceId)",
    )
    .unwrap();
    let paths: Vec<String> = c.paths().iter().map(|p| p.join(".")).collect();
    assert_eq!(
        paths,
        [
            "tags.product",
            "properties.reported.firmware.current_version",
            "properties.desired.x",
            "$version",
            "deviceId"
        ]
    );
    assert!(Condition::parse("*").unwrap().paths().is_empty());
    assert!(Condition::parse("1 = 1").unwrap().paths().is_empty());
}

#[test]
fn arbitrary_text_never_panics_the_parser() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 2000,
        ..Default::default()
    });
    let pieces = prop::collection::vec(
        prop::sample::select(vec![
            "SELECT ",
            "* ",
            "FROM ",
            "devices",
            ".jobs",
            " WHERE ",
            "tags",
            ".",
            "[[",
            "]]",
            "x",
            "'s",
            "\"",
            "\\",
            "\\u12",
            "0x",
            "1e",
            "9",
            "(",
            ")",
            "[",
            "]",
            ",",
            "=",
            "<",
            "NOT ",
            "IN ",
            "AND ",
            "é",
            "\n",
            "\t",
            "SEMVER(",
            "COUNT(",
            " GROUP BY ",
            "-",
        ]),
        0..24,
    );
    runner
        .run(&pieces, |parts| {
            let text: String = parts.concat();
            let _ = Query::parse(&text);
            let _ = Condition::parse(&text);
            Ok(())
        })
        .unwrap();
}
