//! Engine.IO v4 packets as they travel over either transport: one packet per WebSocket frame, or
//! a `\x1e`-separated payload in the body of an HTTP long-polling request.
//!
//! Owns the text form of Engine.IO packets (`0` open … `6` noop), the polling payload format
//! (binary packets as `b<base64>`), the open packet, the order in which engine.io checks a
//! request, and the JSON error bodies of refused requests. Knows nothing about Socket.IO packets:
//! a `message` packet's payload is handed on as opaque text or bytes.

use base64::Engine as _;
use bytes::Bytes;
use std::fmt::Write as _;

/// The Engine.IO protocol revision this gateway speaks (`EIO=4`).
pub const PROTOCOL_VERSION: &str = "4";

/// A text frame from the client, split into its Engine.IO packet type and payload.
#[derive(Debug, PartialEq, Eq)]
pub enum EnginePacket<'a> {
    Open,
    Close,
    Ping(&'a str),
    Pong(&'a str),
    Message(&'a str),
    Upgrade,
    Noop,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineDecodeError {
    #[error("empty Engine.IO packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownType(char),
    #[error("base64 (`b…`) packets are not accepted over WebSocket")]
    Base64NotSupported,
    #[error("a polling payload must be UTF-8 text")]
    NotUtf8,
    #[error("invalid base64 in a binary (`b…`) packet")]
    BadBase64,
}

/// Splits a text frame into its packet. Binary frames are always `message` packets and need no
/// decoding.
pub fn decode_text(frame: &str) -> Result<EnginePacket<'_>, EngineDecodeError> {
    let mut chars = frame.chars();
    let kind = chars.next().ok_or(EngineDecodeError::Empty)?;
    let rest = &frame[kind.len_utf8()..];
    Ok(match kind {
        '0' => EnginePacket::Open,
        '1' => EnginePacket::Close,
        '2' => EnginePacket::Ping(rest),
        '3' => EnginePacket::Pong(rest),
        '4' => EnginePacket::Message(rest),
        '5' => EnginePacket::Upgrade,
        '6' => EnginePacket::Noop,
        'b' => return Err(EngineDecodeError::Base64NotSupported),
        other => return Err(EngineDecodeError::UnknownType(other)),
    })
}

/// The first packet the server sends: session id and heartbeat settings.
#[derive(Debug, Clone)]
pub struct OpenPacket<'a> {
    pub sid: &'a str,
    /// Whether the client may upgrade to WebSocket (`"upgrades":["websocket"]`): only for a
    /// session opened over polling on a server that serves WebSocket too.
    pub upgrade_to_websocket: bool,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub max_payload: usize,
}

impl OpenPacket<'_> {
    /// `0{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`, keys in the
    /// order engine.io writes them.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(130);
        out.push('0');
        out.push_str(r#"{"sid":"#);
        out.push_str(&serde_json::Value::from(self.sid).to_string());
        let upgrades = if self.upgrade_to_websocket {
            r#"["websocket"]"#
        } else {
            "[]"
        };
        let _ = write!(
            out,
            r#","upgrades":{upgrades},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            self.ping_interval_ms, self.ping_timeout_ms, self.max_payload
        );
        out
    }
}

/// The packet separator of a polling payload (ASCII record separator).
pub const SEPARATOR: u8 = 0x1e;

/// One packet of a polling payload, as the server writes it.
#[derive(Debug, Clone, Copy)]
pub enum PayloadPart<'a> {
    /// A text packet, type character included (`2`, `42[…]`).
    Text(&'a str),
    /// A binary `message` packet: written as `b<base64>`.
    Binary(&'a [u8]),
}

/// The body of a polling `GET` response: packets joined by `\x1e`, binary ones as `b<base64>`.
pub fn encode_payload<'a>(parts: impl IntoIterator<Item = PayloadPart<'a>>) -> String {
    let mut out = String::new();
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR as char);
        }
        match part {
            PayloadPart::Text(text) => out.push_str(text),
            PayloadPart::Binary(data) => {
                out.push('b');
                base64::engine::general_purpose::STANDARD.encode_string(data, &mut out);
            }
        }
    }
    out
}

/// One packet of a polling `POST` body, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadPacket {
    /// A text packet with its type character, a slice of the (UTF-8) body: decode it with
    /// [`decode_text`].
    Text(Bytes),
    /// The decoded bytes of a `b<base64>` packet: always a binary `message`.
    Binary(Bytes),
}

/// Reads a polling `POST` body packet by packet, without copying text packets. The body is
/// checked to be UTF-8 once, up front; each packet is decoded only when asked for, so a payload
/// of many tiny packets costs no more memory than its body.
#[derive(Debug, Clone)]
pub struct PayloadReader {
    body: Bytes,
    pos: usize,
}

impl PayloadReader {
    pub fn new(body: Bytes) -> Result<Self, EngineDecodeError> {
        std::str::from_utf8(&body).map_err(|_| EngineDecodeError::NotUtf8)?;
        Ok(PayloadReader { body, pos: 0 })
    }

    /// The next packet, `None` at the end. An empty body is one empty (invalid) packet, as in
    /// engine.io-parser.
    pub fn next_packet(&mut self) -> Option<Result<PayloadPacket, EngineDecodeError>> {
        if self.pos > self.body.len() {
            return None;
        }
        let rest = &self.body[self.pos..];
        let end = rest.iter().position(|&b| b == SEPARATOR).unwrap_or(rest.len());
        let packet = self.body.slice(self.pos..self.pos + end);
        // Past the separator; past the end when this was the last packet.
        self.pos += end + 1;
        Some(match packet.first() {
            None => Err(EngineDecodeError::Empty),
            Some(b'b') => base64::engine::general_purpose::STANDARD
                .decode(&packet[1..])
                .map(|data| PayloadPacket::Binary(data.into()))
                .map_err(|_| EngineDecodeError::BadBase64),
            Some(_) => Ok(PayloadPacket::Text(packet)),
        })
    }

    /// Whether every packet has been read.
    pub fn is_done(&self) -> bool {
        self.pos > self.body.len()
    }
}

/// The server's ping, the client's pong.
pub const PING: &str = "2";
pub const PONG: &str = "3";

/// Prefixes a Socket.IO packet string with the Engine.IO `message` type.
pub fn message(packet: &str) -> String {
    let mut out = String::with_capacity(packet.len() + 1);
    out.push('4');
    out.push_str(packet);
    out
}

/// Why engine.io refuses a handshake, with the code and message its JSON error body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    TransportUnknown,
    SessionIdUnknown,
    BadHandshakeMethod,
    BadRequest,
    Forbidden,
    UnsupportedProtocolVersion,
}

impl HandshakeError {
    pub fn code(self) -> u8 {
        match self {
            Self::TransportUnknown => 0,
            Self::SessionIdUnknown => 1,
            Self::BadHandshakeMethod => 2,
            Self::BadRequest => 3,
            Self::Forbidden => 4,
            Self::UnsupportedProtocolVersion => 5,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::TransportUnknown => "Transport unknown",
            Self::SessionIdUnknown => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest => "Bad request",
            Self::Forbidden => "Forbidden",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// HTTP status engine.io answers with: 403 for `Forbidden`, 400 for everything else.
    pub fn status(self) -> u16 {
        match self {
            Self::Forbidden => 403,
            _ => 400,
        }
    }

    /// `{"code":N,"message":"…"}`
    pub fn body(self) -> String {
        format!(r#"{{"code":{},"message":"{}"}}"#, self.code(), self.message())
    }
}

/// The two ways an Engine.IO session is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Polling,
    WebSocket,
}

impl TransportKind {
    /// The `transport` query value.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Polling => "polling",
            TransportKind::WebSocket => "websocket",
        }
    }

    /// The transport named by a `transport` query value, if this server serves it.
    pub fn parse(name: Option<&str>, served: &[TransportKind]) -> Result<TransportKind, HandshakeError> {
        served
            .iter()
            .copied()
            .find(|t| Some(t.as_str()) == name)
            .ok_or(HandshakeError::TransportUnknown)
    }
}

/// Checks a request that opens a new session (no `sid`) the way engine.io does, in the same
/// order: the method, the upgrade, then the protocol version. The transport was checked first
/// ([`TransportKind::parse`]).
pub fn check_handshake(
    transport: TransportKind,
    eio: Option<&str>,
    is_get: bool,
    is_upgrade: bool,
) -> Result<(), HandshakeError> {
    if !is_get {
        return Err(HandshakeError::BadHandshakeMethod);
    }
    if transport == TransportKind::WebSocket && !is_upgrade {
        return Err(HandshakeError::BadRequest);
    }
    if eio != Some(PROTOCOL_VERSION) {
        return Err(HandshakeError::UnsupportedProtocolVersion);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_packet_matches_engine_io_byte_for_byte() {
        let mut open = OpenPacket {
            sid: "ML63FV06C3yb8TLdAAAA",
            upgrade_to_websocket: false,
            ping_interval_ms: 1500,
            ping_timeout_ms: 1000,
            max_payload: 1_000_000,
        };
        assert_eq!(
            open.encode(),
            r#"0{"sid":"ML63FV06C3yb8TLdAAAA","upgrades":[],"pingInterval":1500,"pingTimeout":1000,"maxPayload":1000000}"#
        );
        open.upgrade_to_websocket = true;
        assert_eq!(
            open.encode(),
            r#"0{"sid":"ML63FV06C3yb8TLdAAAA","upgrades":["websocket"],"pingInterval":1500,"pingTimeout":1000,"maxPayload":1000000}"#
        );
    }

    #[test]
    fn decodes_every_packet_type() {
        assert_eq!(decode_text("3"), Ok(EnginePacket::Pong("")));
        assert_eq!(decode_text("2probe"), Ok(EnginePacket::Ping("probe")));
        assert_eq!(decode_text(r#"42["a"]"#), Ok(EnginePacket::Message(r#"2["a"]"#)));
        assert_eq!(decode_text("1"), Ok(EnginePacket::Close));
        assert_eq!(decode_text(""), Err(EngineDecodeError::Empty));
        assert_eq!(decode_text("9"), Err(EngineDecodeError::UnknownType('9')));
        assert_eq!(decode_text("€"), Err(EngineDecodeError::UnknownType('€')));
        assert_eq!(decode_text("bAQID"), Err(EngineDecodeError::Base64NotSupported));
    }

    #[test]
    fn handshake_checks_follow_engine_io_order() {
        use HandshakeError::*;
        use TransportKind::*;
        let both = [Polling, WebSocket];
        assert_eq!(TransportKind::parse(Some("polling"), &both), Ok(Polling));
        assert_eq!(
            TransportKind::parse(Some("polling"), &[WebSocket]),
            Err(TransportUnknown)
        );
        assert_eq!(
            TransportKind::parse(Some("carrier-pigeon"), &both),
            Err(TransportUnknown)
        );
        assert_eq!(TransportKind::parse(None, &both), Err(TransportUnknown));
        assert_eq!(check_handshake(WebSocket, Some("4"), true, true), Ok(()));
        assert_eq!(check_handshake(Polling, Some("4"), true, false), Ok(()));
        assert_eq!(
            check_handshake(Polling, Some("3"), false, false),
            Err(BadHandshakeMethod)
        );
        assert_eq!(
            check_handshake(WebSocket, Some("4"), false, true),
            Err(BadHandshakeMethod)
        );
        assert_eq!(check_handshake(WebSocket, Some("4"), true, false), Err(BadRequest));
        assert_eq!(
            check_handshake(WebSocket, Some("3"), true, true),
            Err(UnsupportedProtocolVersion)
        );
        assert_eq!(
            check_handshake(Polling, None, true, false),
            Err(UnsupportedProtocolVersion)
        );
        assert_eq!(
            UnsupportedProtocolVersion.body(),
            r#"{"code":5,"message":"Unsupported protocol version"}"#
        );
    }

    fn read_all(body: &[u8]) -> Vec<Result<PayloadPacket, EngineDecodeError>> {
        let mut reader = PayloadReader::new(Bytes::copy_from_slice(body)).unwrap();
        std::iter::from_fn(|| reader.next_packet()).collect()
    }

    #[test]
    fn payload_matches_the_observed_engine_io_bytes() {
        // The observed GET body of reference §1.6.
        let body = encode_payload([
            PayloadPart::Text(r#"40{"sid":"x"}"#),
            PayloadPart::Text(r#"451-["hey",{"_placeholder":true,"num":0},"txt"]"#),
            PayloadPart::Binary(&[1, 2, 3]),
            PayloadPart::Text(r#"42["e2","€"]"#),
        ]);
        assert_eq!(
            body,
            "40{\"sid\":\"x\"}\x1e451-[\"hey\",{\"_placeholder\":true,\"num\":0},\"txt\"]\x1ebAQID\x1e42[\"e2\",\"€\"]"
        );
        let packets = read_all(body.as_bytes());
        assert_eq!(packets.len(), 4);
        assert_eq!(packets[2], Ok(PayloadPacket::Binary(Bytes::from_static(&[1, 2, 3]))));
        assert_eq!(packets[3], Ok(PayloadPacket::Text(Bytes::from("42[\"e2\",\"€\"]"))));
        assert_eq!(encode_payload([PayloadPart::Text("2")]), "2");
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        assert_eq!(read_all(b""), vec![Err(EngineDecodeError::Empty)]);
        assert_eq!(
            read_all(b"3\x1e"),
            vec![Ok(PayloadPacket::Text("3".into())), Err(EngineDecodeError::Empty)]
        );
        assert_eq!(read_all(b"b!!!"), vec![Err(EngineDecodeError::BadBase64)]);
        assert_eq!(read_all(b"b"), vec![Ok(PayloadPacket::Binary(Bytes::new()))]);
        assert!(matches!(
            PayloadReader::new(Bytes::from_static(b"4\xff\xfe")),
            Err(EngineDecodeError::NotUtf8)
        ));
    }
}

/// Property tests of the polling payload codec: whatever a client POSTs, decoding returns
/// packets or errors and never panics, and what the server encodes decodes to the same packets.
#[cfg(test)]
mod payload_properties {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(body: Vec<u8>) -> Result<Vec<Result<PayloadPacket, EngineDecodeError>>, EngineDecodeError> {
        let mut reader = PayloadReader::new(Bytes::from(body))?;
        let packets: Vec<_> = std::iter::from_fn(|| reader.next_packet()).collect();
        assert!(reader.is_done());
        Ok(packets)
    }

    /// Bodies shaped like payloads: packet types, separators, base64 (valid or not), UTF-8.
    fn payload_like() -> impl Strategy<Value = Vec<u8>> {
        let part = prop_oneof![
            Just(b"\x1e".to_vec()),
            Just(b"b".to_vec()),
            Just(b"4".to_vec()),
            Just(b"=".to_vec()),
            "[A-Za-z0-9+/=]{0,12}".prop_map(String::into_bytes),
            "[0-6]{1,2}".prop_map(String::into_bytes),
            any::<String>().prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(part, 0..24).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        #[test]
        fn any_body_decodes_without_panicking(body in payload_like()) {
            let len = body.len();
            if let Ok(packets) = decode_all(body) {
                // At most one packet per separator, plus one.
                prop_assert!(packets.len() <= len + 1);
            }
        }

        #[test]
        fn arbitrary_bytes_decode_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(body);
        }

        #[test]
        fn encoded_packets_decode_to_themselves(
            parts in proptest::collection::vec(
                prop_oneof![
                    // Text packets never contain the separator (JSON escapes control characters).
                    "[0-6][^\x1e]{0,40}".prop_map(|t| (true, t.into_bytes())),
                    proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| (false, b)),
                ],
                1..12,
            )
        ) {
            let body = encode_payload(parts.iter().map(|(text, data)| match text {
                true => PayloadPart::Text(std::str::from_utf8(data).unwrap()),
                false => PayloadPart::Binary(data),
            }));
            let decoded = decode_all(body.into_bytes()).unwrap();
            prop_assert_eq!(decoded.len(), parts.len());
            for ((text, data), packet) in parts.iter().zip(decoded) {
                let expected = if *text {
                    PayloadPacket::Text(Bytes::from(data.clone()))
                } else {
                    PayloadPacket::Binary(Bytes::from(data.clone()))
                };
                prop_assert_eq!(packet, Ok(expected));
            }
        }
    }
}
