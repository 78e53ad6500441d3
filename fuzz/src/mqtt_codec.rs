//! The MQTT 3.1.1 codec, fed the bytes a device sends.
//!
//! Invariants beyond "never panics":
//! - every packet that decodes re-encodes to bytes that decode to the same packet, consuming
//!   exactly those bytes;
//! - the stream decodes to the same packets and the same error whether the bytes arrive at once
//!   or a few at a time (the gateway's reader sees arbitrary TCP segment boundaries).

use bytes::BytesMut;
use fleethub_mqtt::codec::{decode, encode, CodecError, Packet};

/// The gateway's default packet limit (`GatewayConfig::max_packet_size`).
const MAX_PACKET: usize = 256 * 1024 + 1024;

/// A small limit too, so that `TooLarge` is reachable from small inputs.
const SMALL_MAX_PACKET: usize = 64;

/// Decodes `data` as a byte stream, checks the round trip and the chunked reading.
pub fn run(data: &[u8]) {
    for max in [MAX_PACKET, SMALL_MAX_PACKET] {
        let whole = decode_stream(data, max, data.len().max(1));
        for packet in whole.iter().filter_map(|r| r.as_ref().ok()) {
            assert_round_trip(packet);
        }
        // The chunk size comes from the input, so the fuzzer explores boundaries too.
        let chunk = 1 + data.first().map_or(0, |b| (b % 7) as usize);
        let chunked = decode_stream(data, max, chunk);
        assert_eq!(whole, chunked, "chunks of {chunk} bytes decode differently");
    }
}

/// What a connection reads: packets until the bytes run out (`Ok(None)`) or an error, which
/// closes the connection.
fn decode_stream(data: &[u8], max: usize, chunk: usize) -> Vec<Result<Packet, CodecError>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut chunks = data.chunks(chunk);
    loop {
        match decode(&mut buf, max) {
            Ok(Some(packet)) => out.push(Ok(packet)),
            Ok(None) => match chunks.next() {
                Some(more) => buf.extend_from_slice(more),
                None => return out,
            },
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        }
    }
}

fn assert_round_trip(packet: &Packet) {
    let mut wire = BytesMut::new();
    encode(packet, &mut wire);
    let sent = wire.clone();
    let again = decode(&mut wire, usize::MAX);
    assert_eq!(
        again.as_ref(),
        Ok(&Some(packet.clone())),
        "re-encoded as {sent:02x?}"
    );
    assert!(
        wire.is_empty(),
        "decode left {} bytes of {sent:02x?}",
        wire.len()
    );
}
