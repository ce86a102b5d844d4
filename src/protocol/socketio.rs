//! Socket.IO v5 packets: the string form carried in Engine.IO `message` packets, plus binary
//! attachments.
//!
//! Owns encoding and decoding (`<type>[<n>-][<nsp>,][<id>][<json>]`), the placeholder scheme for
//! binary data, and the payload rules socket.io-parser enforces. Pure: no I/O, no sockets, no
//! rooms. Decoded EVENT/ACK packets keep binary as placeholders plus `attachments`, which is how
//! they are re-encoded too, so payloads can be relayed without rebuilding them.

use bytes::Bytes;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// socket.io-parser's default `maxAttachments`.
pub const DEFAULT_MAX_ATTACHMENTS: usize = 10;

/// Event names a client may not emit (they name client-side lifecycle events).
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect,
    Disconnect,
    /// An EVENT; encoded as BINARY_EVENT when the packet has attachments.
    Event,
    /// An ACK; encoded as BINARY_ACK when the packet has attachments.
    Ack,
    ConnectError,
}

/// One Socket.IO packet. `attachments` holds the binary parts that `data` references with
/// `{"_placeholder":true,"num":N}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: PacketKind,
    pub nsp: String,
    pub id: Option<u64>,
    pub data: Option<Value>,
    pub attachments: Vec<Bytes>,
}

impl Packet {
    fn new(kind: PacketKind, nsp: &str, data: Option<Value>) -> Self {
        Packet {
            kind,
            nsp: nsp.to_owned(),
            id: None,
            data,
            attachments: Vec::new(),
        }
    }

    /// The answer to a successful namespace CONNECT: `40{"sid":…}`.
    pub fn connect_ok(nsp: &str, socket_id: &str) -> Self {
        Self::new(PacketKind::Connect, nsp, Some(json!({ "sid": socket_id })))
    }

    /// A successful CONNECT with connection state recovery: `40{"sid":…,"pid":…}`.
    pub fn connect_ok_with_pid(nsp: &str, socket_id: &str, pid: &str) -> Self {
        Self::new(PacketKind::Connect, nsp, Some(json!({ "sid": socket_id, "pid": pid })))
    }

    /// A refused CONNECT: `44{"message":…}` (what a Node middleware's `next(new Error(message))`
    /// produces; the official client stops retrying on it).
    pub fn connect_error(nsp: &str, message: &str) -> Self {
        Self::new(PacketKind::ConnectError, nsp, Some(json!({ "message": message })))
    }

    pub fn disconnect(nsp: &str) -> Self {
        Self::new(PacketKind::Disconnect, nsp, None)
    }

    /// An EVENT whose `data` is `[event, ...args]`.
    pub fn event(nsp: &str, data: Vec<Value>, attachments: Vec<Bytes>) -> Self {
        Packet {
            attachments,
            ..Self::new(PacketKind::Event, nsp, Some(Value::Array(data)))
        }
    }

    pub fn ack(nsp: &str, id: u64, data: Vec<Value>, attachments: Vec<Bytes>) -> Self {
        Packet {
            id: Some(id),
            attachments,
            ..Self::new(PacketKind::Ack, nsp, Some(Value::Array(data)))
        }
    }

    /// The event name of an EVENT packet (a string, or a number rendered as text).
    pub fn event_name(&self) -> Option<String> {
        match self.data.as_ref()?.as_array()?.first()? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn type_digit(&self) -> char {
        let binary = !self.attachments.is_empty();
        match (self.kind, binary) {
            (PacketKind::Connect, _) => '0',
            (PacketKind::Disconnect, _) => '1',
            (PacketKind::Event, false) => '2',
            (PacketKind::Ack, false) => '3',
            (PacketKind::ConnectError, _) => '4',
            (PacketKind::Event, true) => '5',
            (PacketKind::Ack, true) => '6',
        }
    }

    /// The packet's string form. Attachments, if any, follow it as binary messages, in order.
    pub fn encode(&self) -> String {
        let payload = self.data.as_ref().map(Value::to_string);
        let mut out = String::with_capacity(16 + self.nsp.len() + payload.as_ref().map_or(0, String::len));
        out.push(self.type_digit());
        if !self.attachments.is_empty() {
            let _ = write!(out, "{}-", self.attachments.len());
        }
        if self.nsp != "/" {
            out.push_str(&self.nsp);
            out.push(',');
        }
        if let Some(id) = self.id {
            let _ = write!(out, "{id}");
        }
        if let Some(payload) = payload {
            out.push_str(&payload);
        }
        out
    }
}

/// `{"_placeholder":true,"num":n}`: where attachment `n` sits in a payload.
pub fn placeholder(num: usize) -> Value {
    json!({ "_placeholder": true, "num": num })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownType(char),
    #[error("illegal attachment count")]
    IllegalAttachments,
    #[error("too many attachments ({0})")]
    TooManyAttachments(usize),
    #[error("ack id out of range")]
    AckIdOutOfRange,
    #[error("payload is not valid JSON")]
    InvalidJson,
    #[error("payload not allowed for this packet type")]
    InvalidPayload,
    #[error("text packet arrived while binary attachments were expected")]
    UnexpectedText,
    #[error("binary data arrived without a packet announcing it")]
    UnexpectedBinary,
    #[error("placeholder refers to a missing attachment")]
    IllegalPlaceholder,
}

/// Turns a client's stream of text and binary messages into packets. Holds the one packet
/// whose attachments are still arriving.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Boxed: a decoder lives as long as its connection and is almost always empty.
    pending: Option<Box<(Packet, usize)>>,
}

impl Decoder {
    /// The packet whose attachments are arriving: its namespace and the attachment bytes
    /// received so far.
    pub fn pending(&self) -> Option<(&str, usize)> {
        self.pending.as_ref().map(|pending| {
            (
                pending.0.nsp.as_str(),
                pending.0.attachments.iter().map(Bytes::len).sum(),
            )
        })
    }

    /// Decodes a text message. `Ok(None)`: a binary packet header; its attachments follow.
    pub fn decode_text(&mut self, text: &str) -> Result<Option<Packet>, DecodeError> {
        if self.pending.is_some() {
            return Err(DecodeError::UnexpectedText);
        }
        let (packet, expected) = parse(text, DEFAULT_MAX_ATTACHMENTS)?;
        if expected == 0 {
            return Ok(Some(packet));
        }
        self.pending = Some(Box::new((packet, expected)));
        Ok(None)
    }

    /// Decodes a binary message: the next attachment of the pending packet.
    pub fn decode_binary(&mut self, data: Bytes) -> Result<Option<Packet>, DecodeError> {
        let (mut packet, expected) = *self.pending.take().ok_or(DecodeError::UnexpectedBinary)?;
        packet.attachments.push(data);
        if packet.attachments.len() < expected {
            self.pending = Some(Box::new((packet, expected)));
            return Ok(None);
        }
        if let Some(data) = &packet.data {
            if !placeholders_in_range(data, expected) {
                return Err(DecodeError::IllegalPlaceholder);
            }
        }
        Ok(Some(packet))
    }
}

fn placeholders_in_range(value: &Value, count: usize) -> bool {
    match value {
        Value::Array(items) => items.iter().all(|v| placeholders_in_range(v, count)),
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true)) {
                return map
                    .get("num")
                    .and_then(Value::as_u64)
                    .is_some_and(|n| (n as usize) < count);
            }
            map.values().all(|v| placeholders_in_range(v, count))
        }
        _ => true,
    }
}

/// Parses one packet string; returns it with the number of attachments still to come.
fn parse(text: &str, max_attachments: usize) -> Result<(Packet, usize), DecodeError> {
    let bytes = text.as_bytes();
    let first = text.chars().next().unwrap_or('\0');
    let (kind, binary) = match first {
        '0' => (PacketKind::Connect, false),
        '1' => (PacketKind::Disconnect, false),
        '2' => (PacketKind::Event, false),
        '3' => (PacketKind::Ack, false),
        '4' => (PacketKind::ConnectError, false),
        '5' => (PacketKind::Event, true),
        '6' => (PacketKind::Ack, true),
        other => return Err(DecodeError::UnknownType(other)),
    };
    let mut i = 1;

    let mut expected = 0;
    if binary {
        let dash = text[i..].find('-').ok_or(DecodeError::IllegalAttachments)?;
        let count = &text[i..i + dash];
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) || count.len() > 6 {
            return Err(DecodeError::IllegalAttachments);
        }
        expected = count.parse().map_err(|_| DecodeError::IllegalAttachments)?;
        if expected == 0 {
            return Err(DecodeError::IllegalAttachments);
        }
        if expected > max_attachments {
            return Err(DecodeError::TooManyAttachments(expected));
        }
        i += dash + 1;
    }

    let mut nsp = "/";
    if bytes.get(i) == Some(&b'/') {
        let end = text[i..].find(',').map_or(text.len(), |p| i + p);
        nsp = &text[i..end];
        i = (end + 1).min(text.len());
    }

    let mut id = None;
    let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 {
        let value: u64 = text[i..i + digits].parse().map_err(|_| DecodeError::AckIdOutOfRange)?;
        // JavaScript numbers are exact only up to 2^53.
        if value > (1 << 53) {
            return Err(DecodeError::AckIdOutOfRange);
        }
        id = Some(value);
        i += digits;
    }

    let data = if i < text.len() {
        Some(serde_json::from_str::<Value>(&text[i..]).map_err(|_| DecodeError::InvalidJson)?)
    } else {
        None
    };
    if !payload_valid(kind, data.as_ref()) {
        return Err(DecodeError::InvalidPayload);
    }
    let packet = Packet {
        kind,
        nsp: nsp.to_owned(),
        id,
        data,
        attachments: Vec::new(),
    };
    Ok((packet, expected))
}

/// socket.io-parser's `isPayloadValid`, stricter only in that an EVENT/ACK needs a payload.
fn payload_valid(kind: PacketKind, data: Option<&Value>) -> bool {
    match kind {
        PacketKind::Connect => matches!(data, None | Some(Value::Object(_))),
        PacketKind::Disconnect => data.is_none(),
        PacketKind::ConnectError => matches!(data, Some(Value::Object(_) | Value::String(_))),
        PacketKind::Ack => matches!(data, Some(Value::Array(_))),
        PacketKind::Event => match data.and_then(Value::as_array).and_then(|a| a.first()) {
            Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
            Some(Value::Number(_)) => true,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(text: &str) -> Result<Packet, DecodeError> {
        Decoder::default()
            .decode_text(text)
            .map(|p| p.expect("complete packet"))
    }

    #[test]
    fn encodes_like_socket_io_parser() {
        assert_eq!(Packet::connect_ok("/", "abc").encode(), r#"0{"sid":"abc"}"#);
        assert_eq!(Packet::connect_ok("/admin", "abc").encode(), r#"0/admin,{"sid":"abc"}"#);
        assert_eq!(
            Packet::connect_error("/random", "Invalid namespace").encode(),
            r#"4/random,{"message":"Invalid namespace"}"#
        );
        assert_eq!(Packet::disconnect("/").encode(), "1");
        assert_eq!(Packet::disconnect("/admin").encode(), "1/admin,");
        assert_eq!(
            Packet::event("/", vec![json!("hey"), json!("Jude")], vec![]).encode(),
            r#"2["hey","Jude"]"#
        );
        let bin = Packet::ack(
            "/",
            13,
            vec![json!({"got":"x"}), placeholder(0)],
            vec![Bytes::from_static(b"\xde\xad")],
        );
        assert_eq!(bin.encode(), r#"61-13[{"got":"x"},{"_placeholder":true,"num":0}]"#);
    }

    #[test]
    fn decodes_namespaces_ids_and_payloads() {
        let p = decode_one(r#"2/admin,7["ev",1]"#).unwrap();
        assert_eq!(p.kind, PacketKind::Event);
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.id, Some(7));
        assert_eq!(p.data, Some(json!(["ev", 1])));

        let p = decode_one("0/admin").unwrap();
        assert_eq!((p.kind, p.nsp.as_str(), p.data), (PacketKind::Connect, "/admin", None));
        let p = decode_one(r#"0{"token":"123"}"#).unwrap();
        assert_eq!(p.data, Some(json!({"token":"123"})));
        assert_eq!(decode_one("1/admin,").unwrap().kind, PacketKind::Disconnect);
        assert_eq!(decode_one("3/x,5[]").unwrap().id, Some(5));
        assert_eq!(decode_one(r#"2[1,"a"]"#).unwrap().event_name().as_deref(), Some("1"));
    }

    #[test]
    fn reassembles_binary_events() {
        let mut d = Decoder::default();
        let header = r#"52-["bin",{"_placeholder":true,"num":0},{"x":{"_placeholder":true,"num":1}}]"#;
        assert_eq!(d.decode_text(header), Ok(None));
        assert_eq!(d.decode_binary(Bytes::from_static(&[1, 2, 3])), Ok(None));
        let p = d.decode_binary(Bytes::from_static(&[4])).unwrap().unwrap();
        assert_eq!(p.kind, PacketKind::Event);
        assert_eq!(p.attachments.len(), 2);
        // Re-encoding gives back the same header: payloads relay unchanged.
        assert_eq!(p.encode(), header);
    }

    #[test]
    fn rejects_malformed_packets() {
        use DecodeError::*;
        let cases: &[(&str, DecodeError)] = &[
            ("", UnknownType('\0')),
            ("9", UnknownType('9')),
            ("2", InvalidPayload),
            ("2[]", InvalidPayload),
            (r#"2{"a":1}"#, InvalidPayload),
            (r#"2["connect"]"#, InvalidPayload),
            (r#"2[null]"#, InvalidPayload),
            ("2[", InvalidJson),
            (r#"0"str""#, InvalidPayload),
            ("0[]", InvalidPayload),
            ("1{}", InvalidPayload),
            ("3{}", InvalidPayload),
            (r#"5["a"]"#, IllegalAttachments),
            (r#"5x-["a"]"#, IllegalAttachments),
            (r#"50-["a"]"#, IllegalAttachments),
            (r#"511-["a"]"#, TooManyAttachments(11)),
            (r#"299999999999999999999["a"]"#, AckIdOutOfRange),
        ];
        for (text, err) in cases {
            assert_eq!(decode_one(text).as_ref(), Err(err), "{text:?}");
        }

        let mut d = Decoder::default();
        assert_eq!(d.decode_binary(Bytes::new()), Err(UnexpectedBinary));
        d.decode_text(r#"51-["a",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!(d.decode_text(r#"2["a"]"#), Err(UnexpectedText));

        let mut d = Decoder::default();
        d.decode_text(r#"51-["a",{"_placeholder":true,"num":3}]"#).unwrap();
        assert_eq!(d.decode_binary(Bytes::new()), Err(IllegalPlaceholder));
    }
}
