//! Heartbeat and size limits of every Engine.IO session.

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
