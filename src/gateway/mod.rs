//! The Socket.IO server: namespaces, sockets, rooms, and who may connect.
//!
//! Owns the per-session loop (decode a packet, apply it), the CONNECT policy (served
//! namespace, authenticated identity, user and session rooms) and what happens to client events
//! ([`SocketHooks`]). Knows nothing about Redis pub/sub: the cluster layer calls in through
//! [`Gateway::namespace`] and [`Namespace`] to deliver broadcasts and apply remote requests.
//! Knows nothing about transports either: it talks to an [`EngineSession`], carried by
//! WebSocket or HTTP long-polling.

mod namespace;
mod policy;

pub use policy::{ClientPolicy, RoomPattern};

pub use namespace::{frames, parse_query, AckHandler, Handshake, Namespace, Room, RoomEvent, Socket, MAX_PENDING_ACKS};

use crate::auth::{AuthError, Identity, SessionAuth};
use crate::metrics::Metrics;
use crate::protocol::new_id;
use crate::protocol::socketio::{Decoder, Packet, PacketKind};
use crate::transport::{CloseReason, Engine, EngineSession, Inbound, TransportConfig};
use dashmap::DashMap;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

/// What a gateway does with sockets and their events. The defaults are the gateway's: nothing
/// on connect, and every event unhandled.
pub trait SocketHooks: Send + Sync + 'static {
    /// A socket has joined its namespace; `auth` is the CONNECT payload (`{}` when none).
    fn on_connect(&self, _socket: &Arc<Socket>) {}

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
    fn rooms_for(&self, identity: &Identity) -> Vec<Room> {
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

/// Settings of a [`Gateway`].
pub struct GatewayConfig {
    pub namespaces: Vec<String>,
    /// `None` lets everyone in (protocol tests and examples only).
    pub auth: Option<SessionAuth>,
    pub rooms: RoomTemplates,
    pub transport: TransportConfig,
    pub hooks: Arc<dyn SocketHooks>,
    /// How often [`Gateway::revalidate_sessions`] runs (`None`: never).
    pub revalidate_interval: Option<std::time::Duration>,
    /// Socket activity extends its session's TTL at most this often (`None`: never).
    pub touch_interval: Option<std::time::Duration>,
    /// What clients may do on their own: join rooms, how many events.
    pub policy: ClientPolicy,
    /// The counters `/metrics` shows, shared with the hooks.
    pub metrics: Arc<Metrics>,
}

/// The outcome of authenticating a handshake (`None` when auth is off).
pub type HandshakeAuth = Option<Result<Identity, AuthError>>;

pub struct Gateway {
    namespaces: HashMap<String, Arc<Namespace>>,
    auth: Option<SessionAuth>,
    rooms: RoomTemplates,
    /// Every open Engine.IO session, so requests can find theirs and shutdown can reach those
    /// with no namespace yet.
    engine: Arc<Engine>,
    hooks: Arc<dyn SocketHooks>,
    /// Sockets by express-session id (held weakly; pruned as they go), for revocation.
    sessions: DashMap<Arc<str>, Vec<Weak<Socket>>>,
    touch_interval: Option<std::time::Duration>,
    policy: ClientPolicy,
    /// When each session was last touched, and the TTL a touch gives it.
    touched: DashMap<Arc<str>, (std::time::Instant, u64)>,
    /// Session lookups under way (handshakes waiting for Redis), for admission.
    lookups_in_flight: std::sync::atomic::AtomicUsize,
    /// False once the node is draining: the balancer should send no more clients.
    ready: std::sync::atomic::AtomicBool,
    /// Whether readiness includes Redis (a node started with the cluster adapter).
    needs_redis: std::sync::atomic::AtomicBool,
    pub metrics: Arc<Metrics>,
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Arc<Self> {
        let mut namespaces: HashMap<_, _> = config
            .namespaces
            .iter()
            .map(|n| (n.clone(), Arc::new(Namespace::new(n))))
            .collect();
        namespaces
            .entry("/".into())
            .or_insert_with(|| Arc::new(Namespace::new("/")));
        let gateway = Arc::new(Gateway {
            namespaces,
            auth: config.auth,
            rooms: config.rooms,
            engine: Engine::new(config.transport),
            hooks: config.hooks,
            sessions: DashMap::new(),
            touch_interval: config.touch_interval,
            policy: config.policy,
            touched: DashMap::new(),
            lookups_in_flight: Default::default(),
            ready: std::sync::atomic::AtomicBool::new(true),
            needs_redis: std::sync::atomic::AtomicBool::new(false),
            metrics: config.metrics,
        });
        if let (Some(every), Some(_)) = (config.revalidate_interval, &gateway.auth) {
            // Holds only a weak reference: the task ends with the gateway.
            let weak = Arc::downgrade(&gateway);
            tokio::spawn(async move {
                // Each node starts at a random point of the interval, so the nodes of a cluster
                // do not all read every session at the same moment.
                let offset = every.mul_f64(rand::random::<f64>());
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(gateway) = weak.upgrade() else { return };
                    gateway.revalidate_sessions().await;
                }
            });
        }
        if let Some(mut changes) = gateway.auth.as_ref().and_then(|auth| auth.store.watch()) {
            let weak = Arc::downgrade(&gateway);
            tokio::spawn(async move {
                while let Some(change) = changes.recv().await {
                    let Some(gateway) = weak.upgrade() else { return };
                    gateway.on_store_change(change);
                }
            });
        }
        gateway
    }

    /// A change the session store reported (Postgres NOTIFY): the session is read again, as for
    /// a rewritten Redis key; after missed reports, every session is.
    fn on_store_change(self: &Arc<Self>, change: crate::auth::StoreEvent) {
        match change {
            crate::auth::StoreEvent::Changed(session) => {
                if !self.sockets_of_session(&session).is_empty() {
                    let gateway = self.clone();
                    tokio::spawn(async move { gateway.recheck_session(&session).await });
                }
            }
            crate::auth::StoreEvent::Resync => {
                let gateway = self.clone();
                tokio::spawn(async move { gateway.revalidate_sessions().await });
            }
        }
    }

    pub fn auth(&self) -> Option<&SessionAuth> {
        self.auth.as_ref()
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
        self.namespaces.values()
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
        let Some(nsp) = self.namespace(&socket.nsp) else {
            return;
        };
        if nsp.remove(socket) {
            socket.send(&Packet::disconnect(&socket.nsp));
        }
        if close_connection {
            socket.outbox().close(CloseReason::ServerDisconnect);
        }
    }

    /// The open sockets of express-session `session` on this node.
    pub fn sockets_of_session(&self, session: &str) -> Vec<Arc<Socket>> {
        self.sessions
            .get(session)
            .map(|sockets| {
                sockets
                    .iter()
                    .filter_map(Weak::upgrade)
                    .filter(|s| s.is_connected())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn index_session(&self, socket: &Arc<Socket>, ttl_secs: u64) {
        if let (Some(session), Some(_)) = (&socket.session, self.touch_interval) {
            // A session's first socket starts its touch clock: the handshake just read it.
            self.touched
                .entry(session.clone())
                .or_insert((std::time::Instant::now(), ttl_secs));
        }
        if let Some(session) = &socket.session {
            let mut sockets = self.sessions.entry(session.clone()).or_default();
            sockets.retain(|s| s.upgrade().is_some_and(|s| s.is_connected()));
            sockets.push(Arc::downgrade(socket));
        }
    }

    /// Extends the session of `socket` after client activity, as express-session's rolling touch
    /// does, at most once per touch interval per session (and never for a session let in
    /// during a store outage: its TTL is unknown).
    fn touch(self: &Arc<Self>, socket: &Socket) {
        let (Some(every), Some(session)) = (self.touch_interval, &socket.session) else {
            return;
        };
        let now = std::time::Instant::now();
        let ttl = match self.touched.get_mut(session) {
            Some(mut entry) if entry.1 > 0 && now.duration_since(entry.0) >= every => {
                entry.0 = now;
                entry.1
            }
            _ => return,
        };
        let (gateway, session) = (self.clone(), session.clone());
        tokio::spawn(async move {
            let Some(auth) = &gateway.auth else { return };
            match auth.store.touch(&session, ttl).await {
                Ok(true) => gateway.metrics.inc("wsgate_session_touches_total", "extended"),
                // The key is gone: nothing is resurrected (revocation closes the sockets).
                Ok(false) => gateway.metrics.inc("wsgate_session_touches_total", "gone"),
                Err(_) => gateway.metrics.inc("wsgate_session_touches_total", "store_unavailable"),
            }
        });
    }

    /// Disconnects every socket of `session` on this node, because the web app ended it
    /// (`why`: the keyspace event, e.g. `del`, `expired`, `evicted`). Returns how many.
    pub fn revoke_session(&self, session: &str, why: &'static str) -> usize {
        let sockets = self.sockets_of_session(session);
        if !sockets.is_empty() {
            self.metrics.inc("wsgate_revocations_total", why);
            tracing::debug!(
                why,
                sockets = sockets.len(),
                "session ended in the store; disconnecting its sockets"
            );
        }
        for socket in &sockets {
            self.disconnect(socket, true);
        }
        sockets.len()
    }

    /// Reads `session` again (its record was rewritten) and disconnects its sockets if it has
    /// no user any more, or another one.
    pub async fn recheck_session(&self, session: &str) {
        let Some(auth) = &self.auth else { return };
        let sockets = self.sockets_of_session(session);
        if sockets.is_empty() {
            return;
        }
        match auth.store.users(&[session]).await {
            Ok(users) => {
                if let Some(user) = users.into_iter().next() {
                    self.judge(&sockets, &user, "wsgate_revocations_total");
                }
            }
            // Not a reason to disconnect: the periodic round will look again.
            Err(err) => tracing::debug!(error = %err, "session recheck skipped: store unavailable"),
        }
    }

    /// Disconnects `sockets` of one session if its record says so; returns whether it did.
    fn judge(
        &self,
        sockets: &[Arc<Socket>],
        user: &Result<Value, crate::auth::LookupError>,
        family: &'static str,
    ) -> bool {
        let reason = match user {
            Err(crate::auth::LookupError::NoSession) => "session_gone",
            Err(_) => "no_user",
            Ok(user) if sockets.iter().any(|s| s.user.as_ref() != Some(user)) => "user_changed",
            Ok(_) => return false,
        };
        self.metrics.inc(family, reason);
        tracing::debug!(
            reason,
            sockets = sockets.len(),
            "session no longer valid; disconnecting its sockets"
        );
        for socket in sockets {
            self.disconnect(socket, true);
        }
        true
    }

    /// Checks every authenticated socket's session against the store, as Express would on its
    /// next request: sockets whose session is gone (logout, expiry, destroy), has no user any
    /// more, or has another user are disconnected. One `MGET` per 1000 sessions. When the store
    /// is unavailable nobody is disconnected (the next round tries again).
    pub async fn revalidate_sessions(&self) {
        let Some(auth) = &self.auth else { return };
        // Sessions whose sockets are all gone leave the index here.
        self.sessions.retain(|_, sockets| {
            sockets.retain(|s| s.upgrade().is_some_and(|s| s.is_connected()));
            !sockets.is_empty()
        });
        self.touched.retain(|session, _| self.sessions.contains_key(session));
        let sessions: Vec<Arc<str>> = self.sessions.iter().map(|e| e.key().clone()).collect();
        let mut gone = 0usize;
        for chunk in sessions.chunks(1000) {
            let users = match auth.store.users(chunk).await {
                Ok(users) => users,
                Err(err) => {
                    self.metrics.inc("wsgate_revalidations_total", "store_unavailable");
                    tracing::warn!(error = %err, "session revalidation skipped: store unavailable; nobody is disconnected");
                    return;
                }
            };
            for (session, user) in chunk.iter().zip(users) {
                let sockets = self.sockets_of_session(session);
                if !sockets.is_empty() && self.judge(&sockets, &user, "wsgate_revalidations_total") {
                    gone += 1;
                }
            }
        }
        if gone >= 100 && gone * 2 >= sessions.len() {
            tracing::warn!(
                gone,
                sessions = sessions.len(),
                "most sessions vanished at once and their sockets were disconnected: if the session store was flushed or restarted empty, everyone has to log in again"
            );
        }
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
    pub async fn drain(&self, over: std::time::Duration, batches: usize) {
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

    /// Serves one Engine.IO session until it closes.
    #[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see below
    pub fn serve(
        self: Arc<Self>,
        mut conn: EngineSession,
        handshake: Arc<Handshake>,
        auth: Box<PendingAuth>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Not an `async fn`: that moves its arguments into locals and keeps their original
        // slots too, storing the 512-byte session twice in every connection's task. The
        // block uses its captures in place. `auth` is boxed and `handshake` shared for the
        // same reason: their slots outlive their use.
        async move {
            let sid = conn.sid().clone();
            self.metrics.connections.fetch_add(1, Ordering::Relaxed);

            // The session lookup runs while the open packet travels to the client.
            let opened = conn.flush().await;
            let identity = match opened {
                Ok(()) => auth.resolve(&self).await,
                Err(_) => None,
            };
            let mut session = Session {
                gateway: &self,
                identity,
                handshake,
                sockets: Vec::new(),
                events: policy::TokenBucket::new(self.policy.event_burst),
                joined: 0,
            };
            let mut decoder = Decoder::default();
            // Attachments of a binary packet must all arrive by then (pingTimeout after its header).
            let mut attachments_due: Option<tokio::time::Instant> = None;
            let reason = loop {
                if let Err(reason) = opened {
                    break reason;
                }
                // The deadline is the session's (`set_message_deadline`): a timeout around
                // `next()` here would keep a second copy of its future and timer in every task.
                let inbound = match conn.next().await {
                    Ok(inbound) => inbound,
                    Err(CloseReason::ParseError)
                        if attachments_due.is_some_and(|due| due <= tokio::time::Instant::now()) =>
                    {
                        break self.refuse_input(&sid, "incomplete_binary", CloseReason::ParseError)
                    }
                    Err(reason) => break reason,
                };
                self.metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                let decoded = match &inbound {
                    Inbound::Binary(data) => decoder.decode_binary(data.clone()),
                    Inbound::Text(_) => decoder.decode_text(inbound.text().unwrap_or_default()),
                };
                let packet = match decoded {
                    Ok(Some(packet)) => {
                        if attachments_due.take().is_some() {
                            conn.set_message_deadline(None);
                        }
                        packet
                    }
                    Ok(None) => {
                        // Attachments are held until the packet is complete: only for a joined
                        // namespace, at most --max-payload in all, for a bounded time.
                        let Some((nsp, bytes)) = decoder.pending() else {
                            continue;
                        };
                        if !session.sockets.iter().any(|(joined, _)| **joined == *nsp) {
                            break self.refuse_input(&sid, "binary_not_joined", CloseReason::ParseError);
                        }
                        if bytes > self.transport().max_payload {
                            break self.refuse_input(&sid, "attachments_too_large", CloseReason::PayloadTooLarge);
                        }
                        if attachments_due.is_none() {
                            attachments_due = Some(tokio::time::Instant::now() + self.transport().ping_timeout);
                            conn.set_message_deadline(attachments_due);
                        }
                        continue;
                    }
                    Err(err) => {
                        self.metrics.inc("wsgate_malformed_packets_total", "socketio");
                        tracing::debug!(engine_sid = %sid, error = %err, "malformed Socket.IO packet; closing the connection");
                        break CloseReason::ParseError;
                    }
                };
                if let Err(reason) = session.on_packet(&mut conn, packet) {
                    break reason;
                }
            };
            for (_, socket) in session.sockets.drain(..) {
                if let Some(nsp) = self.namespace(&socket.nsp) {
                    nsp.remove(&socket);
                }
            }
            self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            self.metrics.inc("wsgate_disconnects_total", reason.as_str());
            tracing::debug!(engine_sid = %sid, reason = reason.as_str(), "connection closed");
            conn.close(reason).await;
        }
    }
}

impl Gateway {
    /// Counts and logs client input refused to bound what one session can hold; returns the
    /// reason its session ends with.
    fn refuse_input(&self, sid: &str, what: &'static str, reason: CloseReason) -> CloseReason {
        self.metrics.inc("wsgate_malformed_packets_total", what);
        tracing::debug!(engine_sid = %sid, what, "client input refused; closing the session");
        reason
    }
}

/// The authentication of a handshake: already decided at the upgrade, or still to be done from
/// the request's `Cookie` headers once the connection is open.
pub enum PendingAuth {
    Decided(HandshakeAuth),
    Cookies(Vec<String>),
}

impl PendingAuth {
    async fn resolve(self, gateway: &Gateway) -> HandshakeAuth {
        match (self, gateway.auth.as_ref()) {
            (PendingAuth::Decided(decided), _) => decided,
            (PendingAuth::Cookies(_), None) => None,
            (PendingAuth::Cookies(cookies), Some(auth)) => {
                gateway.lookups_in_flight.fetch_add(1, Ordering::Relaxed);
                let decided = auth.authenticate(cookies.iter().map(String::as_str)).await;
                gateway.lookups_in_flight.fetch_sub(1, Ordering::Relaxed);
                Some(decided)
            }
        }
    }
}

/// The per-connection state the loop in [`Gateway::serve`] works on.
struct Session<'g> {
    gateway: &'g Arc<Gateway>,
    identity: HandshakeAuth,
    handshake: Arc<Handshake>,
    /// Namespaces this connection has joined (rarely more than one).
    sockets: Vec<(Arc<str>, Arc<Socket>)>,
    /// Events this connection may still send.
    events: policy::TokenBucket,
    /// Rooms this connection's client joined on its own.
    joined: u16,
}

impl Session<'_> {
    fn on_packet(&mut self, conn: &mut EngineSession, packet: Packet) -> Result<(), CloseReason> {
        let joined = self.sockets.iter().position(|(nsp, _)| **nsp == *packet.nsp);
        match (packet.kind, joined) {
            (PacketKind::Connect, None) => self.connect(conn, packet),
            (PacketKind::Connect, Some(_)) | (PacketKind::ConnectError, _) => {
                self.gateway
                    .metrics
                    .inc("wsgate_malformed_packets_total", "invalid_state");
                Err(CloseReason::ParseError)
            }
            (_, None) => {
                self.gateway
                    .metrics
                    .inc("wsgate_malformed_packets_total", "invalid_state");
                Err(CloseReason::ParseError)
            }
            (kind, Some(index)) => {
                let socket = self.sockets[index].1.clone();
                if !socket.is_connected() {
                    // Disconnected by the server while this packet was on its way: drop it.
                    self.sockets.swap_remove(index);
                    return Ok(());
                }
                match kind {
                    PacketKind::Disconnect => {
                        self.sockets.swap_remove(index);
                        if let Some(nsp) = self.gateway.namespace(&socket.nsp) {
                            nsp.remove(&socket);
                        }
                    }
                    PacketKind::Event => self.event(&socket, packet)?,
                    PacketKind::Ack => {
                        let handler = packet.id.and_then(|id| socket.take_ack(id));
                        match (handler, packet.data) {
                            (Some(handler), Some(Value::Array(args))) => handler(args, packet.attachments),
                            _ => self
                                .gateway
                                .metrics
                                .inc("wsgate_malformed_packets_total", "unexpected_ack"),
                        }
                    }
                    _ => {}
                }
                Ok(())
            }
        }
    }

    fn connect(&mut self, conn: &mut EngineSession, packet: Packet) -> Result<(), CloseReason> {
        let gateway = self.gateway;
        let outbox = conn.outbox().clone();
        let Some(nsp) = gateway.namespace(&packet.nsp) else {
            gateway.metrics.inc("wsgate_invalid_namespace_total", "not_served");
            outbox.push(&frames(&Packet::connect_error(&packet.nsp, "Invalid namespace")));
            return Ok(());
        };
        let (data, rooms) = match &self.identity {
            None => (None, Vec::new()),
            Some(Ok(identity)) => (Some(identity.user.clone()), gateway.rooms.rooms_for(identity)),
            Some(Err(err)) => {
                gateway.metrics.inc("wsgate_auth_total", err.reason());
                match err {
                    AuthError::StoreUnavailable(why) => {
                        let store = gateway.auth.as_ref().map_or("redis", |a| a.store.kind());
                        tracing::warn!(nsp = %packet.nsp, store, error = %why, "session store unavailable; refusing the connection (check --session-store-url, or --redis-url for sessions in Redis, and that the store is up)")
                    }
                    _ => {
                        tracing::debug!(nsp = %packet.nsp, reason = err.reason(), "anonymous connection refused")
                    }
                }
                outbox.push(&frames(&Packet::connect_error(&packet.nsp, err.client_message())));
                // Nothing else is delivered: the connection closes once that packet is out.
                return Err(CloseReason::ServerDisconnect);
            }
        };
        match &self.identity {
            Some(Ok(identity)) if identity.in_grace => {
                gateway.metrics.inc("wsgate_auth_total", "outage_grace");
                tracing::info!(nsp = %packet.nsp, "session store unavailable: let in a session this node verified within --store-outage-grace");
            }
            Some(_) => gateway.metrics.inc("wsgate_auth_total", "ok"),
            None => {}
        }
        let auth = packet.data.unwrap_or_else(|| json!({}));
        let session = match &self.identity {
            Some(Ok(identity)) => Some(identity.session_id.as_str().into()),
            _ => None,
        };
        let socket = Socket::new(
            nsp.name.clone(),
            new_id().into(),
            outbox,
            data,
            self.handshake.clone(),
            auth,
            session,
        );
        nsp.add(&socket, rooms);
        let ttl = match &self.identity {
            Some(Ok(identity)) => identity.ttl_secs,
            _ => 0,
        };
        gateway.index_session(&socket, ttl);
        conn.namespace_connected();
        socket.send(&Packet::connect_ok(&nsp.name, &socket.id));
        self.sockets.push((nsp.name.clone(), socket.clone()));
        gateway.hooks.on_connect(&socket);
        Ok(())
    }

    fn event(&mut self, socket: &Arc<Socket>, packet: Packet) -> Result<(), CloseReason> {
        let gateway = self.gateway;
        gateway.touch(socket);
        let ack = packet.id;
        let refuse = |error: &str| {
            if let Some(id) = ack {
                socket.ack(id, vec![json!({"ok": false, "error": error})], Vec::new());
            }
        };
        let policy = &gateway.policy;
        if !self.events.allow(policy.events_per_second, policy.event_burst) {
            gateway.metrics.inc("wsgate_inbound_events_total", "rate_limited");
            tracing::debug!(socket = %socket.id, "client event refused: past --max-events-per-second");
            refuse("rate_limited");
            // Sustained abuse: a whole burst's worth refused in a row.
            if f64::from(self.events.refused_in_a_row) >= policy.event_burst {
                tracing::info!(socket = %socket.id, "client keeps sending past --max-events-per-second; disconnecting it");
                gateway.metrics.inc("wsgate_inbound_events_total", "abuse_disconnect");
                gateway.disconnect(socket, true);
            }
            return Ok(());
        }
        let name = match &packet.data {
            Some(Value::Array(args)) => args.first().and_then(Value::as_str),
            _ => None,
        };
        let room = || match &packet.data {
            Some(Value::Array(args)) => args.get(1).and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        if name == Some(policy.join_event.as_str()) || name == Some(policy.leave_event.as_str()) {
            let joining = name == Some(policy.join_event.as_str());
            let user = policy::user_text(socket.user.as_ref().unwrap_or(&Value::Null));
            let allowed = room().filter(|room| policy.allow_join.iter().any(|p| p.matches(room, &user)));
            let Some(room) = allowed else {
                gateway.metrics.inc("wsgate_room_requests_total", "forbidden");
                tracing::debug!(socket = %socket.id, "room request refused: no --allow-join pattern matches");
                refuse("forbidden");
                return Ok(());
            };
            let Some(nsp) = gateway.namespace(&socket.nsp) else {
                return Ok(());
            };
            if joining {
                if usize::from(self.joined) >= policy.max_rooms_per_socket {
                    gateway.metrics.inc("wsgate_room_requests_total", "too_many_rooms");
                    tracing::debug!(socket = %socket.id, "room join refused: --max-rooms-per-socket reached");
                    refuse("too_many_rooms");
                    return Ok(());
                }
                if !socket.rooms().iter().any(|r| **r == *room) {
                    self.joined = self.joined.saturating_add(1);
                }
                nsp.join(socket, room.as_str().into());
                gateway.metrics.inc("wsgate_room_requests_total", "joined");
            } else {
                if socket.rooms().iter().any(|r| **r == *room) {
                    self.joined = self.joined.saturating_sub(1);
                }
                nsp.leave(socket, &room);
                gateway.metrics.inc("wsgate_room_requests_total", "left");
            }
            if let Some(id) = ack {
                socket.ack(id, vec![json!({"ok": true})], Vec::new());
            }
            return Ok(());
        }
        if gateway.hooks.on_event(socket, packet) {
            return Ok(());
        }
        gateway.metrics.inc("wsgate_unhandled_events_total", "dropped");
        refuse("unhandled");
        Ok(())
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

    /// The task serving a session is the largest part of what an idle connection costs: keep
    /// its future from growing unnoticed. An async step nested before `serve` in the upgrade
    /// callback once made every task 1.3 KiB larger; `close` taking the session by value stored
    /// it twice; the memcached and Postgres lookups inline added 3.9 KiB (boxed: 2144 bytes);
    /// `serve` as an `async fn` kept its arguments twice (a block over them: 1392 bytes); a
    /// second timer around `next()` and in `close`, and the binary decoder's inline state, made
    /// every task 216 bytes larger (1176 bytes now).
    #[test]
    fn the_session_task_stays_small() {
        fn returned<A, B, C, D, R>(_: fn(A, B, C, D) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        let serve = returned(super::Gateway::serve as fn(_, _, _, _) -> _);
        assert!(serve <= 1184, "Gateway::serve's future is {serve} bytes");
    }
}
