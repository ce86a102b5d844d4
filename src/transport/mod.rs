//! One Engine.IO session over one WebSocket: the open packet, heartbeats, the outbound queue and
//! the reasons a connection ends.
//!
//! A connection is served by one task that owns the socket; everything else reaches the client
//! through its [`Outbox`]. The transport hands `message` packets up as opaque text or bytes and
//! never looks inside them: Socket.IO packets, namespaces and rooms belong to the gateway.

mod outbox;
mod websocket;

pub use outbox::{Frame, Outbox};
pub use websocket::{EngineConnection, Inbound, TransportConfig};

/// Why a connection ended. Every close is logged and counted under [`CloseReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent an Engine.IO close packet or a WebSocket close frame.
    ClientClose,
    /// The TCP connection ended without a close.
    TransportClose,
    /// Reading or writing the socket failed.
    TransportError,
    /// No pong within `pingTimeout` of a ping.
    PingTimeout,
    /// No namespace was connected within `connectTimeout`.
    ConnectTimeout,
    /// A message larger than `maxPayload`.
    PayloadTooLarge,
    /// A packet that is not valid Engine.IO or Socket.IO.
    ParseError,
    /// The client does not read fast enough: its outbound queue or a write hit its limit.
    SlowConsumer,
    /// The server disconnected it (a CONNECT_ERROR on auth, an admin or cluster disconnect).
    ServerDisconnect,
    /// The gateway is shutting down.
    ShuttingDown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientClose => "client_close",
            Self::TransportClose => "transport_close",
            Self::TransportError => "transport_error",
            Self::PingTimeout => "ping_timeout",
            Self::ConnectTimeout => "connect_timeout",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ParseError => "parse_error",
            Self::SlowConsumer => "slow_consumer",
            Self::ServerDisconnect => "server_disconnect",
            Self::ShuttingDown => "shutting_down",
        }
    }

    pub const ALL: [CloseReason; 10] = [
        Self::ClientClose,
        Self::TransportClose,
        Self::TransportError,
        Self::PingTimeout,
        Self::ConnectTimeout,
        Self::PayloadTooLarge,
        Self::ParseError,
        Self::SlowConsumer,
        Self::ServerDisconnect,
        Self::ShuttingDown,
    ];

    /// The WebSocket close code sent with it.
    pub fn ws_code(self) -> u16 {
        match self {
            Self::PayloadTooLarge => 1009,
            Self::ParseError => 1002,
            Self::SlowConsumer => 1008,
            Self::ShuttingDown => 1001,
            _ => 1000,
        }
    }
}
