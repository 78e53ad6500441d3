//! Configurations driven by hand: the job engine and the change-feed follower are stepped by
//! the test (no background tasks), with a manual clock.

use crate::{Hub, HubConfig, JobsConfig};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use fleethub_core::{ErrorCode, ManualClock};
use fleethub_store::{JobReads, JobStatus, Store, StoreConfig};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tempfile::TempDir;

struct Fixture {
    hub: Hub,
    clock: ManualClock,
    _dir: TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("hub.db"))).unwrap();
    let t0: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
    let clock = ManualClock::new(t0);
    let config = HubConfig {
        jobs: JobsConfig {
            autorun: false,
            ..JobsConfig::default()
        },
        ..HubConfig::default()
    };
    let hub = Hub::open(store, Arc::new(clock.clone()), config)
        .await
        .unwrap();
    Fixture {
        hub,
        clock,
        _dir: dir,
    }
}

impl Fixture {
    async fn device(&self, id: &str, tags: Value) {
        self.hub
            .put_device(id, json!({ "deviceId": id }), None)
            .await
            .unwrap();
        self.tags(id, tags).await;
    }

    async fn tags(&self, id: &str, tags: Value) {
        self.hub
            .update_twin(id, json!({ "tags": tags }), None)
            .await
            .unwrap();
    }

    /// Runs every operation and the follower until nothing is left to do.
    async fn settle(&self) {
        loop {
            self.hub.job_engine().run_until_idle().await.unwrap();
            if !self.hub.follow_configurations().await.unwrap() {
                return;
            }
        }
    }

    async fn put(&self, id: &str, body: Value) -> crate::Configuration {
        self.clock.advance(ChronoDuration::seconds(1));
        self.hub.put_configuration(id, &body, None).await.unwrap().0
    }

    async fn desired(&self, id: &str) -> Value {
        let twin = self.hub.get_twin(id).await.unwrap();
        Value::Object(twin.desired.values)
    }

    async fn version(&self, id: &str) -> u64 {
        self.hub.get_twin(id).await.unwrap().version
    }

    async fn counts(&self, id: &str) -> (u64, u64) {
        let c = self.hub.get_configuration(id).await.unwrap();
        let r = &c.system_metrics.results;
        (r["targetedCount"], r["appliedCount"])
    }

    async fn selected(&self, query: &str) -> Vec<String> {
        let page = self.hub.query(query, None, None).await.unwrap();
        page.items
            .iter()
            .map(|i| match i {
                crate::query::QueryItem::Twin(t) => t.device.device_id.clone(),
                other => panic!("not a twin row: {other:?}"),
            })
            .collect()
    }
}

fn config(target: &str, priority: u32, content: Value) -> Value {
    json!({
        "content": { "deviceContent": content },
        "targetCondition": target,
        "priority": priority,
    })
}

#[tokio::test]
async fn highest_priority_wins_per_path_and_a_leaving_twin_gets_the_next_ones() {
    let f = fixture().await;
    f.device("d1", json!({"env": "prod"})).await;
    f.device("d2", json!({"env": "dev"})).await;
    f.device("d3", json!({"env": "prod", "region": "eu"})).await;
    let low = json!({"properties.desired.interval": 60, "properties.desired.mode": "eco"});
    f.put("low", config("tags.env = 'prod'", 1, low)).await;
    f.settle().await;
    assert_eq!(
        f.desired("d1").await,
        json!({"interval": 60, "mode": "eco"})
    );
    assert_eq!(f.desired("d2").await, json!({}));
    assert_eq!(f.counts("low").await, (2, 2));

    let high = json!({"properties.desired.interval": 10});
    f.put("high", config("tags.region = 'eu'", 5, high)).await;
    f.settle().await;
    assert_eq!(
        f.desired("d3").await,
        json!({"interval": 10, "mode": "eco"})
    );
    assert_eq!(
        f.desired("d1").await,
        json!({"interval": 60, "mode": "eco"})
    );
    assert_eq!(f.counts("high").await, (1, 1));
    assert_eq!(
        f.selected("SELECT * FROM devices WHERE configurations.[[high]].status = 'Applied'")
            .await,
        vec!["d3"]
    );

    // d3 leaves high's target: it gets low's interval back, and no longer carries high.
    f.tags("d3", json!({"region": "us"})).await;
    f.settle().await;
    assert_eq!(
        f.desired("d3").await,
        json!({"interval": 60, "mode": "eco"})
    );
    assert_eq!(f.counts("high").await, (0, 0));

    // Deleting low removes its settings everywhere, and it goes for good.
    f.hub.delete_configuration("low", None).await.unwrap();
    f.settle().await;
    assert_eq!(f.desired("d1").await, json!({}));
    assert_eq!(f.desired("d3").await, json!({}));
    let err = f.hub.get_configuration("low").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigurationNotFound);
    assert!(f
        .selected("SELECT * FROM devices WHERE IS_DEFINED(configurations.[[low]])")
        .await
        .is_empty());
    // The id is free again.
    f.put("low", config("*", 1, json!({"properties.desired.x": 1})))
        .await;
}

#[tokio::test]
async fn a_tie_goes_to_the_newest_and_the_loser_is_only_targeted() {
    let f = fixture().await;
    f.device("d1", json!({})).await;
    f.put("older", config("*", 3, json!({"properties.desired.x": 1})))
        .await;
    f.put("newer", config("*", 3, json!({"properties.desired.x": 2})))
        .await;
    f.settle().await;
    assert_eq!(f.desired("d1").await, json!({"x": 2}));
    assert_eq!(f.counts("older").await, (1, 0));
    assert_eq!(f.counts("newer").await, (1, 1));
    assert_eq!(
        f.selected("SELECT * FROM devices WHERE configurations.[[older]].status = 'Targeted'")
            .await,
        vec!["d1"]
    );
}

#[tokio::test]
async fn select_star_rows_carry_the_configurations_a_twin_read_shows() {
    let f = fixture().await;
    f.device("d1", json!({"env": "prod"})).await;
    f.device("d2", json!({"env": "dev"})).await;
    f.put("older", config("*", 3, json!({"properties.desired.x": 1})))
        .await;
    f.put(
        "newer",
        config("tags.env = 'prod'", 3, json!({"properties.desired.x": 2})),
    )
    .await;
    f.settle().await;
    let page = f
        .hub
        .query("SELECT * FROM devices", None, None)
        .await
        .unwrap();
    let rows: Vec<_> = page
        .items
        .iter()
        .map(|i| match i {
            crate::query::QueryItem::Twin(t) => t,
            other => panic!("not a twin row: {other:?}"),
        })
        .collect();
    assert_eq!(rows.len(), 2);
    use fleethub_core::configuration::ConfigurationStatus::{Applied, Targeted};
    let statuses = |t: &crate::Twin| t.configurations.clone().into_iter().collect::<Vec<_>>();
    assert_eq!(
        statuses(rows[0]),
        vec![
            ("newer".to_string(), Applied),
            ("older".to_string(), Targeted)
        ]
    );
    assert_eq!(statuses(rows[1]), vec![("older".to_string(), Applied)]);
    for row in rows {
        let read = f.hub.get_twin(&row.device.device_id).await.unwrap();
        assert_eq!(row.configurations, read.configurations);
    }
}

#[tokio::test]
async fn applying_again_patches_nothing() {
    let f = fixture().await;
    f.device("d1", json!({"env": "prod"})).await;
    let c = f
        .put(
            "c",
            config("tags.env = 'prod'", 1, json!({"properties.desired.x": 1})),
        )
        .await;
    f.settle().await;
    let version = f.version("d1").await;
    // A priority change re-applies to every targeted twin: nothing to change.
    let mut body = config("tags.env = 'prod'", 2, json!({"properties.desired.x": 1}));
    body["id"] = json!("c");
    f.hub
        .put_configuration("c", &body, Some(&c.etag))
        .await
        .unwrap();
    f.settle().await;
    assert_eq!(f.version("d1").await, version);
    // A twin change re-evaluates the twin: still nothing to change.
    f.hub
        .device_report("d1", br#"{"fw": "1.0.0"}"#)
        .await
        .unwrap();
    f.settle().await;
    assert_eq!(f.version("d1").await, version + 1, "only the report");
}

#[tokio::test]
async fn a_twin_changed_after_its_batch_was_planned_is_planned_again_on_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("hub.db"))).unwrap();
    let clock = ManualClock::new("2026-03-01T12:00:00Z".parse().unwrap());
    let settings = HubConfig {
        jobs: JobsConfig {
            autorun: false,
            twin_batch: 1,
            twin_batches_per_step: 1,
            ..JobsConfig::default()
        },
        ..HubConfig::default()
    };
    let hub = Hub::open(store, Arc::new(clock.clone()), settings)
        .await
        .unwrap();
    let f = Fixture {
        hub,
        clock,
        _dir: dir,
    };
    for id in ["d1", "d2", "d3", "d4"] {
        f.device(id, json!({"env": "prod"})).await;
    }
    f.put(
        "c",
        config("tags.env = 'prod'", 1, json!({"properties.desired.x": 1})),
    )
    .await;
    // One engine step starts the operation and applies it to d1 only.
    f.hub.job_engine().step().await.unwrap();
    let doc = f
        .hub
        .store()
        .read(|r| r.unfinished_jobs(&[JobStatus::Running]))
        .await
        .unwrap()
        .iter()
        .map(|row| crate::jobs::JobDocument::from_row(row).unwrap())
        .find(|d| d.job_type == crate::jobs::JobType::ApplyConfigurations)
        .expect("the configuration's operation");
    let prepared = super::apply::prepare(&f.hub, &doc, String::new(), 10)
        .await
        .unwrap();
    let versions = [
        f.version("d2").await,
        f.version("d3").await,
        f.version("d4").await,
    ];
    let seq = f.hub.last_event_seq().await.unwrap();
    let conflicts = f.hub.metrics().write_conflicts.load(Ordering::Relaxed);
    // After the batch was read and planned: d2 leaves the target, d3 gets another setting.
    f.tags("d2", json!({"env": "dev"})).await;
    f.hub
        .update_twin("d3", json!({"properties": {"desired": {"y": 2}}}), None)
        .await
        .unwrap();
    super::apply::commit(&f.hub, &doc, prepared).await.unwrap();

    assert_eq!(f.desired("d2").await, json!({}), "planned x=1, but it left");
    assert_eq!(f.desired("d3").await, json!({"x": 1, "y": 2}), "y kept");
    assert_eq!(f.desired("d4").await, json!({"x": 1}));
    let after = [
        f.version("d2").await,
        f.version("d3").await,
        f.version("d4").await,
    ];
    assert_eq!(after, [versions[0] + 1, versions[1] + 2, versions[2] + 1]);
    let redone = f.hub.metrics().write_conflicts.load(Ordering::Relaxed) - conflicts;
    assert_eq!(redone, 2, "d2 and d3 planned again, d4 written as planned");
    // The batch recorded one change, not one per twin.
    let page = f.hub.events_after(seq, 100).await.unwrap();
    let kinds: Vec<&str> = page.events.iter().map(|e| e.kind.as_str()).collect();
    assert!(!kinds.contains(&"twin.configured"), "{kinds:?}");
    let batch: Vec<_> = page
        .events
        .iter()
        .filter(|e| e.kind == "twins.configured")
        .collect();
    assert_eq!(batch.len(), 1, "{kinds:?}");
    assert_eq!(batch[0].body["configured"], json!(2));
    assert_eq!(batch[0].body["firstDeviceId"], json!("d2"));
    assert_eq!(batch[0].body["lastDeviceId"], json!("d4"));

    // Whatever runs next patches none of them again, and the counts agree.
    f.settle().await;
    let settled = [
        f.version("d2").await,
        f.version("d3").await,
        f.version("d4").await,
    ];
    assert_eq!(settled, after);
    assert_eq!(f.counts("c").await, (3, 3));
}

#[tokio::test]
async fn etags_ids_and_immutable_content_are_enforced() {
    let f = fixture().await;
    let body = config("*", 1, json!({"properties.desired.x": 1}));
    let created = f.put("c", body.clone()).await;
    let err = f.hub.put_configuration("c", &body, None).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigurationAlreadyExists);
    let err = f
        .hub
        .put_configuration("c", &body, Some("\"AAAAAAAAAAk=\""))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PreconditionFailed);
    let changed = config("*", 1, json!({"properties.desired.x": 2}));
    let err = f
        .hub
        .put_configuration("c", &changed, Some(&created.etag))
        .await
        .unwrap_err();
    assert!(err.message.contains("cannot change"), "{}", err.message);
    let mut relabeled = body.clone();
    relabeled["labels"] = json!({"team": "ops"});
    let (updated, _) = f
        .hub
        .put_configuration("c", &relabeled, Some(&format!("\"{}\"", created.etag)))
        .await
        .unwrap();
    assert_ne!(updated.etag, created.etag);
    assert_eq!(updated.labels["team"], "ops");
    let err = f
        .hub
        .delete_configuration("c", Some(&created.etag))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PreconditionFailed);
    let err = f
        .hub
        .put_configuration("Bad Id", &body, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidDeviceId);
    let err = f.hub.delete_configuration("nope", None).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigurationNotFound);
    f.hub
        .delete_configuration("c", Some(&updated.etag))
        .await
        .unwrap();
}

#[tokio::test]
async fn custom_metrics_count_what_twins_hold_now() {
    let f = fixture().await;
    for (id, fw) in [("d1", "1.8.0"), ("d2", "1.10.0"), ("d3", "2.0.0")] {
        f.device(id, json!({})).await;
        let report = format!(r#"{{"firmware": {{"current_version": "{fw}"}}}}"#);
        f.hub.device_report(id, report.as_bytes()).await.unwrap();
    }
    let mut body = config("*", 1, json!({"properties.desired.x": 1}));
    body["metrics"] = json!({"queries": {"old": "SELECT deviceId FROM devices WHERE \
        SEMVER(properties.reported.firmware.current_version) < '1.9.0'"}});
    f.put("c", body).await;
    let c = f.hub.get_configuration("c").await.unwrap();
    assert_eq!(c.metrics.results["old"], 1);
    f.hub
        .device_report("d3", br#"{"firmware": {"current_version": "1.0.0"}}"#)
        .await
        .unwrap();
    let c = f.hub.get_configuration("c").await.unwrap();
    assert_eq!(c.metrics.results["old"], 2, "read-your-writes");
}

/// Targeted count and custom metrics of `id`, read as a client reads them, and read again
/// with the count cache emptied (a scan of every twin): both must agree.
async fn metrics_and_scan(f: &Fixture, id: &str) -> Vec<u64> {
    let read = |c: crate::Configuration| {
        let mut out = vec![c.system_metrics.results["targetedCount"]];
        out.extend(c.metrics.results.values().copied());
        out
    };
    let kept = read(f.hub.get_configuration(id).await.unwrap());
    f.hub.configurations_state().counts.lock().clear();
    let scanned = read(f.hub.get_configuration(id).await.unwrap());
    assert_eq!(
        kept, scanned,
        "counts kept from the change feed = a fresh scan"
    );
    // Read once more so that the next read starts from a kept entry again.
    f.hub.get_configuration(id).await.unwrap();
    kept
}

#[tokio::test]
async fn a_read_right_after_a_change_sees_it() {
    let f = fixture().await;
    for i in 0..6 {
        let city = if i % 2 == 0 { "boston" } else { "denver" };
        f.device(&format!("d{i}"), json!({ "city": city })).await;
    }
    let mut body = config(
        "tags.city = 'boston'",
        1,
        json!({"properties.desired.x": 1}),
    );
    body["metrics"] = json!({"queries": {
        "hot": "SELECT deviceId FROM devices WHERE tags.city = 'boston' AND \
            properties.reported.t > 40",
        "set": "SELECT deviceId FROM devices WHERE properties.desired.x = 1",
    }});
    f.put("c", body).await;
    // [targetedCount, hot, set]
    assert_eq!(metrics_and_scan(&f, "c").await, [3, 0, 0]);
    f.settle().await;
    assert_eq!(
        metrics_and_scan(&f, "c").await,
        [3, 0, 3],
        "the configuration's own writes count for a metric over desired properties"
    );
    f.hub.device_report("d0", br#"{"t": 50}"#).await.unwrap();
    assert_eq!(
        f.hub.get_configuration("c").await.unwrap().metrics.results["hot"],
        1
    );
    f.tags("d1", json!({"city": "boston"})).await;
    assert_eq!(
        metrics_and_scan(&f, "c").await,
        [4, 1, 3],
        "a twin entering"
    );
    f.tags("d0", json!({"city": "denver"})).await;
    assert_eq!(metrics_and_scan(&f, "c").await, [3, 0, 3], "a twin leaving");
    f.hub.delete_device("d2", None).await.unwrap();
    assert_eq!(
        metrics_and_scan(&f, "c").await,
        [2, 0, 2],
        "a device deleted"
    );
    f.device("d9", json!({"city": "boston"})).await;
    assert_eq!(
        metrics_and_scan(&f, "c").await,
        [3, 0, 2],
        "a device created"
    );
    f.settle().await;
    assert_eq!(metrics_and_scan(&f, "c").await, [3, 0, 3]);
}

#[tokio::test]
async fn targets_over_reported_properties_see_them_beside_targets_over_tags() {
    let f = fixture().await;
    f.device("d1", json!({"env": "prod"})).await;
    f.device("d2", json!({"env": "prod"})).await;
    f.hub
        .device_report("d1", br#"{"fw": "1.0"}"#)
        .await
        .unwrap();
    f.hub
        .device_report("d2", br#"{"fw": "2.0"}"#)
        .await
        .unwrap();
    // Alone, a target over tags is planned without the reported section.
    f.put(
        "tags",
        config("tags.env = 'prod'", 1, json!({"properties.desired.x": 1})),
    )
    .await;
    f.settle().await;
    assert_eq!(f.desired("d1").await, json!({"x": 1}));
    assert_eq!(f.desired("d2").await, json!({"x": 1}));
    // A target over reported properties next to it: both are decided on the whole twin.
    let by_fw = config(
        "properties.reported.fw = '1.0'",
        2,
        json!({"properties.desired.y": 2}),
    );
    f.put("fw", by_fw).await;
    f.settle().await;
    assert_eq!(f.desired("d1").await, json!({"x": 1, "y": 2}));
    assert_eq!(f.desired("d2").await, json!({"x": 1}));
    f.hub
        .device_report("d2", br#"{"fw": "1.0"}"#)
        .await
        .unwrap();
    f.settle().await;
    assert_eq!(
        f.desired("d2").await,
        json!({"x": 1, "y": 2}),
        "a report moves it in"
    );
    assert_eq!(f.counts("fw").await, (2, 2));
    assert_eq!(f.counts("tags").await, (2, 2));
}
