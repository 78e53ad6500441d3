//! Direct methods a virtual device answers. Pure: the driver sends the answer, then does what
//! [`AfterMethod`] says.

use super::flash::{other, slot_name};
use super::model::{Model, Now};
use serde_json::{json, Map, Value};

/// The methods this device implements, in the order the 404 answer lists them.
pub const METHODS: [&str; 5] = [
    "reboot",
    "factory_reset",
    "get_property",
    "set_property",
    "diagnostics",
];

/// Most device-local settings a device keeps.
const MAX_SETTINGS: usize = 16;
/// Longest serialized setting value.
const MAX_SETTING_BYTES: usize = 256;

/// What the driver does once the answer is sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AfterMethod {
    Nothing,
    Reboot,
    /// The model already holds factory flash; reboot into it.
    FactoryReset,
    /// Report this reported-properties patch.
    Report(Value),
}

/// A method's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MethodReply {
    pub status: i32,
    pub payload: Value,
    pub then: AfterMethod,
}

fn reply(status: i32, payload: Value) -> MethodReply {
    MethodReply {
        status,
        payload,
        then: AfterMethod::Nothing,
    }
}

fn error(status: i32, message: String) -> MethodReply {
    reply(status, json!({"error": message}))
}

impl Model {
    /// Answers the direct method `name` with `payload`.
    pub(crate) fn call_method(&mut self, name: &str, payload: &Value, now: &Now) -> MethodReply {
        match name {
            "reboot" => MethodReply {
                status: 200,
                payload: json!({"rebooting": true}),
                then: AfterMethod::Reboot,
            },
            "factory_reset" => {
                self.factory_reset();
                MethodReply {
                    status: 200,
                    payload: json!({"rebooting": true, "version": self.factory_version}),
                    then: AfterMethod::FactoryReset,
                }
            }
            "get_property" => self.get_property(payload),
            "set_property" => self.set_property(payload),
            "diagnostics" => reply(200, self.diagnostics(now)),
            other => error(
                404,
                format!(
                    "this device has no method '{other}'; it implements {}",
                    METHODS.join(", ")
                ),
            ),
        }
    }

    fn get_property(&self, payload: &Value) -> MethodReply {
        let Some(name) = payload.get("name").and_then(Value::as_str) else {
            return error(400, "payload must be {\"name\": \"<setting>\"}".into());
        };
        if name == "interval" && !self.flash.nvs.settings.contains_key(name) {
            let interval = self.telemetry_interval().map_or(0.0, |d| d.as_secs_f64());
            return reply(200, json!({"name": name, "value": interval}));
        }
        match self.flash.nvs.settings.get(name) {
            Some(value) => reply(200, json!({"name": name, "value": value})),
            None => error(404, format!("this device has no setting '{name}'")),
        }
    }

    fn set_property(&mut self, payload: &Value) -> MethodReply {
        let (Some(name), Some(value)) = (
            payload.get("name").and_then(Value::as_str),
            payload.get("value"),
        ) else {
            return error(
                400,
                "payload must be {\"name\": \"<setting>\", \"value\": <JSON>}".into(),
            );
        };
        if let Err(message) = check_setting(name, value) {
            return error(400, message);
        }
        let settings = &mut self.flash.nvs.settings;
        if !settings.contains_key(name) && settings.len() >= MAX_SETTINGS {
            return error(
                400,
                format!("this device keeps at most {MAX_SETTINGS} settings"),
            );
        }
        settings.insert(name.to_string(), value.clone());
        MethodReply {
            status: 200,
            payload: json!({"name": name, "value": value}),
            then: AfterMethod::Report(json!({"settings": {name: value}})),
        }
    }

    fn diagnostics(&self, now: &Now) -> Value {
        let slots: Vec<Value> = (0..2)
            .map(|i| {
                let slot = self.flash.slot(i);
                json!({
                    "slot": slot_name(i),
                    "version": (!slot.version.is_empty()).then_some(&slot.version),
                    "state": slot.state.as_str(),
                })
            })
            .collect();
        let download = self.flash.download.as_ref().map(
            |p| json!({"version": p.target.version, "written": p.written, "size": p.target.size}),
        );
        json!({
            "running_slot": slot_name(self.ram.running),
            "running_version": self.running_version(),
            "next_slot": slot_name(other(self.ram.running)),
            "slots": slots,
            "boot_count": self.flash.nvs.boot_count,
            "uptime_s": now.elapsed.saturating_sub(self.ram.booted_at).as_secs(),
            "buffered_telemetry": self.ram.telemetry.len(),
            "firmware_status": self.status().as_str(),
            "download": download,
            "last_error": self.flash.nvs.last_error,
            "settings": Value::Object(self.flash.nvs.settings.clone().into_iter().collect::<Map<_, _>>()),
        })
    }
}

/// A setting name is 1–64 letters, digits or `_`; `interval` is seconds in 1..=86400.
fn check_setting(name: &str, value: &Value) -> Result<(), String> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !name_ok {
        return Err(format!(
            "setting name '{name}' must be 1 to 64 letters, digits or '_'"
        ));
    }
    if value.to_string().len() > MAX_SETTING_BYTES {
        return Err(format!(
            "setting '{name}' is longer than {MAX_SETTING_BYTES} bytes of JSON"
        ));
    }
    if name == "interval"
        && !value
            .as_f64()
            .is_some_and(|s| (1.0..=86_400.0).contains(&s))
    {
        return Err(format!(
            "setting 'interval' must be a number of seconds in 1..=86400, not {value}"
        ));
    }
    Ok(())
}
