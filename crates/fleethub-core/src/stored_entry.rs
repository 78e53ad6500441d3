//! The stored form of a device's registry entry: only what a new device's entry and the row's
//! own columns cannot tell.
//!
//! A registry entry (IoT Hub's shape: `deviceId`, `generationId`, `etag`, `status`, …,
//! `authentication`, `capabilities`) was stored whole, about 595 bytes a device in the bench
//! fleet, of which about 500 were copies of the row's `device_id` and `status` columns or the
//! defaults every new device gets (a disconnected state, timestamps of `0001-01-01`, null
//! thumbprints, no edge capability). The packed form is a JSON object whose first key is
//! [`MARKER`] and which holds, under the entry's own keys, only the fields that differ from
//! [`new_entry`]'s, nested objects packed the same way:
//! `{"$entry":1,"generationId":"…","statusUpdatedTime":"…","authentication":{"symmetricKey":
//! {"primaryKey":"…","secondaryKey":"…"}}}`. Reading it back ([`unpack`]) walks the template
//! and rebuilds the whole entry, key order included, with `deviceId` and `status` from the row.
//!
//! An entry that is not exactly the template's shape (other keys or another order, a `deviceId`
//! or `status` other than the row's, a nested object where the template has none or the other
//! way round) is stored in full, as it comes, so `unpack(pack(e)) == e` holds for every input,
//! not only for the entries this build writes. Text that does not start with the marker is the
//! full form (what version 15 and earlier stored) and reads as it is. The one full entry that
//! would be mistaken for a packed one, an object whose first key is the marker, is stored as
//! `{"$entry":0,"full":…}`.

use std::sync::LazyLock;

use serde::de::Error as _;
use serde_json::{Map, Value};

/// The packed form's first key (no registry field starts with `$`).
pub const MARKER: &str = "$entry";
/// What every packed text starts with: the marker with the value 1.
const PACKED_PREFIX: &str = "{\"$entry\":1";
/// What a full entry whose first key is the marker is stored as: the marker with 0.
const WRAPPED_PREFIX: &str = "{\"$entry\":0";
/// The fields the row keeps in columns of its own; the template's values for them are unused.
const DEVICE_ID: &str = "deviceId";
const STATUS: &str = "status";

/// "Never", as IoT Hub writes it for a device that has not connected.
const NEVER: &str = crate::time::NEVER;

static TEMPLATE: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let Value::Object(fields) = serde_json::json!({
        "deviceId": "",
        "generationId": "",
        "etag": "",
        "status": "enabled",
        "statusReason": null,
        "statusUpdatedTime": "",
        "connectionState": "Disconnected",
        "connectionStateUpdatedTime": NEVER,
        "lastActivityTime": NEVER,
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "type": "sas",
            "symmetricKey": { "primaryKey": null, "secondaryKey": null },
            "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null }
        },
        "capabilities": { "iotEdge": false }
    }) else {
        unreachable!("the template is an object")
    };
    fields
});

/// The registry entry the packed form starts from: a new device's, with `device_id` and
/// `status` (the hub's `Device` serializes a new device's entry in this shape and order; its
/// tests hold it to this).
pub fn new_entry(device_id: &str, status: &str) -> Value {
    let mut fields = TEMPLATE.clone();
    fields.insert(DEVICE_ID.into(), Value::from(device_id));
    fields.insert(STATUS.into(), Value::from(status));
    Value::Object(fields)
}

/// The text the store keeps for `entry` in a row whose columns hold `device_id` and `status`:
/// packed when the entry has the template's shape, otherwise the entry in full.
pub fn pack(entry: &Value, device_id: &str, status: &str) -> Result<String, serde_json::Error> {
    let Value::Object(fields) = entry else {
        return serde_json::to_string(entry);
    };
    let columns = Columns { device_id, status };
    if let Some(diff) = diff(fields, &TEMPLATE, Some(columns)) {
        let mut packed = Map::with_capacity(diff.len() + 1);
        packed.insert(MARKER.into(), Value::from(1));
        packed.extend(diff);
        return serde_json::to_string(&packed);
    }
    if fields.keys().next().is_some_and(|k| k == MARKER) {
        return serde_json::to_string(&serde_json::json!({ MARKER: 0, "full": entry }));
    }
    serde_json::to_string(entry)
}

/// Whether stored text is in the packed form (or the wrapped full form); other text is an
/// entry in full.
pub fn is_packed(stored: &str) -> bool {
    stored.starts_with(PACKED_PREFIX) || stored.starts_with(WRAPPED_PREFIX)
}

/// The whole registry entry from its stored text (packed or full) and the row's `device_id`
/// and `status`.
pub fn unpack(stored: &str, device_id: &str, status: &str) -> Result<Value, serde_json::Error> {
    if !is_packed(stored) {
        return serde_json::from_str(stored);
    }
    let mut packed: Map<String, Value> = serde_json::from_str(stored)?;
    match packed.shift_remove(MARKER) {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {
            let columns = Columns { device_id, status };
            Ok(Value::Object(fill(&TEMPLATE, packed, Some(columns))?))
        }
        Some(Value::Number(n)) if n.as_u64() == Some(0) => packed
            .shift_remove("full")
            .ok_or_else(|| serde_json::Error::custom("wrapped registry entry without \"full\"")),
        _ => Err(serde_json::Error::custom(
            "stored registry entry has an unknown \"$entry\" form",
        )),
    }
}

/// [`unpack`] as JSON text; full text comes back as it is, without a parse.
pub fn unpack_text(
    stored: &str,
    device_id: &str,
    status: &str,
) -> Result<String, serde_json::Error> {
    if !is_packed(stored) {
        return Ok(stored.to_string());
    }
    serde_json::to_string(&unpack(stored, device_id, status)?)
}

/// The row's columns that the top level of an entry copies.
#[derive(Clone, Copy)]
struct Columns<'a> {
    device_id: &'a str,
    status: &'a str,
}

/// The fields of `fields` that differ from `template`'s, nested objects as their own diffs
/// (left out when empty); `None` when `fields` does not have the template's keys in its order,
/// a nested object where the template has one, or (at the top, `columns`) the row's id and
/// status.
fn diff(
    fields: &Map<String, Value>,
    template: &Map<String, Value>,
    columns: Option<Columns<'_>>,
) -> Option<Map<String, Value>> {
    if fields.len() != template.len() || !fields.keys().eq(template.keys()) {
        return None;
    }
    let mut out = Map::new();
    for ((key, value), default) in fields.iter().zip(template.values()) {
        let column = columns.and_then(|c| match key.as_str() {
            DEVICE_ID => Some(c.device_id),
            STATUS => Some(c.status),
            _ => None,
        });
        if let Some(column) = column {
            if value.as_str() != Some(column) {
                return None;
            }
            continue;
        }
        match (value, default) {
            (Value::Object(nested), Value::Object(nested_default)) => {
                let d = diff(nested, nested_default, None)?;
                if !d.is_empty() {
                    out.insert(key.clone(), Value::Object(d));
                }
            }
            (Value::Object(_), _) | (_, Value::Object(_)) => return None,
            _ if value != default => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Some(out)
}

/// The whole object `template` describes, with the fields of `packed` in place of its defaults
/// (the inverse of [`diff`]); an error for a packed field the template does not have.
fn fill(
    template: &Map<String, Value>,
    mut packed: Map<String, Value>,
    columns: Option<Columns<'_>>,
) -> Result<Map<String, Value>, serde_json::Error> {
    let mut out = Map::with_capacity(template.len());
    for (key, default) in template {
        let column = columns.and_then(|c| match key.as_str() {
            DEVICE_ID => Some(c.device_id),
            STATUS => Some(c.status),
            _ => None,
        });
        let value = match (column, packed.shift_remove(key), default) {
            (Some(column), _, _) => Value::from(column),
            (None, Some(Value::Object(nested)), Value::Object(nested_default)) => {
                Value::Object(fill(nested_default, nested, None)?)
            }
            (None, None, Value::Object(nested_default)) => {
                Value::Object(fill(nested_default, Map::new(), None)?)
            }
            (None, Some(_), Value::Object(_)) => {
                return Err(serde_json::Error::custom(format!(
                    "packed registry entry: \"{key}\" is not an object"
                )))
            }
            (None, Some(value), _) => value,
            (None, None, _) => default.clone(),
        };
        out.insert(key.clone(), value);
    }
    if let Some(key) = packed.keys().next() {
        return Err(serde_json::Error::custom(format!(
            "packed registry entry has an unknown field \"{key}\""
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new_sas(id: &str) -> Value {
        let mut e = new_entry(id, "enabled");
        e["generationId"] = json!("1764777600123456789");
        e["statusUpdatedTime"] = json!("2026-12-03T16:00:00.0000000Z");
        e["authentication"]["symmetricKey"] = json!({
            "primaryKey": "cHJpbWFyeS1rZXktZm9yLWRldmljZS0wMQ==",
            "secondaryKey": "c2Vjb25kYXJ5LWtleS1mb3ItZGV2aWNlLTAx"
        });
        e
    }

    fn round_trip(entry: &Value, id: &str, status: &str) -> String {
        let stored = pack(entry, id, status).unwrap();
        let back = unpack(&stored, id, status).unwrap();
        // Key order counts: compare the texts.
        assert_eq!(back.to_string(), entry.to_string(), "stored as {stored}");
        assert_eq!(unpack_text(&stored, id, status).unwrap(), entry.to_string());
        stored
    }

    #[test]
    fn a_new_devices_entry_keeps_only_its_generation_time_and_keys() {
        let entry = new_sas("dev-01");
        let stored = round_trip(&entry, "dev-01", "enabled");
        assert_eq!(
            stored,
            "{\"$entry\":1,\"generationId\":\"1764777600123456789\",\
             \"statusUpdatedTime\":\"2026-12-03T16:00:00.0000000Z\",\
             \"authentication\":{\"symmetricKey\":{\"primaryKey\":\
             \"cHJpbWFyeS1rZXktZm9yLWRldmljZS0wMQ==\",\"secondaryKey\":\
             \"c2Vjb25kYXJ5LWtleS1mb3ItZGV2aWNlLTAx\"}}}"
        );
        assert!(stored.len() * 2 < entry.to_string().len());
        assert!(is_packed(&stored));
    }

    #[test]
    fn every_field_that_differs_comes_back() {
        let mut e = new_sas("d");
        e["status"] = json!("disabled");
        e["statusReason"] = json!("stolen \"$entry\":1");
        e["etag"] = json!("AAAAAAAAAAI=");
        e["lastActivityTime"] = json!("2026-12-03T17:00:00Z");
        e["cloudToDeviceMessageCount"] = json!(3.0);
        e["capabilities"]["iotEdge"] = json!(true);
        e["authentication"] = json!({
            "type": "selfSigned",
            "symmetricKey": { "primaryKey": null, "secondaryKey": null },
            "x509Thumbprint": { "primaryThumbprint": "AB", "secondaryThumbprint": null }
        });
        let stored = round_trip(&e, "d", "disabled");
        assert!(is_packed(&stored));
        // 3.0 is not the template's 0, nor 3: it comes back as the float it was.
        assert!(stored.contains("\"cloudToDeviceMessageCount\":3.0"));
    }

    #[test]
    fn an_entry_of_another_shape_is_stored_in_full() {
        let mut reordered = Map::new();
        let Value::Object(fields) = new_sas("d") else {
            unreachable!()
        };
        for (k, v) in fields.iter().rev() {
            reordered.insert(k.clone(), v.clone());
        }
        let mut extra = new_sas("d");
        extra["hubOnly"] = json!(1);
        let mut missing = new_sas("d");
        missing.as_object_mut().unwrap().shift_remove("etag");
        let mut nested_not_object = new_sas("d");
        nested_not_object["capabilities"] = json!(null);
        let mut leaf_object = new_sas("d");
        leaf_object["etag"] = json!({});
        let mut nested_extra = new_sas("d");
        nested_extra["authentication"]["symmetricKey"]["third"] = json!("k");
        for e in [
            Value::Object(reordered),
            extra,
            missing,
            nested_not_object,
            leaf_object,
            nested_extra,
            json!({}),
            json!([1, 2]),
            json!("text"),
            json!(null),
        ] {
            let stored = round_trip(&e, "d", "enabled");
            assert!(!is_packed(&stored), "{stored}");
            assert_eq!(stored, e.to_string());
        }
    }

    #[test]
    fn an_id_or_status_other_than_the_rows_is_stored_in_full() {
        let e = new_sas("dev-01");
        assert!(!is_packed(&round_trip(&e, "dev-02", "enabled")));
        assert!(!is_packed(&round_trip(&e, "dev-01", "disabled")));
        let mut numeric_status = new_sas("dev-01");
        numeric_status["status"] = json!(1);
        assert!(!is_packed(&round_trip(&numeric_status, "dev-01", "1")));
    }

    #[test]
    fn a_full_entry_that_starts_with_the_marker_is_wrapped_not_misread() {
        for e in [
            json!({ "$entry": 1, "deviceId": "d" }),
            json!({ "$entry": 0, "full": 2 }),
        ] {
            let stored = round_trip(&e, "d", "enabled");
            assert!(stored.starts_with("{\"$entry\":0,\"full\":"), "{stored}");
        }
    }

    #[test]
    fn a_full_entry_reads_as_it_is() {
        let text = r#"{"deviceId":"d","status":"enabled","extra":[1]}"#;
        assert_eq!(unpack_text(text, "other", "disabled").unwrap(), text);
        assert_eq!(unpack(text, "x", "y").unwrap().to_string(), text);
    }

    #[test]
    fn a_damaged_packed_entry_is_an_error_not_a_guess() {
        for bad in [
            r#"{"$entry":1,"noSuchField":1}"#,
            r#"{"$entry":1,"authentication":"sas"}"#,
            r#"{"$entry":12}"#,
            r#"{"$entry":0}"#,
            r#"{"$entry":1,"#,
        ] {
            assert!(unpack(bad, "d", "enabled").is_err(), "{bad}");
        }
    }
}
