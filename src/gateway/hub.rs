//! The gateway of one node (the hub, in centrifuge's terms): its namespaces, the session index,
//! the registry of Engine.IO sessions, readiness and drain, and the settings every connection
//! follows.
//!
//! Owns who is where; what one connection does is [`super::connection`]'s. Knows nothing about
//! Redis pub/sub: the cluster layer calls in through [`Gateway::namespace`] and
//! [`super::Namespace`] to deliver broadcasts and apply remote requests.

use super::namespace::{Namespace, Namespaces};
use super::pending::PendingSessions;
use super::policy::{ClientPolicy, RoomPattern, UserBudgets};
use super::recovery::Recovery;
use super::sessions::{Revocation, Sessions};
use super::socket::{Room, Socket};
use crate::auth::{Identity, SessionAuth};
use crate::metrics::Metrics;
use crate::protocol::socketio::Packet;
use crate::tasks::Tasks;
use crate::transport::{CloseReason, Engine, TransportConfig};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a gateway does with sockets and their events. The defaults are the gateway's: nothing
/// on connect, and every event unhandled.
pub trait SocketHooks: Send + Sync + 'static {
    /// A socket has joined its namespace; `auth` is the CONNECT payload (`{}` when none), which
    /// wsgate does not keep.
    fn on_connect(&self, _socket: &Arc<Socket>, _auth: &Value) {}

    /// A client event (`packet.data` is `[name, ...args]`). Return false when nothing handles
    /// it: it is then counted and, if the client asked for an ack, answered with
    /// `{"ok":false,"error":"unhandled"}` so the client never waits forever.
    fn on_event(&self, _socket: &Arc<Socket>, _packet: Packet) -> bool {
        false
    }
}

/// The gateway's own hooks: no event handlers yet.
pub struct NoHooks;
impl SocketHooks for NoHooks {}

/// Names of the rooms an authenticated socket joins. `{user}` is the session's user (strings
/// as they are, anything else as JSON) and `{sid}` the express-session id; an empty template
/// joins no room.
#[derive(Debug, Clone)]
pub struct RoomTemplates {
    pub user: String,
    pub session: String,
}

impl Default for RoomTemplates {
    fn default() -> Self {
        RoomTemplates {
            user: "user:{user}".into(),
            session: "session:{sid}".into(),
        }
    }
}

impl RoomTemplates {
    /// Patterns of every room these templates can make, for any user and session: rooms no
    /// client may join or leave by itself.
    pub(super) fn reserved(&self) -> Vec<RoomPattern> {
        [&self.user, &self.session]
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(|t| RoomPattern::parse(&fill(t, "*", "*")))
            .collect()
    }

    pub(super) fn rooms_for(&self, identity: &Identity) -> Vec<Room> {
        let user = match &identity.user {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        [&self.user, &self.session]
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(|t| fill(t, &user, &identity.session_id).into())
            .collect()
    }
}

/// `template` with `{user}` and `{sid}` replaced in one pass, so a user named `{sid}` stays that
/// name instead of becoming the session id.
fn fill(template: &str, user: &str, sid: &str) -> String {
    let mut out = String::with_capacity(template.len() + user.len() + sid.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let (value, token) = if tail.starts_with("{user}") {
            (user, "{user}")
        } else if tail.starts_with("{sid}") {
            (sid, "{sid}")
        } else {
            ("{", "{")
        };
        out.push_str(value);
        rest = &tail[token.len()..];
    }
    out.push_str(rest);
    out
}

/// How sessions are admitted before they hold a connected socket, and how many a user may hold.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Sessions not yet connected, on the node (`usize::MAX`: no limit).
    pub max_pending_sessions: usize,
    /// Sessions not yet connected, from one client address (`usize::MAX`: no limit).
    pub max_pending_sessions_per_ip: usize,
    /// A session must connect a namespace within this (or `--connect-timeout`, if shorter).
    pub pending_timeout: Duration,
    /// Connected sockets of one user on the node (`None`: no limit); counted in the user's
    /// room, so it needs a `--user-room` template.
    pub max_connections_per_user: Option<usize>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_pending_sessions: 4096,
            max_pending_sessions_per_ip: 256,
            pending_timeout: Duration::from_secs(10),
            max_connections_per_user: Some(100),
        }
    }
}

/// Settings of a [`Gateway`].
pub struct GatewayConfig {
    pub namespaces: Vec<String>,
    /// `None` lets everyone in (protocol tests and examples only).
    pub auth: Option<SessionAuth>,
    pub rooms: RoomTemplates,
    pub transport: TransportConfig,
    pub hooks: Arc<dyn SocketHooks>,
    /// How often every session is revalidated (`None`: never).
    pub revalidate_interval: Option<Duration>,
    /// Socket activity extends its session's TTL at most this often (`None`: never).
    pub touch_interval: Option<Duration>,
    /// What clients may do on their own: join rooms, how many events.
    pub policy: ClientPolicy,
    /// The counters `/metrics` shows, shared with the hooks.
    pub metrics: Arc<Metrics>,
    /// Where the node's tasks are tracked (the hooks' tasks too, when they spawn any).
    pub tasks: Tasks,
    /// The pending budget and the per-user cap.
    pub admission: Admission,
}

pub struct Gateway {
    pub(super) namespaces: Arc<Namespaces>,
    pub(super) sessions: Arc<Sessions>,
    pub(super) rooms: RoomTemplates,
    /// Every open Engine.IO session, so requests can find theirs and shutdown can reach those
    /// with no namespace yet.
    engine: Arc<Engine>,
    pub(super) hooks: Arc<dyn SocketHooks>,
    pub(super) policy: ClientPolicy,
    /// What each user may still send on this node, across its sockets.
    pub(super) user_budgets: UserBudgets,
    /// Rooms the templates assign (any user's, any session's): never a client's to join or leave.
    reserved_rooms: Vec<RoomPattern>,
    /// Session lookups under way (handshakes waiting for the store), for admission.
    pub(super) lookups_in_flight: AtomicUsize,
    /// False once the node is draining: the balancer should send no more clients.
    ready: AtomicBool,
    /// Whether readiness includes Redis (a node started with the cluster adapter).
    needs_redis: AtomicBool,
    tasks: Tasks,
    pub(super) admission: Admission,
    /// Sessions not yet connected (see [`Admission`]).
    pending: Arc<PendingSessions>,
    /// Connection state recovery, when the cluster adapter provides it.
    recovery: std::sync::OnceLock<Arc<dyn Recovery>>,
    pub metrics: Arc<Metrics>,
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Arc<Self> {
        let namespaces = Arc::new(Namespaces::new(&config.namespaces));
        let sessions = Sessions::new(
            config.auth,
            namespaces.clone(),
            config.touch_interval,
            config.metrics.clone(),
            config.tasks.clone(),
        );
        sessions.start(config.revalidate_interval);
        Arc::new(Gateway {
            namespaces,
            sessions,
            user_budgets: UserBudgets::default(),
            reserved_rooms: config.rooms.reserved(),
            rooms: config.rooms,
            engine: Engine::new(config.transport, config.metrics.clone()),
            hooks: config.hooks,
            policy: config.policy,
            lookups_in_flight: AtomicUsize::new(0),
            ready: AtomicBool::new(true),
            needs_redis: AtomicBool::new(false),
            tasks: config.tasks,
            pending: PendingSessions::new(
                config.admission.max_pending_sessions,
                config.admission.max_pending_sessions_per_ip,
            ),
            admission: config.admission,
            recovery: std::sync::OnceLock::new(),
            metrics: config.metrics,
        })
    }

    /// Turns connection state recovery on (once; the cluster adapter calls it at start).
    pub fn set_recovery(&self, recovery: Arc<dyn Recovery>) {
        let _ = self.recovery.set(recovery);
    }

    /// Connection state recovery, if it is on.
    pub fn recovery(&self) -> Option<&Arc<dyn Recovery>> {
        self.recovery.get()
    }

    pub fn auth(&self) -> Option<&SessionAuth> {
        self.sessions.auth()
    }

    /// The sockets of each express-session, and their upkeep.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The budget of sessions not yet connected, which the HTTP layer takes a slot of for every
    /// session it opens.
    pub fn pending(&self) -> &Arc<PendingSessions> {
        &self.pending
    }

    /// Where this node's tasks are tracked.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    pub fn transport(&self) -> &TransportConfig {
        self.engine.config()
    }

    /// The registry of Engine.IO sessions, for the HTTP endpoint.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.namespaces.iter()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Readiness includes Redis from now on (the node joined the cluster).
    pub fn require_redis(&self) {
        self.needs_redis.store(true, Ordering::Relaxed);
    }

    /// Whether this node should get new clients: `Err` says why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("draining");
        }
        if self.needs_redis.load(Ordering::Relaxed) && self.metrics.pubsub_up.load(Ordering::Relaxed) != 1 {
            return Err("Redis unreachable");
        }
        Ok(())
    }

    /// Whether `room` is one wsgate assigns, which no client may join or leave by itself,
    /// whatever `--allow-join` says: a user's room, a session's room (for any user and session),
    /// or a socket id (20 characters of base64url, as Node's and wsgate's ids are).
    pub fn is_reserved_room(&self, room: &str) -> bool {
        let socket_id = room.len() == 20
            && room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        socket_id || self.reserved_rooms.iter().any(|p| p.matches(room, ""))
    }

    /// Session lookups under way.
    pub fn lookups_in_flight(&self) -> usize {
        self.lookups_in_flight.load(Ordering::Relaxed)
    }

    /// Open Engine.IO sessions, on either transport.
    pub fn connection_count(&self) -> usize {
        self.engine.len()
    }

    /// Disconnects one socket from its namespace: the client gets a DISCONNECT packet, and with
    /// `close_connection` its whole engine connection is closed.
    pub fn disconnect(&self, socket: &Socket, close_connection: bool) {
        self.namespaces.disconnect(socket, close_connection);
    }

    /// The open sockets of express-session `session` on this node.
    pub fn sockets_of_session(&self, session: &str) -> Vec<Arc<Socket>> {
        self.sessions.sockets_of(session)
    }

    /// Disconnects every socket of `session` on this node, because the web app ended it.
    /// Returns how many.
    pub fn revoke_session(&self, session: &str, why: Revocation) -> usize {
        self.sessions.revoke(session, why)
    }

    /// Reads `session` again (its record was rewritten) and disconnects its sockets if it has
    /// no user any more, or another one.
    pub async fn recheck_session(&self, session: &str) {
        self.sessions.recheck(session).await
    }

    /// Checks every authenticated socket's session against the store (see
    /// [`Sessions::revalidate`]).
    pub async fn revalidate_sessions(&self) {
        self.sessions.revalidate().await
    }

    /// Revalidates every session on a task of its own (after missed store events).
    pub fn revalidate_sessions_soon(&self) {
        self.sessions.revalidate_soon()
    }

    /// Closes every connection, for shutdown: the transport is closed (WebSocket code 1001, or
    /// the polling close packet) without a Socket.IO DISCONNECT, so clients reconnect by
    /// themselves, to another node.
    pub fn close_all(&self) {
        self.engine.close_all(CloseReason::ShuttingDown);
    }

    /// Closes every connection in `batches` spread evenly over `over`, so the clients of a node
    /// that is going away reconnect to the others without a thundering herd. Returns once the
    /// last batch was asked to close.
    pub async fn drain(&self, over: Duration, batches: usize) {
        let sids = self.engine.sids();
        let batches = batches.clamp(1, sids.len().max(1));
        let per_batch = sids.len().div_ceil(batches);
        let pause = over / batches as u32;
        for (i, batch) in sids.chunks(per_batch.max(1)).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for sid in batch {
                if let Some(session) = self.engine.lookup(sid) {
                    session.outbox.close(CloseReason::ShuttingDown);
                }
            }
        }
        // Sessions opened meanwhile (the listeners stopped first, so only in-flight ones).
        self.engine.close_all(CloseReason::ShuttingDown);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn room_templates_substitute_once() {
        assert_eq!(super::fill("user:{user}", "{sid}", "abc"), "user:{sid}");
        assert_eq!(super::fill("s:{sid}/{user}", "u", "abc"), "s:abc/u");
        assert_eq!(super::fill("{a}{user", "u", "abc"), "{a}{user");
        assert_eq!(super::fill("{{user}}", "u", "abc"), "{u}");
    }
}
