//! MQTT 3.1.1 packets and their strict encoding and decoding.
//!
//! Decoding never panics on any input: every malformed packet is a [`CodecError`], and a packet
//! whose fixed header announces more than the allowed size is refused before its body is
//! buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One MQTT 3.1.1 control packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// Client asks to open a session.
    Connect(Connect),
    /// Server's answer to CONNECT.
    ConnAck(ConnAck),
    /// An application message, either direction.
    Publish(Publish),
    /// QoS 1 acknowledgement of the PUBLISH with this packet id.
    PubAck(u16),
    /// QoS 2, first acknowledgement.
    PubRec(u16),
    /// QoS 2, release.
    PubRel(u16),
    /// QoS 2, completion.
    PubComp(u16),
    /// Client subscribes to topic filters.
    Subscribe(Subscribe),
    /// Server's answer to SUBSCRIBE.
    SubAck(SubAck),
    /// Client removes subscriptions.
    Unsubscribe(Unsubscribe),
    /// Server's answer to UNSUBSCRIBE.
    UnsubAck(u16),
    /// Client keepalive ping.
    PingReq,
    /// Server's answer to PINGREQ.
    PingResp,
    /// Client closes the connection cleanly.
    Disconnect,
}

/// The CONNECT packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    /// 4 for MQTT 3.1.1 ("MQTT"), 3 for MQTT 3.1 ("MQIsdp").
    pub protocol_level: u8,
    /// Whether the server must discard any stored session.
    pub clean_session: bool,
    /// Keepalive interval in seconds (0 = none).
    pub keep_alive: u16,
    /// The client identifier.
    pub client_id: String,
    /// The user name, if the client sent one.
    pub username: Option<String>,
    /// The password (binary), if the client sent one.
    pub password: Option<Bytes>,
    /// The last-will message, if any.
    pub will: Option<Will>,
}

/// A CONNECT's last-will message.
#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    /// Topic the will is published to.
    pub topic: String,
    /// The will's payload.
    pub payload: Bytes,
    /// QoS of the will (0..=2).
    pub qos: u8,
    /// Whether the will is retained.
    pub retain: bool,
}

/// The CONNACK packet.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnAck {
    /// Whether the server resumed a stored session.
    pub session_present: bool,
    /// Return code: 0 accepted, 1..=5 refused.
    pub code: u8,
}

/// The PUBLISH packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// Set on a retransmission.
    pub dup: bool,
    /// Quality of service (0..=2).
    pub qos: u8,
    /// Whether the message is retained.
    pub retain: bool,
    /// The topic name.
    pub topic: String,
    /// Present exactly when `qos > 0`.
    pub packet_id: Option<u16>,
    /// The application payload.
    pub payload: Bytes,
}

/// The SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    /// Packet identifier, echoed in SUBACK.
    pub packet_id: u16,
    /// Topic filters with their requested QoS.
    pub filters: Vec<(String, u8)>,
}

/// The SUBACK packet.
#[derive(Debug, Clone, PartialEq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE answered.
    pub packet_id: u16,
    /// Granted QoS per filter, or 0x80 for a refused one.
    pub codes: Vec<u8>,
}

/// The UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsubscribe {
    /// Packet identifier, echoed in UNSUBACK.
    pub packet_id: u16,
    /// Topic filters to remove.
    pub filters: Vec<String>,
}

/// Why bytes are not a valid MQTT 3.1.1 packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The remaining-length field uses more than 4 bytes.
    #[error("remaining length uses more than 4 bytes")]
    MalformedRemainingLength,
    /// The packet is larger than the limit; detected from the fixed header alone.
    #[error("packet of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Size the fixed header announces, header included.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Packet type 0 or 15.
    #[error("packet type {0} is reserved")]
    ReservedPacketType(u8),
    /// Reserved bits of the fixed header or of a flags byte are wrong.
    #[error("invalid flags 0x{flags:02x} for packet type {packet_type}")]
    BadFlags {
        /// The packet type (1..=14).
        packet_type: u8,
        /// The offending flags.
        flags: u8,
    },
    /// CONNECT names a protocol other than "MQTT" (level 4) or "MQIsdp" (level 3).
    #[error("protocol name '{0}' is not MQTT")]
    BadProtocolName(String),
    /// CONNECT names a protocol level the server does not speak (answer CONNACK 1).
    #[error("protocol level {0} is not supported; use 4 (MQTT 3.1.1)")]
    UnsupportedProtocolLevel(u8),
    /// A QoS value of 3, or a QoS invalid in its context.
    #[error("invalid QoS {0}")]
    InvalidQos(u8),
    /// A string is not well-formed UTF-8 or contains U+0000.
    #[error("string is not valid UTF-8 without U+0000")]
    InvalidUtf8,
    /// A packet identifier of 0.
    #[error("packet identifier 0 is not allowed")]
    ZeroPacketId,
    /// The body ended before a field was complete.
    #[error("packet body truncated while reading {0}")]
    Truncated(&'static str),
    /// The body is longer than its fields.
    #[error("{0} unexpected bytes after the packet's fields")]
    TrailingBytes(usize),
    /// A structurally invalid packet, with what is wrong.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Appends the wire form of `packet` to `out`.
///
/// Callers keep fields within MQTT's limits: strings longer than 65,535 bytes are cut at a
/// character boundary, and a QoS > 0 PUBLISH without a packet id is sent with id 0.
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    let mut body = BytesMut::new();
    let first = encode_body(packet, &mut body);
    out.reserve(body.len() + 5);
    out.put_u8(first);
    put_remaining_length(body.len(), out);
    out.put_slice(&body);
}

/// Decodes one packet from the front of `buf`, consuming its bytes.
///
/// `Ok(None)` means more bytes are needed; a packet larger than `max_packet_size` is refused as
/// soon as its fixed header is complete.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, CodecError> {
    if let Some(&first) = buf.first() {
        check_fixed_header(first)?;
    }
    let Some((remaining, header_len)) = read_remaining_length(buf)? else {
        return Ok(None);
    };
    let size = header_len + remaining;
    if size > max_packet_size {
        return Err(CodecError::TooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    let first = buf[0];
    let mut frame = buf.split_to(size);
    frame.advance(header_len);
    decode_body(first >> 4, first & 0x0F, frame.freeze()).map(Some)
}

/// Returns (remaining length, fixed header length), or None when the header is incomplete.
fn read_remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        value |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, 2 + i)));
        }
    }
    Err(CodecError::MalformedRemainingLength)
}

fn put_remaining_length(mut len: usize, out: &mut BytesMut) {
    len = len.min(MAX_REMAINING_LENGTH);
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Writes the body of `packet` and returns its fixed-header first byte.
fn encode_body(packet: &Packet, b: &mut BytesMut) -> u8 {
    match packet {
        Packet::Connect(c) => {
            encode_connect(c, b);
            0x10
        }
        Packet::ConnAck(a) => {
            b.put_u8(a.session_present as u8);
            b.put_u8(a.code);
            0x20
        }
        Packet::Publish(p) => encode_publish(p, b),
        Packet::PubAck(id) => id_only(0x40, *id, b),
        Packet::PubRec(id) => id_only(0x50, *id, b),
        Packet::PubRel(id) => id_only(0x62, *id, b),
        Packet::PubComp(id) => id_only(0x70, *id, b),
        Packet::Subscribe(s) => {
            b.put_u16(s.packet_id);
            for (filter, qos) in &s.filters {
                put_str(filter, b);
                b.put_u8(*qos);
            }
            0x82
        }
        Packet::SubAck(s) => {
            b.put_u16(s.packet_id);
            b.put_slice(&s.codes);
            0x90
        }
        Packet::Unsubscribe(u) => {
            b.put_u16(u.packet_id);
            for filter in &u.filters {
                put_str(filter, b);
            }
            0xA2
        }
        Packet::UnsubAck(id) => id_only(0xB0, *id, b),
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect => 0xE0,
    }
}

fn id_only(first: u8, id: u16, b: &mut BytesMut) -> u8 {
    b.put_u16(id);
    first
}

fn encode_connect(c: &Connect, b: &mut BytesMut) {
    let name = if c.protocol_level == 3 {
        "MQIsdp"
    } else {
        "MQTT"
    };
    put_str(name, b);
    b.put_u8(c.protocol_level);
    let mut flags = (c.clean_session as u8) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos & 0x03) << 3) | ((w.retain as u8) << 5);
    }
    flags |= (c.password.is_some() as u8) << 6;
    flags |= (c.username.is_some() as u8) << 7;
    b.put_u8(flags);
    b.put_u16(c.keep_alive);
    put_str(&c.client_id, b);
    if let Some(w) = &c.will {
        put_str(&w.topic, b);
        put_binary(&w.payload, b);
    }
    if let Some(u) = &c.username {
        put_str(u, b);
    }
    if let Some(p) = &c.password {
        put_binary(p, b);
    }
}

fn encode_publish(p: &Publish, b: &mut BytesMut) -> u8 {
    put_str(&p.topic, b);
    if p.qos > 0 {
        b.put_u16(p.packet_id.unwrap_or(0));
    }
    b.put_slice(&p.payload);
    0x30 | ((p.dup as u8) << 3) | ((p.qos & 0x03) << 1) | p.retain as u8
}

fn put_str(s: &str, b: &mut BytesMut) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_binary(&s.as_bytes()[..end], b);
}

fn put_binary(data: &[u8], b: &mut BytesMut) {
    let data = &data[..data.len().min(u16::MAX as usize)];
    b.put_u16(data.len() as u16);
    b.put_slice(data);
}

/// The fixed-header flags each packet type must carry (PUBLISH's are checked separately).
fn required_flags(packet_type: u8) -> Result<Option<u8>, CodecError> {
    match packet_type {
        3 => Ok(None),
        6 | 8 | 10 => Ok(Some(0x02)),
        1..=14 => Ok(Some(0x00)),
        t => Err(CodecError::ReservedPacketType(t)),
    }
}

/// Checks the packet type and its flags from the first byte alone, before the body arrives.
fn check_fixed_header(first: u8) -> Result<(), CodecError> {
    let (packet_type, flags) = (first >> 4, first & 0x0F);
    match required_flags(packet_type)? {
        Some(want) if flags != want => Err(CodecError::BadFlags { packet_type, flags }),
        Some(_) => Ok(()),
        None if (flags >> 1) & 0x03 == 3 => Err(CodecError::InvalidQos(3)),
        None if flags & 0x0E == 0x08 => Err(CodecError::BadFlags { packet_type, flags }),
        None => Ok(()),
    }
}

fn decode_body(packet_type: u8, flags: u8, body: Bytes) -> Result<Packet, CodecError> {
    let mut r = Reader(body);
    let packet = match packet_type {
        1 => Packet::Connect(decode_connect(&mut r)?),
        2 => Packet::ConnAck(decode_connack(&mut r)?),
        3 => Packet::Publish(decode_publish(flags, &mut r)?),
        4 => Packet::PubAck(r.packet_id()?),
        5 => Packet::PubRec(r.packet_id()?),
        6 => Packet::PubRel(r.packet_id()?),
        7 => Packet::PubComp(r.packet_id()?),
        8 => Packet::Subscribe(decode_subscribe(&mut r)?),
        9 => Packet::SubAck(decode_suback(&mut r)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(&mut r)?),
        11 => Packet::UnsubAck(r.packet_id()?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        _ => Packet::Disconnect,
    };
    r.finish()?;
    Ok(packet)
}

fn decode_connect(r: &mut Reader) -> Result<Connect, CodecError> {
    let name = r.string("protocol name")?;
    let protocol_level = r.u8("protocol level")?;
    match (name.as_str(), protocol_level) {
        ("MQTT", 4) | ("MQIsdp", 3) => {}
        ("MQTT", level) | ("MQIsdp", level) => {
            return Err(CodecError::UnsupportedProtocolLevel(level))
        }
        _ => return Err(CodecError::BadProtocolName(name)),
    }
    let flags = r.u8("connect flags")?;
    let bad_flags = || CodecError::BadFlags {
        packet_type: 1,
        flags,
    };
    let (has_will, will_qos, will_retain) =
        (flags & 0x04 != 0, (flags >> 3) & 0x03, flags & 0x20 != 0);
    let (has_password, has_username) = (flags & 0x40 != 0, flags & 0x80 != 0);
    let will_flags_without_will = !has_will && (will_qos != 0 || will_retain);
    if flags & 0x01 != 0 || will_flags_without_will || (has_password && !has_username) {
        return Err(bad_flags());
    }
    if will_qos > 2 {
        return Err(CodecError::InvalidQos(will_qos));
    }
    let keep_alive = r.u16("keep alive")?;
    let client_id = r.string("client id")?;
    let will = if has_will {
        let topic = r.string("will topic")?;
        let payload = r.binary("will payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary("password")?)
    } else {
        None
    };
    Ok(Connect {
        protocol_level,
        clean_session: flags & 0x02 != 0,
        keep_alive,
        client_id,
        username,
        password,
        will,
    })
}

fn decode_connack(r: &mut Reader) -> Result<ConnAck, CodecError> {
    let ack_flags = r.u8("acknowledge flags")?;
    if ack_flags & 0xFE != 0 {
        return Err(CodecError::BadFlags {
            packet_type: 2,
            flags: ack_flags,
        });
    }
    let code = r.u8("return code")?;
    Ok(ConnAck {
        session_present: ack_flags == 1,
        code,
    })
}

fn decode_publish(flags: u8, r: &mut Reader) -> Result<Publish, CodecError> {
    // Flags were checked with the fixed header: QoS is 0..=2 and DUP is clear at QoS 0.
    let (dup, qos, retain) = (flags & 0x08 != 0, (flags >> 1) & 0x03, flags & 0x01 != 0);
    let topic = r.string("topic name")?;
    // Wildcards are not rejected: IoT Hub device ids may contain '#', and devices put their id in
    // topic names.
    if topic.is_empty() {
        return Err(CodecError::Malformed("PUBLISH topic name is empty"));
    }
    let packet_id = if qos > 0 { Some(r.packet_id()?) } else { None };
    let payload = r.rest();
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        payload,
    })
}

fn decode_subscribe(r: &mut Reader) -> Result<Subscribe, CodecError> {
    let packet_id = r.packet_id()?;
    let mut filters = Vec::new();
    while r.has_more() {
        let filter = r.string("topic filter")?;
        let qos = r.u8("requested QoS")?;
        if qos > 2 {
            return Err(CodecError::InvalidQos(qos));
        }
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(CodecError::Malformed("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe { packet_id, filters })
}

fn decode_suback(r: &mut Reader) -> Result<SubAck, CodecError> {
    let packet_id = r.packet_id()?;
    let codes = r.rest().to_vec();
    if let Some(&bad) = codes.iter().find(|c| !matches!(c, 0 | 1 | 2 | 0x80)) {
        return Err(CodecError::InvalidQos(bad));
    }
    Ok(SubAck { packet_id, codes })
}

fn decode_unsubscribe(r: &mut Reader) -> Result<Unsubscribe, CodecError> {
    let packet_id = r.packet_id()?;
    let mut filters = Vec::new();
    while r.has_more() {
        filters.push(r.string("topic filter")?);
    }
    if filters.is_empty() {
        return Err(CodecError::Malformed("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe { packet_id, filters })
}

/// A bounds-checked cursor over a packet body.
struct Reader(Bytes);

impl Reader {
    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        if self.0.is_empty() {
            return Err(CodecError::Truncated(what));
        }
        Ok(self.0.get_u8())
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        if self.0.len() < 2 {
            return Err(CodecError::Truncated(what));
        }
        Ok(self.0.get_u16())
    }

    fn packet_id(&mut self) -> Result<u16, CodecError> {
        match self.u16("packet identifier")? {
            0 => Err(CodecError::ZeroPacketId),
            id => Ok(id),
        }
    }

    fn binary(&mut self, what: &'static str) -> Result<Bytes, CodecError> {
        let len = self.u16(what)? as usize;
        if self.0.len() < len {
            return Err(CodecError::Truncated(what));
        }
        Ok(self.0.split_to(len))
    }

    fn string(&mut self, what: &'static str) -> Result<String, CodecError> {
        let raw = self.binary(what)?;
        let s = std::str::from_utf8(&raw).map_err(|_| CodecError::InvalidUtf8)?;
        if s.contains('\0') {
            return Err(CodecError::InvalidUtf8);
        }
        Ok(s.to_string())
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.0)
    }

    fn has_more(&self) -> bool {
        !self.0.is_empty()
    }

    fn finish(&self) -> Result<(), CodecError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(CodecError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests;
