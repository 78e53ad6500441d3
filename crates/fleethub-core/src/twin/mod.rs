//! The twin document: merge-patch, IoT Hub's key/depth/size limits, and the desired/reported
//! property sections with their `$version` and `$metadata`.

pub mod limits;
pub mod patch;
pub mod properties;
pub mod stored_metadata;

pub use properties::{Section, TwinProperties};

/// A JSON object literal as a map, for tests (`obj(json!({…}))`).
#[cfg(test)]
pub(crate) fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}
