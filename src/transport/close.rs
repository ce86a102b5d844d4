//! Why an Engine.IO session ended: every close is logged and counted under its reason.

/// Why a session ended. Every close is logged and counted under [`CloseReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent an Engine.IO close packet or a WebSocket close frame.
    ClientClose,
    /// The TCP connection (or a pending polling request) ended without a close.
    TransportClose,
    /// Reading or writing failed, or a polling client broke the rules (two concurrent `GET`s
    /// or `POST`s, a binary `POST` body).
    TransportError,
    /// No pong within `pingTimeout` of a ping.
    PingTimeout,
    /// No namespace was connected within `connectTimeout`.
    ConnectTimeout,
    /// A message larger than `maxPayload`.
    PayloadTooLarge,
    /// A packet that is not valid Engine.IO or Socket.IO.
    ParseError,
    /// The client does not read: its writes stayed blocked for the slow-consumer timeout, or its
    /// queue passed the hard cap.
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

impl From<CloseReason> for crate::metrics::Disconnect {
    fn from(reason: CloseReason) -> Self {
        use crate::metrics::Disconnect as D;
        match reason {
            CloseReason::ClientClose => D::ClientClose,
            CloseReason::TransportClose => D::TransportClose,
            CloseReason::TransportError => D::TransportError,
            CloseReason::PingTimeout => D::PingTimeout,
            CloseReason::ConnectTimeout => D::ConnectTimeout,
            CloseReason::PayloadTooLarge => D::PayloadTooLarge,
            CloseReason::ParseError => D::ParseError,
            CloseReason::SlowConsumer => D::SlowConsumer,
            CloseReason::ServerDisconnect => D::ServerDisconnect,
            CloseReason::ShuttingDown => D::ShuttingDown,
        }
    }
}
