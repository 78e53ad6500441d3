//! Durability: writes under load, `kill -9`, restart — every acknowledged write survives.

use crate::harness::spawn_hub;
use fleethub_sim::{ConnectOptions, DeviceAuth, DeviceClient};
use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_dash_nine() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = spawn_hub(dir.path(), 0, 0);
    let (https, mqtt) = (
        hub.ready["httpsPort"].as_u64().unwrap() as u16,
        hub.ready["mqttPort"].as_u64().unwrap() as u16,
    );
    let rest = hub.client();
    let ca = std::fs::read(hub.ready["caFile"].as_str().unwrap()).unwrap();
    let tls = fleethub_sim::tls_config_trusting(&ca).unwrap();

    let devices = 20;
    let mut keys = Vec::new();
    for i in 0..devices {
        let id = format!("crash-{i}");
        let r = rest
            .put_device(&id, &json!({ "deviceId": id }))
            .await
            .unwrap();
        keys.push(
            r["authentication"]["symmetricKey"]["primaryKey"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }

    // Each device reports an increasing counter over MQTT; each writer remembers the last acked.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let opts = ConnectOptions {
            host: "127.0.0.1".into(),
            port: mqtt,
            hub_host_name: "localhost".into(),
            device_id: format!("crash-{i}"),
            auth: DeviceAuth::SasKey(key.clone()),
            tls: Some(tls.clone()),
            clean_session: false,
            keep_alive_secs: 60,
            local_addr: None,
            sas_lifetime_secs: fleethub_sim::TOKEN_LIFETIME_SECS,
        };
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let (dev, _events) = DeviceClient::connect(opts).await.unwrap();
            let mut acked = 0u64;
            for n in 1.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    dev.report(&json!({"counter": n})),
                )
                .await
                {
                    Ok(Ok(_)) => acked = n,
                    _ => break,
                }
            }
            acked
        }));
    }
    // Service-side writes too: desired patches through REST.
    let desired_writer = {
        let (rest, stop) = (rest.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = 0u64;
            for n in 1.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let patch = json!({"properties": {"desired": {"seq": n}}});
                match rest.patch_twin("crash-0", &patch).await {
                    Ok(_) => acked = n,
                    Err(_) => break,
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    hub.child.kill().unwrap(); // SIGKILL
    hub.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.push(w.await.unwrap());
    }
    let desired_acked = desired_writer.await.unwrap();
    assert!(
        acked.iter().sum::<u64>() > 0,
        "load produced acknowledged writes before the kill"
    );

    let mut hub2 = spawn_hub(dir.path(), https, mqtt);
    for (i, want) in acked.iter().enumerate() {
        let twin = rest.twin(&format!("crash-{i}")).await.unwrap().unwrap();
        let got = twin["properties"]["reported"]["counter"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            got >= *want,
            "crash-{i}: acknowledged counter {want} but the store has {got}"
        );
    }
    let twin = rest.twin("crash-0").await.unwrap().unwrap();
    let seq = twin["properties"]["desired"]["seq"].as_u64().unwrap_or(0);
    assert!(
        seq >= desired_acked,
        "acknowledged desired seq {desired_acked} but the store has {seq}"
    );
    hub2.child.kill().unwrap();
    hub2.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_hub_cleanly_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = spawn_hub(dir.path(), 0, 0);
    let https = hub.ready["httpsPort"].as_u64().unwrap() as u16;
    let rest = hub.client();
    rest.put_device("term-1", &json!({"deviceId": "term-1"}))
        .await
        .unwrap();
    let pid = hub.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = hub.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hub did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "graceful stop exits 0, got {status}");
    let _hub2 = spawn_hub(dir.path(), https, 0);
    let twin = rest.twin("term-1").await.unwrap().unwrap();
    assert_eq!(twin["deviceId"], "term-1");
}
