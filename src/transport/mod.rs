//! Engine.IO sessions and the two transports that carry them: WebSocket and HTTP long-polling.
//!
//! An [`EngineSession`] is what the gateway talks to: session id, heartbeat, the bounded
//! outbound queue ([`Outbox`]), the next inbound `message`, and why the session ended. It is
//! served by one task, whatever carries it. A session opened over WebSocket keeps its socket in
//! that task; one opened over polling is fed by HTTP requests through [`PollingSession`] and may
//! be upgraded to WebSocket in the middle of its life, without the gateway noticing.
//!
//! The [`Engine`] registers every open session by id, so polling requests and upgrades can find
//! theirs. The transport hands `message` packets up as opaque text or bytes and never looks
//! inside them: Socket.IO packets, namespaces and rooms belong to the gateway.

mod outbox;
mod polling;
mod session;
mod websocket;

pub use outbox::{Frame, Outbox, OVERSIZED_DROPS};
pub use polling::{Held, PollError, PollingSession};
pub use session::{EngineSession, Inbound};

use crate::protocol::engineio::{OpenPacket, TransportKind};
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;

/// Heartbeat and size limits of every session.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest message (WebSocket) or `POST` body (polling) accepted from a client, in bytes
    /// (`maxPayload`).
    pub max_payload: usize,
    /// Hard cap on the bytes queued for one client: a queue past it closes the session, a
    /// single larger message is dropped for that client.
    pub max_queue_bytes: usize,
    /// A client whose writes stay blocked this long is closed as a slow consumer.
    pub slow_consumer_timeout: Duration,
    /// A session that connects no namespace in this time is closed.
    pub connect_timeout: Duration,
    /// How long a polling client has to finish an upgrade once its WebSocket is open
    /// (engine.io's `upgradeTimeout`).
    pub upgrade_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            max_queue_bytes: 16 << 20,
            slow_consumer_timeout: Duration::from_millis(10_000),
            connect_timeout: Duration::from_millis(45_000),
            upgrade_timeout: Duration::from_millis(10_000),
        }
    }
}

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

/// A registered session, as HTTP requests carrying its id see it.
#[derive(Clone)]
pub struct SessionHandle {
    pub outbox: Arc<Outbox>,
    /// Present for sessions opened over polling (also after they upgraded).
    pub polling: Option<Arc<PollingSession>>,
}

impl SessionHandle {
    /// The transport carrying the session now.
    pub fn transport(&self) -> TransportKind {
        match &self.polling {
            Some(polling) if !polling.is_upgraded() => TransportKind::Polling,
            _ => TransportKind::WebSocket,
        }
    }
}

/// Every open Engine.IO session of this node, by session id.
pub struct Engine {
    config: TransportConfig,
    sessions: DashMap<Arc<str>, SessionHandle>,
}

impl Engine {
    pub fn new(config: TransportConfig) -> Arc<Self> {
        Arc::new(Engine {
            config,
            sessions: DashMap::new(),
        })
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Open sessions, on either transport.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn lookup(&self, sid: &str) -> Option<SessionHandle> {
        self.sessions.get(sid).map(|entry| entry.value().clone())
    }

    /// The ids of the open sessions, in no particular order.
    pub fn sids(&self) -> Vec<Arc<str>> {
        self.sessions.iter().map(|e| e.key().clone()).collect()
    }

    /// Asks every session to close (what is queued is still sent).
    pub fn close_all(&self, reason: CloseReason) {
        for entry in self.sessions.iter() {
            entry.value().outbox.close(reason);
        }
    }

    fn open_packet(&self, sid: &str, upgrade_to_websocket: bool) -> String {
        OpenPacket {
            sid,
            upgrade_to_websocket,
            ping_interval_ms: self.config.ping_interval.as_millis() as u64,
            ping_timeout_ms: self.config.ping_timeout.as_millis() as u64,
            max_payload: self.config.max_payload,
        }
        .encode()
    }

    fn register(&self, sid: &Arc<str>, handle: SessionHandle) {
        self.sessions.insert(sid.clone(), handle);
    }

    fn unregister(&self, sid: &str) {
        self.sessions.remove(sid);
    }
}
