//! Every open Engine.IO session of this node, by session id: how HTTP requests and upgrades
//! find theirs, and how shutdown reaches them all.

use super::close::CloseReason;
use super::config::TransportConfig;
use super::outbox::Outbox;
use super::polling::PollingSession;
use crate::metrics::Metrics;
use crate::protocol::engineio::{OpenPacket, TransportKind};
use dashmap::DashMap;
use std::sync::Arc;

/// A registered session, as HTTP requests carrying its id see it.
#[derive(Clone)]
pub struct SessionHandle {
    pub outbox: Arc<Outbox>,
    /// An opaque tag of what the handshake carried that every later request of the session must
    /// carry too (the HTTP layer's: a hash of the session cookie); 0 when nothing is required.
    pub binding: u64,
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
    pub(super) config: TransportConfig,
    sessions: DashMap<Arc<str>, SessionHandle>,
    /// Where the sessions' outboxes count what they drop.
    pub(super) metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(config: TransportConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Engine {
            config,
            sessions: DashMap::new(),
            metrics,
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

    pub(super) fn open_packet(&self, sid: &str, upgrade_to_websocket: bool) -> String {
        OpenPacket {
            sid,
            upgrade_to_websocket,
            ping_interval_ms: self.config.ping_interval.as_millis() as u64,
            ping_timeout_ms: self.config.ping_timeout.as_millis() as u64,
            max_payload: self.config.max_payload,
        }
        .encode()
    }

    pub(super) fn register(&self, sid: &Arc<str>, handle: SessionHandle) {
        self.sessions.insert(sid.clone(), handle);
    }

    pub(super) fn unregister(&self, sid: &str) {
        self.sessions.remove(sid);
    }
}
