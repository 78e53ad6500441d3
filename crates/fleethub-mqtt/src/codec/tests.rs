use super::*;
use proptest::prelude::*;

const MAX: usize = 256 * 1024 + 1024;

fn roundtrip(p: Packet) {
    let mut buf = BytesMut::new();
    encode(&p, &mut buf);
    let wire = buf.clone();
    assert_eq!(
        decode(&mut buf, MAX).unwrap(),
        Some(p.clone()),
        "wire {wire:02x?}"
    );
    assert!(buf.is_empty(), "decode must consume exactly the packet");
}

fn decode_bytes(bytes: &[u8]) -> Result<Option<Packet>, CodecError> {
    decode(&mut BytesMut::from(bytes), MAX)
}

fn sample_connect() -> Connect {
    Connect {
        protocol_level: 4,
        clean_session: false,
        keep_alive: 60,
        client_id: "dev1".into(),
        username: Some("localhost/dev1/?api-version=2019-10-01".into()),
        password: Some(Bytes::from_static(b"SharedAccessSignature sr=x&sig=y&se=1")),
        will: None,
    }
}

#[test]
fn every_packet_type_round_trips() {
    let will = Will {
        topic: "w/t".into(),
        payload: Bytes::from_static(b"bye"),
        qos: 1,
        retain: true,
    };
    let packets = vec![
        Packet::Connect(sample_connect()),
        Packet::Connect(Connect {
            will: Some(will),
            clean_session: true,
            ..sample_connect()
        }),
        Packet::Connect(Connect {
            protocol_level: 3,
            username: None,
            password: None,
            ..sample_connect()
        }),
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: 0,
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: 5,
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: 0,
            retain: false,
            topic: "devices/dev1/messages/events/".into(),
            packet_id: None,
            payload: Bytes::from_static(b"{\"t\":1}"),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: 1,
            retain: true,
            topic: "$iothub/twin/GET/?$rid=1".into(),
            packet_id: Some(7),
            payload: Bytes::from_static(b" "),
        }),
        Packet::PubAck(1),
        Packet::PubRec(2),
        Packet::PubRel(3),
        Packet::PubComp(65535),
        Packet::Subscribe(Subscribe {
            packet_id: 9,
            filters: vec![
                ("$iothub/methods/POST/#".into(), 1),
                ("$iothub/twin/res/#".into(), 0),
            ],
        }),
        Packet::SubAck(SubAck {
            packet_id: 9,
            codes: vec![1, 0x80, 0, 2],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 10,
            filters: vec!["$iothub/twin/res/#".into()],
        }),
        Packet::UnsubAck(10),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect,
    ];
    for p in packets {
        roundtrip(p);
    }
}

#[test]
fn captured_connect_flags_0xc0_decode() {
    let mut buf = BytesMut::new();
    encode(&Packet::Connect(sample_connect()), &mut buf);
    assert_eq!(buf[9], 0xC0, "user+password, clean_session=0");
}

#[test]
fn partial_buffers_need_more_bytes_and_consume_nothing() {
    let mut full = BytesMut::new();
    encode(&Packet::Connect(sample_connect()), &mut full);
    for cut in 0..full.len() {
        let mut part = BytesMut::from(&full[..cut]);
        assert_eq!(decode(&mut part, MAX).unwrap(), None, "cut at {cut}");
        assert_eq!(part.len(), cut);
    }
}

#[test]
fn two_packets_in_one_buffer_decode_in_order() {
    let mut buf = BytesMut::new();
    encode(&Packet::PingReq, &mut buf);
    encode(&Packet::PubAck(4), &mut buf);
    assert_eq!(decode(&mut buf, MAX).unwrap(), Some(Packet::PingReq));
    assert_eq!(decode(&mut buf, MAX).unwrap(), Some(Packet::PubAck(4)));
    assert_eq!(decode(&mut buf, MAX).unwrap(), None);
}

#[test]
fn remaining_length_of_five_bytes_is_refused() {
    let err = decode_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).unwrap_err();
    assert_eq!(err, CodecError::MalformedRemainingLength);
}

#[test]
fn oversized_packet_is_refused_from_the_header_alone() {
    // Announces 2 MB, delivers only the fixed header.
    let err = decode_bytes(&[0x30, 0x80, 0x80, 0x80, 0x01]).unwrap_err();
    assert!(
        matches!(err, CodecError::TooLarge { max: MAX, .. }),
        "{err:?}"
    );
}

#[test]
fn four_byte_remaining_length_round_trips() {
    let big = Packet::Publish(Publish {
        dup: false,
        qos: 0,
        retain: false,
        topic: "t".into(),
        packet_id: None,
        payload: Bytes::from(vec![7u8; 2_100_000]),
    });
    let mut buf = BytesMut::new();
    encode(&big, &mut buf);
    assert_eq!(decode(&mut buf, 3_000_000).unwrap(), Some(big));
}

#[test]
fn reserved_flags_are_refused() {
    let cases: &[(&[u8], CodecError)] = &[
        (&[0x00, 0x00], CodecError::ReservedPacketType(0)),
        (&[0xF0, 0x00], CodecError::ReservedPacketType(15)),
        (
            &[0xC1, 0x00],
            CodecError::BadFlags {
                packet_type: 12,
                flags: 1,
            },
        ),
        (
            &[0x80, 0x00],
            CodecError::BadFlags {
                packet_type: 8,
                flags: 0,
            },
        ),
        (
            &[0x60, 0x02, 0x00, 0x01],
            CodecError::BadFlags {
                packet_type: 6,
                flags: 0,
            },
        ),
        (&[0x36, 0x00], CodecError::InvalidQos(3)),
        (
            &[0x38, 0x00],
            CodecError::BadFlags {
                packet_type: 3,
                flags: 8,
            },
        ),
        (
            &[0x20, 0x02, 0x02, 0x00],
            CodecError::BadFlags {
                packet_type: 2,
                flags: 2,
            },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(&decode_bytes(bytes).unwrap_err(), want, "{bytes:02x?}");
    }
}

fn connect_bytes(name: &str, level: u8, flags: u8) -> Vec<u8> {
    let mut body = BytesMut::new();
    put_str(name, &mut body);
    body.put_u8(level);
    body.put_u8(flags);
    body.put_u16(60);
    put_str("dev1", &mut body);
    let mut out = vec![0x10, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

#[test]
fn connect_protocol_is_checked() {
    assert!(matches!(
        decode_bytes(&connect_bytes("MQTT", 4, 0x02)),
        Ok(Some(Packet::Connect(_)))
    ));
    assert!(matches!(
        decode_bytes(&connect_bytes("MQIsdp", 3, 0x02)),
        Ok(Some(Packet::Connect(_)))
    ));
    assert_eq!(
        decode_bytes(&connect_bytes("MQTT", 5, 0x02)).unwrap_err(),
        CodecError::UnsupportedProtocolLevel(5)
    );
    assert_eq!(
        decode_bytes(&connect_bytes("HTTP", 4, 0x02)).unwrap_err(),
        CodecError::BadProtocolName("HTTP".into())
    );
}

#[test]
fn connect_reserved_and_inconsistent_flags_are_refused() {
    for flags in [0x01, 0x08, 0x20, 0x40] {
        let err = decode_bytes(&connect_bytes("MQTT", 4, flags)).unwrap_err();
        assert_eq!(
            err,
            CodecError::BadFlags {
                packet_type: 1,
                flags
            },
            "flags {flags:#x}"
        );
    }
    // Will QoS 3 with the will flag set.
    let err = decode_bytes(&connect_bytes("MQTT", 4, 0x1C)).unwrap_err();
    assert_eq!(err, CodecError::InvalidQos(3));
}

#[test]
fn connect_missing_fields_is_truncated_not_a_panic() {
    // Username flag set but no user name follows.
    let err = decode_bytes(&connect_bytes("MQTT", 4, 0x80)).unwrap_err();
    assert_eq!(err, CodecError::Truncated("user name"));
}

#[test]
fn invalid_utf8_and_nul_in_strings_are_refused() {
    let bad_utf8 = [0x30, 0x04, 0x00, 0x02, 0xC3, 0x28];
    assert_eq!(
        decode_bytes(&bad_utf8).unwrap_err(),
        CodecError::InvalidUtf8
    );
    let nul = [0x30, 0x04, 0x00, 0x02, b'a', 0x00];
    assert_eq!(decode_bytes(&nul).unwrap_err(), CodecError::InvalidUtf8);
}

#[test]
fn structural_errors_are_refused() {
    let cases: &[(&[u8], CodecError)] = &[
        (&[0x40, 0x02, 0x00, 0x00], CodecError::ZeroPacketId),
        (
            &[0x40, 0x03, 0x00, 0x01, 0x00],
            CodecError::TrailingBytes(1),
        ),
        (
            &[0x40, 0x01, 0x00],
            CodecError::Truncated("packet identifier"),
        ),
        (&[0xC0, 0x01, 0x00], CodecError::TrailingBytes(1)),
        (
            &[0x82, 0x02, 0x00, 0x01],
            CodecError::Malformed("SUBSCRIBE without topic filters"),
        ),
        (
            &[0xA2, 0x02, 0x00, 0x01],
            CodecError::Malformed("UNSUBSCRIBE without topic filters"),
        ),
        (
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
            CodecError::InvalidQos(3),
        ),
        (
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x41],
            CodecError::InvalidQos(0x41),
        ),
        (&[0x90, 0x03, 0x00, 0x01, 0x03], CodecError::InvalidQos(3)),
        (
            &[0x30, 0x02, 0x00, 0x00],
            CodecError::Malformed("PUBLISH topic name is empty"),
        ),
        (
            &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
            CodecError::ZeroPacketId,
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(&decode_bytes(bytes).unwrap_err(), want, "{bytes:02x?}");
    }
}

fn arb_string() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,40}"
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)
}

fn arb_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn arb_will() -> impl Strategy<Value = Will> {
    (arb_string(), arb_bytes(), 0..=2u8, any::<bool>()).prop_map(|(topic, payload, qos, retain)| {
        Will {
            topic,
            payload,
            qos,
            retain,
        }
    })
}

fn arb_connect() -> impl Strategy<Value = Connect> {
    let creds = proptest::option::of((arb_string(), proptest::option::of(arb_bytes())));
    (
        prop_oneof![Just(3u8), Just(4u8)],
        any::<bool>(),
        any::<u16>(),
        arb_string(),
        creds,
        proptest::option::of(arb_will()),
    )
        .prop_map(
            |(protocol_level, clean_session, keep_alive, client_id, creds, will)| {
                let (username, password) = match creds {
                    Some((u, p)) => (Some(u), p),
                    None => (None, None),
                };
                Connect {
                    protocol_level,
                    clean_session,
                    keep_alive,
                    client_id,
                    username,
                    password,
                    will,
                }
            },
        )
}

fn arb_publish() -> impl Strategy<Value = Publish> {
    (
        "[^\u{0}]{1,40}",
        0..=2u8,
        any::<bool>(),
        any::<bool>(),
        arb_id(),
        arb_bytes(),
    )
        .prop_map(|(topic, qos, dup, retain, id, payload)| Publish {
            dup: dup && qos > 0,
            qos,
            retain,
            topic,
            packet_id: (qos > 0).then_some(id),
            payload,
        })
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    let filters = proptest::collection::vec((arb_string(), 0..=2u8), 1..5);
    let codes =
        proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80)], 0..5);
    prop_oneof![
        arb_connect().prop_map(Packet::Connect),
        (any::<bool>(), any::<u8>()).prop_map(|(s, code)| Packet::ConnAck(ConnAck {
            session_present: s,
            code
        })),
        arb_publish().prop_map(Packet::Publish),
        arb_id().prop_map(Packet::PubAck),
        arb_id().prop_map(Packet::PubRec),
        arb_id().prop_map(Packet::PubRel),
        arb_id().prop_map(Packet::PubComp),
        (arb_id(), filters)
            .prop_map(|(packet_id, filters)| Packet::Subscribe(Subscribe { packet_id, filters })),
        (arb_id(), codes)
            .prop_map(|(packet_id, codes)| Packet::SubAck(SubAck { packet_id, codes })),
        (arb_id(), proptest::collection::vec(arb_string(), 1..5)).prop_map(
            |(packet_id, filters)| Packet::Unsubscribe(Unsubscribe { packet_id, filters })
        ),
        arb_id().prop_map(Packet::UnsubAck),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect),
    ]
}

proptest! {
    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 0usize..400) {
        let mut buf = BytesMut::from(&bytes[..]);
        // Drain the buffer like the gateway does, until an error or a need for more bytes.
        while let Ok(Some(_)) = decode(&mut buf, max) {}
    }

    #[test]
    fn decode_never_panics_on_mutated_valid_packets(p in arb_packet(), at in any::<usize>(), byte in any::<u8>()) {
        let mut buf = BytesMut::new();
        encode(&p, &mut buf);
        let i = at % buf.len();
        buf[i] = byte;
        let _ = decode(&mut buf, MAX);
    }

    #[test]
    fn encode_then_decode_round_trips(p in arb_packet()) {
        let mut buf = BytesMut::new();
        encode(&p, &mut buf);
        prop_assert_eq!(decode(&mut buf, MAX).unwrap(), Some(p));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn split_delivery_decodes_the_same(p in arb_packet(), cut in any::<usize>()) {
        let mut wire = BytesMut::new();
        encode(&p, &mut wire);
        let cut = cut % wire.len();
        let mut buf = BytesMut::from(&wire[..cut]);
        prop_assert_eq!(decode(&mut buf, MAX).unwrap(), None);
        buf.extend_from_slice(&wire[cut..]);
        prop_assert_eq!(decode(&mut buf, MAX).unwrap(), Some(p));
    }
}
