//! MQTT over WebSocket, end to end: a real HTTP listener, a WebSocket client, the gateway.

use crate::support::{now_unix, TestApi};
use bytes::BytesMut;
use fleethub_mqtt::codec::{self, ConnAck, Connect, Packet};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn device_connects_over_websocket_with_subprotocol_mqtt() {
    let api = TestApi::start().await;
    let device = api.create_device("ws1").await;
    let key = device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_string();

    let (addr, server) = api.serve().await;

    let mut request = format!("ws://{addr}/$iothub/websocket")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");

    let password =
        fleethub_core::sas::generate_token("localhost/devices/ws1", &key, None, now_unix() + 3600)
            .unwrap();
    let connect = Packet::Connect(Connect {
        protocol_level: 4,
        clean_session: false,
        keep_alive: 60,
        client_id: "ws1".into(),
        username: Some("localhost/ws1/?api-version=2021-04-12".into()),
        password: Some(password.into_bytes().into()),
        will: None,
    });
    let mut out = BytesMut::new();
    codec::encode(&connect, &mut out);
    // Split the packet across two messages: the bridge must not care where messages end.
    let tail = out.split_off(5);
    socket.send(Message::Binary(out.freeze())).await.unwrap();
    socket.send(Message::Binary(tail.freeze())).await.unwrap();

    let mut received = BytesMut::new();
    let packet = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(packet) = codec::decode(&mut received, 1 << 20).unwrap() {
                return packet;
            }
            match socket.next().await.expect("socket open").unwrap() {
                Message::Binary(bytes) => received.extend_from_slice(&bytes),
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    })
    .await
    .expect("CONNACK within 10 s");
    assert_eq!(
        packet,
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: 0
        })
    );

    let stats = api
        .owner(axum::http::Method::GET, "/statistics/service", None)
        .await
        .json();
    assert_eq!(stats["connectedDeviceCount"], 1, "{stats}");
    server.abort();
}
