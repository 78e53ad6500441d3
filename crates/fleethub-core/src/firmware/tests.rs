use super::*;
use std::collections::BTreeSet;

const PROTOCOL: &str = include_str!("../../../../docs/device-protocol.md");

fn desired() -> DesiredFirmware {
    DesiredFirmware {
        version: "2.1.0".into(),
        url: "https://hub.example.com/v1/firmware/2.1.0/image".into(),
        sha256: "ab".repeat(32),
        size: 1_048_576,
        signature: None,
        models: Vec::new(),
    }
}

fn reported() -> ReportedFirmware {
    ReportedFirmware {
        current_version: "2.0.3".into(),
        status: UpdateStatus::RolledBack,
        progress: Some(100),
        target_version: Some("2.1.0".into()),
        last_update_time: Some("2026-11-01T02:00:00.0000000Z".into()),
        error: Some("firmware 2.1.0 rolled back to 2.0.3: it crashed on each of 3 boots".into()),
    }
}

/// The backticked names in the first column of the table that follows `heading` in the
/// protocol document.
fn table_names(after: &str) -> BTreeSet<String> {
    let start = PROTOCOL
        .find(after)
        .expect("section in docs/device-protocol.md");
    PROTOCOL[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn field_and_status_names_are_the_ones_docs_device_protocol_names() {
    let reported_fields = keys(&serde_json::to_value(reported()).unwrap());
    assert_eq!(reported_fields, table_names("## Reported firmware state"));
    let statuses: BTreeSet<String> = UpdateStatus::ALL
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(statuses, table_names("| status | meaning |"));
    let mut with_signature = desired();
    with_signature.signature = Some("sig".into());
    with_signature.models = vec!["esp32-s3".into()];
    let desired_fields = keys(&serde_json::to_value(with_signature).unwrap());
    assert_eq!(
        desired_fields,
        table_names("An update is asked for in the twin")
    );
}

#[test]
fn desired_and_reported_round_trip_through_json() {
    for d in [
        desired(),
        DesiredFirmware {
            signature: Some("MEUCIQ".into()),
            models: vec!["esp32".into(), "esp32-s3".into()],
            ..desired()
        },
    ] {
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            serde_json::from_value::<DesiredFirmware>(json.clone()).unwrap(),
            d
        );
        assert_eq!(
            DesiredFirmware::from_desired(&d.desired_section()),
            Ok(Some(d))
        );
    }
    for status in UpdateStatus::ALL {
        let r = ReportedFirmware {
            status,
            ..reported()
        };
        let back: ReportedFirmware =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(UpdateStatus::parse(status.as_str()), Some(status));
        assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
    }
}

#[test]
fn a_report_sends_every_field_so_stale_ones_are_cleared() {
    let r = ReportedFirmware {
        current_version: "2.1.0".into(),
        status: UpdateStatus::Success,
        progress: Some(100),
        target_version: None,
        last_update_time: None,
        error: None,
    };
    assert_eq!(
        r.reported_patch(),
        json!({"firmware": {
            "current_version": "2.1.0", "status": "success", "progress": 100,
            "target_version": null, "last_update_time": null, "error": null
        }})
    );
}

#[test]
fn patches_put_the_section_where_the_twin_has_it() {
    let d = desired();
    assert_eq!(
        d.twin_patch()["properties"]["desired"]["firmware"]["sha256"],
        "ab".repeat(32)
    );
    assert!(d.twin_patch()["properties"]["desired"]["firmware"]
        .get("signature")
        .is_none());
    let twin = json!({"deviceId": "d", "properties": {"desired": {}, "reported": reported().reported_patch()}});
    assert_eq!(ReportedFirmware::from_twin(&twin), Some(reported()));
    assert_eq!(
        ReportedFirmware::from_twin(&reported().reported_patch()),
        Some(reported())
    );
}

#[test]
fn firmware_that_reports_only_the_three_required_fields_reads_back_updated() {
    let twin = json!({"properties": {"reported": {"firmware": {
        "current_version": "2.1.0", "status": "success", "last_update_time": "2026-11-01T02:00:00Z"
    }}}});
    let r = ReportedFirmware::from_twin(&twin).unwrap();
    assert!(r.is_updated_to("2.1.0"));
    assert!(!r.is_updated_to("2.0.0"));
    assert_eq!((r.progress, r.error), (None, None));
    let verifying = json!({"firmware": {"current_version": "2.1.0", "status": "verifying"}});
    assert!(!ReportedFirmware::from_twin(&verifying)
        .unwrap()
        .is_updated_to("2.1.0"));
    let unknown = json!({"firmware": {"current_version": "2.1.0", "status": "updated"}});
    assert_eq!(ReportedFirmware::from_twin(&unknown), None);
    assert_eq!(
        ReportedFirmware::from_twin(&json!({"properties": {"reported": {}}})),
        None
    );
}

#[test]
fn unusable_desired_firmware_names_the_field() {
    let sha = "00".repeat(32);
    let cases = [
        (
            json!({"firmware": "2.0.0"}),
            "desired.firmware is not an object",
        ),
        (
            json!({"firmware": {"version": 2}}),
            "desired.firmware.version",
        ),
        (
            json!({"firmware": {"version": "2", "url": "ftp://x", "sha256": sha, "size": 1}}),
            "desired.firmware.url",
        ),
        (
            json!({"firmware": {"version": "2", "url": "https://x", "sha256": "zz", "size": 1}}),
            "desired.firmware.sha256",
        ),
        (
            json!({"firmware": {"version": "2", "url": "https://x", "sha256": sha, "size": -1}}),
            "desired.firmware.size",
        ),
        (
            json!({"firmware": {"version": "2", "url": "https://x", "sha256": sha, "size": MAX_IMAGE_BYTES + 1}}),
            "desired.firmware.size",
        ),
        (
            json!({"firmware": {"version": "2", "url": "https://x", "sha256": sha, "size": 1, "signature": 7}}),
            "desired.firmware.signature",
        ),
    ];
    for (desired, field) in cases {
        let err = DesiredFirmware::from_desired(&desired).unwrap_err();
        assert!(err.to_string().starts_with(field), "{desired}: {err}");
    }
    assert_eq!(
        DesiredFirmware::from_desired(&json!({"firmware": null})),
        Ok(None)
    );
    assert_eq!(DesiredFirmware::from_desired(&json!({})), Ok(None));
}

#[test]
fn sha256_hex_is_lowercase_and_decodes_back() {
    let hex = sha256_hex(b"abc");
    assert_eq!(
        hex,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let d = DesiredFirmware {
        sha256: hex.to_ascii_uppercase(),
        ..desired()
    };
    let bytes = d.sha256_bytes().unwrap();
    assert_eq!((bytes[0], bytes[31]), (0xba, 0xad));
    let parsed = DesiredFirmware::from_desired(&d.desired_section())
        .unwrap()
        .unwrap();
    assert_eq!(parsed.sha256, hex, "read back lowercase");
    assert_eq!(
        DesiredFirmware {
            sha256: "zz".into(),
            ..desired()
        }
        .sha256_bytes(),
        None
    );
}
