//! A device that answers every direct method with 200 and its own payload, for method
//! round-trip benchmarks.

use crate::device::{ClientError, DeviceClient, DeviceEvent, DeviceEvents};
use tokio::task::JoinHandle;

/// Subscribes `client` to method requests, then (in a spawned task) answers each with status
/// 200 echoing its payload until the connection ends. The task's output is how many it
/// answered. Keep a clone of `client` to disconnect it.
pub async fn run_method_responder(
    client: DeviceClient,
    mut events: DeviceEvents,
) -> Result<JoinHandle<u64>, ClientError> {
    let codes = client.subscribe(&["$iothub/methods/POST/#"]).await?;
    if codes.first() != Some(&1) && codes.first() != Some(&0) {
        return Err(ClientError::Protocol(format!(
            "hub refused the method subscription (SUBACK {codes:?})"
        )));
    }
    Ok(tokio::spawn(async move {
        let mut answered = 0;
        while let Some(event) = events.recv().await {
            match event {
                DeviceEvent::MethodRequest { rid, payload, .. } => {
                    if client.method_response(&rid, 200, &payload).await.is_ok() {
                        answered += 1;
                    }
                }
                DeviceEvent::Disconnected { .. } => break,
                DeviceEvent::DesiredPatch { .. } | DeviceEvent::C2d { .. } => {}
            }
        }
        answered
    }))
}
