//! Engine.IO v4 packets as they travel over a WebSocket: one packet per frame.
//!
//! Owns the text form of Engine.IO packets (`0` open … `6` noop), the open packet and the JSON
//! error bodies of rejected handshakes. Knows nothing about Socket.IO packets: a `message`
//! packet's payload is handed on as an opaque string.

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
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub max_payload: usize,
}

impl OpenPacket<'_> {
    /// `0{"sid":…,"upgrades":[],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`, keys in the
    /// order engine.io writes them. WebSocket-only sessions offer no upgrades.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(120);
        out.push('0');
        out.push_str(r#"{"sid":"#);
        out.push_str(&serde_json::Value::from(self.sid).to_string());
        let _ = write!(
            out,
            r#","upgrades":[],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            self.ping_interval_ms, self.ping_timeout_ms, self.max_payload
        );
        out
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

/// Checks the query of a handshake request the way engine.io does, in the same order:
/// transport first, then an existing session id, then the method, the upgrade, the version.
/// Only WebSocket transport exists here, so polling is an unknown transport (as in an engine.io
/// server configured with `transports: ["websocket"]`).
pub fn check_handshake(
    transport: Option<&str>,
    sid: Option<&str>,
    eio: Option<&str>,
    is_get: bool,
    is_upgrade: bool,
) -> Result<(), HandshakeError> {
    if transport != Some("websocket") {
        return Err(HandshakeError::TransportUnknown);
    }
    if sid.is_some() {
        // Only a polling session could be upgraded, and there are none.
        return Err(HandshakeError::SessionIdUnknown);
    }
    if !is_get {
        return Err(HandshakeError::BadHandshakeMethod);
    }
    if !is_upgrade {
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
        let open = OpenPacket {
            sid: "ML63FV06C3yb8TLdAAAA",
            ping_interval_ms: 1500,
            ping_timeout_ms: 1000,
            max_payload: 1_000_000,
        };
        assert_eq!(
            open.encode(),
            r#"0{"sid":"ML63FV06C3yb8TLdAAAA","upgrades":[],"pingInterval":1500,"pingTimeout":1000,"maxPayload":1000000}"#
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
        let ok = check_handshake(Some("websocket"), None, Some("4"), true, true);
        assert_eq!(ok, Ok(()));
        let c = |t, s, e, g, u| check_handshake(t, s, e, g, u).unwrap_err();
        assert_eq!(c(Some("polling"), None, Some("4"), true, false), TransportUnknown);
        assert_eq!(c(None, None, Some("3"), false, false), TransportUnknown);
        assert_eq!(c(Some("websocket"), Some("x"), Some("4"), true, true), SessionIdUnknown);
        assert_eq!(c(Some("websocket"), None, Some("4"), false, true), BadHandshakeMethod);
        assert_eq!(c(Some("websocket"), None, Some("4"), true, false), BadRequest);
        assert_eq!(
            c(Some("websocket"), None, Some("3"), true, true),
            UnsupportedProtocolVersion
        );
        assert_eq!(
            UnsupportedProtocolVersion.body(),
            r#"{"code":5,"message":"Unsupported protocol version"}"#
        );
    }
}
