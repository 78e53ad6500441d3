//! The driver's pure parts.
use super::*;
use serde_json::json;

#[tokio::test]
async fn a_device_task_stays_small() {
    let spec = DeviceSpec {
        device_id: "d".into(),
        key: "a2V5".into(),
        group: "g".into(),
        factory_version: "1.0.0".into(),
        behavior: Arc::new(super::super::Behavior::default()),
        seed: 1,
        index: 0,
        firmware_key: None,
    };
    let connect = Arc::new(ConnectTemplate {
        host: "127.0.0.1".into(),
        port: 1,
        hub_host_name: "localhost".into(),
        tls: None,
        sas_lifetime_secs: None,
    });
    let stats = StatsHandle::new(Arc::new(super::super::SimulationStats::default()), "g");
    let (_stop, stop_rx) = watch::channel(false);
    let driver = Driver::new(spec, connect, None, SimClock::new(1.0), stats, stop_rx);
    let task = driver.run();
    // The connection's own task and TLS buffers come on top; this is the device's share.
    let size = std::mem::size_of_val(&task);
    eprintln!("device future: {size} bytes");
    assert!(size < 8 * 1024, "a device's future is {size} bytes");
}

#[test]
fn desired_patches_merge_like_the_hub_merges_them() {
    let mut desired = json!({"firmware": {"version": "1", "url": "u"}, "a": 1});
    merge_desired_patch(
        &mut desired,
        &json!({"firmware": {"version": "2"}, "a": null, "$version": 4}),
    );
    assert_eq!(desired, json!({"firmware": {"version": "2", "url": "u"}}));
    merge_desired_patch(&mut desired, &json!("not an object"));
    assert_eq!(desired, json!({"firmware": {"version": "2", "url": "u"}}));
    let mut empty = Value::Null;
    merge_desired_patch(&mut empty, &json!({"b": {"c": 1}, "$version": 5}));
    assert_eq!(empty, json!({"b": {"c": 1}}));
}
