//! One client connection, from its first packet to its close: the loop that decodes each
//! Socket.IO packet and applies it, the CONNECT policy (served namespace, authenticated identity,
//! user and session rooms) and what happens to client events (room requests, rate limits, the
//! [`SocketHooks`]).
//!
//! Talks to an [`EngineSession`] and never to a transport: the connection is the same whether
//! WebSocket or HTTP long-polling carries it.

use super::hub::Gateway;
use super::pending::PendingSlot;
use super::policy::{self, Refusal};
use super::recovery::{Recovery, Restored};
use super::socket::Room;
use super::socket::{frames, Socket};
use crate::auth::{AuthError, Identity};
use crate::metrics::{
    Auth, InboundEvent, InvalidNamespace, Label, Malformed, Recovery as RecoveryOutcome, RoomRequest, UnhandledEvent,
};
use crate::protocol::handshake::Handshake;
use crate::protocol::new_id;
use crate::protocol::socketio::{Decoder, Packet, PacketKind};
use crate::transport::{CloseReason, EngineSession, Inbound};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The outcome of authenticating a handshake (`None` when auth is off).
pub type HandshakeAuth = Option<Result<Identity, AuthError>>;

impl Gateway {
    /// Serves one Engine.IO session until it closes.
    #[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see below
    pub fn serve(
        self: Arc<Self>,
        mut conn: EngineSession,
        handshake: Arc<Handshake>,
        mut opening: Box<Opening>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Not an `async fn`: that moves its arguments into locals and keeps their original
        // slots too, storing the 512-byte session twice in every connection's task. The
        // block uses its captures in place. `auth` is boxed and `handshake` shared for the
        // same reason: their slots outlive their use. Tracked as the node's session task.
        let tasks = self.tasks().clone();
        tasks.track_session(async move {
            let engine_sid = conn.sid().clone();
            self.metrics.connections.fetch_add(1, Ordering::Relaxed);

            let opened = conn.flush().await;
            // A pending session must connect within --pending-timeout (or --connect-timeout,
            // if shorter), not hold its place for the whole connect timeout.
            conn.shorten_connect_deadline(self.admission.pending_timeout);
            // The session is looked up when the client CONNECTs, not now: a logout between the
            // handshake and the CONNECT must refuse it.
            let held = Some(Box::new(Held::Pending {
                auth: Some(std::mem::replace(&mut opening.auth, PendingAuth::Decided(None))),
                slot: opening.pending.take(),
            }));
            drop(opening);
            let mut connection = Connection {
                gateway: &self,
                identity: None,
                handshake,
                sockets: Vec::new(),
                events: policy::TokenBucket::new(self.policy.event_burst),
                held,
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
                        break self.refuse_input(&engine_sid, Malformed::IncompleteBinary, CloseReason::ParseError)
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
                        if !connection.sockets.iter().any(|(joined, _)| **joined == *nsp) {
                            break self.refuse_input(&engine_sid, Malformed::BinaryNotJoined, CloseReason::ParseError);
                        }
                        if bytes > self.transport().max_payload {
                            break self.refuse_input(&engine_sid, Malformed::AttachmentsTooLarge, CloseReason::PayloadTooLarge);
                        }
                        if attachments_due.is_none() {
                            attachments_due = Some(tokio::time::Instant::now() + self.transport().ping_timeout);
                            conn.set_message_deadline(attachments_due);
                        }
                        continue;
                    }
                    Err(err) => {
                        self.metrics.inc(Malformed::Socketio);
                        tracing::debug!(engine_sid = %engine_sid, error = %err, "malformed Socket.IO packet; closing the connection");
                        break CloseReason::ParseError;
                    }
                };
                let handled = if packet.kind == PacketKind::Connect && !connection.joined(&packet.nsp) {
                    // Boxed: it runs once per namespace, and inline its state would make every
                    // connection's task larger for its whole life.
                    connection.connect_boxed(&mut conn, packet).await
                } else {
                    connection.on_packet(packet)
                };
                if let Err(reason) = handled {
                    break reason;
                }
            };
            let recoverable = super::recovery::recoverable(reason);
            for (_, socket) in connection.sockets.drain(..) {
                // Told while the socket still has its rooms (its record keeps them). Gone
                // already: the server disconnected it, which is final.
                self.socket_closed(&socket, socket.is_connected() && recoverable);
                if let Some(nsp) = self.namespace(&socket.nsp) {
                    nsp.remove(&socket);
                }
            }
            self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            self.metrics.inc(crate::metrics::Disconnect::from(reason));
            tracing::debug!(engine_sid = %engine_sid, reason = reason.as_str(), "connection closed");
            conn.close(reason).await;
        })
    }
}

impl Gateway {
    /// A socket left for good or for now: its recovery record is kept or deleted.
    fn socket_closed(&self, socket: &Socket, recoverable: bool) {
        if let (Some(recovery), Some(_)) = (self.recovery(), &socket.pid) {
            recovery.closed(socket, recoverable);
        }
    }

    /// Counts and logs client input refused to bound what one session can hold; returns the
    /// reason its session ends with.
    fn refuse_input(&self, engine_sid: &str, what: Malformed, reason: CloseReason) -> CloseReason {
        self.metrics.inc(what);
        tracing::debug!(
            engine_sid,
            what = what.as_str(),
            "client input refused; closing the session"
        );
        reason
    }
}

/// The authentication of a handshake: already decided at the upgrade, or still to be done from
/// the request's `Cookie` headers once the connection is open.
pub enum PendingAuth {
    Decided(HandshakeAuth),
    Cookies(Vec<String>),
}

/// What the HTTP layer hands a new session's task (boxed: its slot in every task is a pointer):
/// the authentication to finish, and the session's place in the pending budget.
pub struct Opening {
    pub auth: PendingAuth,
    pub pending: Option<PendingSlot>,
}

/// What a connection holds besides its sockets, boxed (most hold nothing once connected): its
/// place in the pending budget until its first CONNECT succeeds, then the rooms its client
/// joined on its own (the only ones it may leave). Never both: rooms are joined after a CONNECT.
enum Held {
    Pending {
        /// Looked up at the first CONNECT (`None` once it was).
        auth: Option<PendingAuth>,
        /// Held for its drop, which gives the place back.
        #[allow(dead_code)]
        slot: Option<PendingSlot>,
    },
    OwnRooms(Vec<super::socket::Room>),
}

impl PendingAuth {
    /// The authentication's outcome (what was pending is taken out).
    async fn resolve(&mut self, gateway: &Gateway) -> HandshakeAuth {
        match (std::mem::replace(self, PendingAuth::Decided(None)), gateway.auth()) {
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
struct Connection<'g> {
    gateway: &'g Arc<Gateway>,
    identity: HandshakeAuth,
    handshake: Arc<Handshake>,
    /// Namespaces this connection has joined (rarely more than one).
    sockets: Vec<(Arc<str>, Arc<Socket>)>,
    /// Events this connection may still send.
    events: policy::TokenBucket,
    /// See [`Held`]; boxed: it lives in every connection's task.
    held: Option<Box<Held>>,
}

impl Connection<'_> {
    /// Looks the session up for the connection's first CONNECT (later ones reuse it). A session
    /// the store revoked after the lookup began is refused too (the revocation could not reach
    /// a socket not yet connected).
    async fn look_up_identity(&mut self) {
        let Some(Held::Pending { auth, .. }) = self.held.as_deref_mut() else {
            return;
        };
        let Some(mut auth) = auth.take() else { return };
        let started = std::time::Instant::now();
        let mut identity = auth.resolve(self.gateway).await;
        if let Some(Ok(found)) = &identity {
            if self.gateway.sessions.revoked_since(&found.session_id, started) {
                identity = Some(Err(AuthError::Session(crate::auth::LookupError::NoSession)));
            }
        }
        self.identity = identity;
    }

    /// Whether the connection has a socket in namespace `nsp`.
    fn joined(&self, nsp: &str) -> bool {
        self.sockets.iter().any(|(joined, _)| **joined == *nsp)
    }

    /// A packet for a namespace (CONNECTs to a new one are [`Connection::connect`]'s).
    fn on_packet(&mut self, packet: Packet) -> Result<(), CloseReason> {
        let joined = self.sockets.iter().position(|(nsp, _)| **nsp == *packet.nsp);
        match (packet.kind, joined) {
            (PacketKind::Connect | PacketKind::ConnectError, _) => {
                self.gateway.metrics.inc(Malformed::InvalidState);
                Err(CloseReason::ParseError)
            }
            (_, None) => {
                self.gateway.metrics.inc(Malformed::InvalidState);
                Err(CloseReason::ParseError)
            }
            (kind, Some(index)) => {
                let socket = self.sockets[index].1.clone();
                if !socket.is_connected() {
                    // Disconnected by the server while this packet was on its way: drop it.
                    self.sockets.swap_remove(index);
                    self.gateway.socket_closed(&socket, false);
                    return Ok(());
                }
                match kind {
                    PacketKind::Disconnect => {
                        self.sockets.swap_remove(index);
                        if let Some(nsp) = self.gateway.namespace(&socket.nsp) {
                            nsp.remove(&socket);
                        }
                        self.gateway.socket_closed(&socket, false);
                    }
                    PacketKind::Event => self.event(&socket, packet)?,
                    PacketKind::Ack => {
                        let handler = packet.id.and_then(|id| socket.take_ack(id));
                        match (handler, packet.data) {
                            (Some(handler), Some(Value::Array(args))) => handler(args, packet.attachments),
                            _ => self.gateway.metrics.inc(Malformed::UnexpectedAck),
                        }
                    }
                    _ => {}
                }
                Ok(())
            }
        }
    }

    /// [`Connection::connect`] after the session lookup, on the heap.
    fn connect_boxed<'c>(
        &'c mut self,
        conn: &'c mut EngineSession,
        packet: Packet,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CloseReason>> + Send + 'c>> {
        Box::pin(async move {
            self.look_up_identity().await;
            self.connect(conn, packet).await
        })
    }

    /// A CONNECT to a namespace this connection has not joined: refused (unknown namespace,
    /// failed authentication, too many sockets of the user), restored (a reconnect with
    /// `{pid, offset}` whose record is the same user's), or a fresh socket.
    async fn connect(&mut self, conn: &mut EngineSession, packet: Packet) -> Result<(), CloseReason> {
        let gateway = self.gateway;
        let outbox = conn.outbox().clone();
        let Some(nsp) = gateway.namespace(&packet.nsp).cloned() else {
            gateway.metrics.inc(InvalidNamespace::NotServed);
            outbox.push(&frames(&Packet::connect_error(&packet.nsp, "Invalid namespace")));
            return Ok(());
        };
        let (data, rooms) = match &self.identity {
            None => (None, Vec::new()),
            Some(Ok(identity)) => (Some(identity.user.clone()), gateway.rooms.rooms_for(identity)),
            Some(Err(err)) => {
                gateway.metrics.inc(Auth::from(err));
                match err {
                    AuthError::StoreUnavailable(why) => {
                        let store = gateway.auth().map_or("redis", |a| a.store.kind());
                        tracing::warn!(nsp = %packet.nsp, store, error = %why, "session store unavailable; refusing the connection (check --session-store-url, or --redis-url for sessions in Redis, and that the store is up)")
                    }
                    _ => {
                        tracing::debug!(nsp = %packet.nsp, reason = err.reason(), "anonymous connection refused")
                    }
                }
                outbox.push(&frames(&Packet::connect_error(&packet.nsp, err.client_message())));
                // The engine session stays open, as Node keeps it (a client that closed it would
                // reconnect in a loop), holding only its pending place until the client closes
                // it or --connect-timeout passes.
                conn.reset_connect_deadline();
                return Ok(());
            }
        };
        match &self.identity {
            Some(Ok(identity)) if identity.in_grace => {
                gateway.metrics.inc(Auth::OutageGrace);
                tracing::info!(nsp = %packet.nsp, "session store unavailable: let in a session this node verified within --store-outage-grace");
            }
            Some(_) => gateway.metrics.inc(Auth::Ok),
            None => {}
        }
        // Authenticated sockets per user on this node, counted by the user's room.
        // (The user's room comes first in `rooms`, when there is a user template.)
        let user_room = rooms.first().filter(|_| !gateway.rooms.user.is_empty());
        if let (Some(max), Some(user_room)) = (gateway.admission.max_connections_per_user, user_room) {
            let open: usize = gateway.namespaces().map(|n| n.member_count(user_room)).sum();
            if open >= max {
                gateway.metrics.inc(Auth::TooManyConnections);
                tracing::debug!(nsp = %packet.nsp, "connection refused: --max-connections-per-user reached");
                outbox.push(&frames(&Packet::connect_error(&packet.nsp, "Too many connections")));
                conn.reset_connect_deadline();
                return Ok(());
            }
        }
        let session = match &self.identity {
            Some(Ok(identity)) => Some(identity.session_id.as_str().into()),
            _ => None,
        };
        let recovery = gateway.recovery().cloned();
        let restored = match (&recovery, super::recovery::requested(packet.data.as_ref())) {
            (Some(recovery), Some((pid, offset))) => self.restore(&**recovery, &nsp.name, pid, offset).await,
            _ => None,
        };
        // Connected: the session's place in the pending budget is given back.
        if matches!(self.held.as_deref(), Some(Held::Pending { .. })) {
            self.held = None;
        }
        let (id, pid) = match &restored {
            Some(restored) => (restored.sid.clone(), Some(restored.pid.clone())),
            None => (new_id(), recovery.as_ref().map(|_| new_id())),
        };
        let socket = Socket::new(
            nsp.name.clone(),
            id.into(),
            outbox,
            data,
            self.handshake.clone(),
            session,
            pid.map(Into::into),
        );
        let reply = match &socket.pid {
            Some(pid) => Packet::connect_ok_with_pid(&nsp.name, &socket.id, pid),
            None => Packet::connect_ok(&nsp.name, &socket.id),
        };
        match (restored, &recovery) {
            (Some(restored), Some(recovery)) => {
                let rooms = self.restored_rooms(&socket, &restored.rooms, rooms);
                gateway.metrics.inc(RecoveryOutcome::Recovered);
                gateway
                    .metrics
                    .add(crate::metrics::RecoveryReplay::Events, restored.replay.len() as u64);
                tracing::debug!(nsp = %nsp.name, socket = %socket.id, replayed = restored.replay.len(), "socket recovered");
                recovery.resume(&nsp, socket.clone(), rooms, restored, reply).await;
            }
            _ => {
                nsp.add(&socket, rooms);
                socket.send(&reply);
            }
        }
        let ttl = match &self.identity {
            Some(Ok(identity)) => identity.ttl_secs,
            _ => 0,
        };
        gateway.sessions.add(&socket, ttl);
        conn.namespace_connected();
        self.sockets.push((nsp.name.clone(), socket.clone()));
        // The CONNECT payload goes to the hooks and is not kept: a client controls its size.
        let auth = packet.data.unwrap_or_else(|| json!({}));
        gateway.hooks.on_connect(&socket, &auth);
        Ok(())
    }

    /// Takes the record of `pid` and the events missed since `offset`, if the record is this
    /// user's; else counts why the client gets a fresh socket. Recovery never bypasses
    /// authentication: the handshake was checked like any other, and a record left by another
    /// user (a logout and a login while the client was away) is not given back.
    async fn restore(&self, recovery: &dyn Recovery, nsp: &str, pid: &str, offset: &str) -> Option<Restored> {
        let metrics = &self.gateway.metrics;
        match recovery.restore(nsp, pid, offset).await {
            Ok(restored) => {
                let user = match &self.identity {
                    Some(Ok(identity)) => Some(&identity.user),
                    _ => None,
                };
                if user.is_none_or(|user| restored.data.get("user") == Some(user)) {
                    return Some(restored);
                }
                metrics.inc(RecoveryOutcome::RefusedAuth);
                tracing::info!(
                    nsp,
                    "recovery refused: the record belongs to another user; a fresh socket instead"
                );
                None
            }
            Err(outcome) => {
                metrics.inc(outcome);
                tracing::debug!(nsp, outcome = outcome.as_str(), "no recovery; a fresh socket instead");
                None
            }
        }
    }

    /// The rooms a restored socket joins: what it was in, except the rooms wsgate assigns, which
    /// are assigned again from today's identity (`assigned`). Rooms it was in that a client may
    /// join by itself (`--allow-join`) stay its own to leave.
    fn restored_rooms(&mut self, socket: &Socket, was_in: &[String], assigned: Vec<Room>) -> Vec<Room> {
        let policy = &self.gateway.policy;
        let user = policy::user_text(socket.user.as_ref().unwrap_or(&Value::Null));
        let mut rooms = assigned;
        let mut own = Vec::new();
        for room in was_in {
            if *room == *socket.id || self.gateway.is_reserved_room(room) || rooms.iter().any(|r| **r == **room) {
                continue;
            }
            let room: Room = room.as_str().into();
            if own.len() < policy.max_rooms_per_socket && policy.allow_join.iter().any(|p| p.matches(&room, &user)) {
                own.push(room.clone());
            }
            rooms.push(room);
        }
        match self.held.as_deref_mut() {
            Some(Held::OwnRooms(list)) => list.extend(own),
            _ if own.is_empty() => {}
            _ => self.held = Some(Box::new(Held::OwnRooms(own))),
        }
        rooms
    }

    fn event(&mut self, socket: &Arc<Socket>, packet: Packet) -> Result<(), CloseReason> {
        let gateway = self.gateway;
        gateway.sessions.touch(socket);
        let ack = packet.id;
        let refuse = |refusal: Refusal| {
            if let Some(id) = ack {
                socket.refuse(id, refusal);
            }
        };
        let policy = &gateway.policy;
        if !self.events.allow(policy.events_per_second, policy.event_burst) {
            gateway.metrics.inc(InboundEvent::RateLimited);
            tracing::debug!(socket = %socket.id, "client event refused: past --max-events-per-second");
            refuse(Refusal::RateLimited);
            // Sustained abuse: a whole burst's worth refused in a row.
            if f64::from(self.events.refused_in_a_row) >= policy.event_burst {
                tracing::info!(socket = %socket.id, "client keeps sending past --max-events-per-second; disconnecting it");
                gateway.metrics.inc(InboundEvent::AbuseDisconnect);
                gateway.disconnect(socket, true);
            }
            return Ok(());
        }
        let bytes = policy::event_bytes(packet.data.as_ref(), &packet.attachments);
        if bytes > policy.max_event_bytes {
            gateway.metrics.inc(InboundEvent::TooLarge);
            tracing::debug!(socket = %socket.id, bytes, "client event refused: larger than --max-event-bytes");
            refuse(Refusal::TooLarge);
            return Ok(());
        }
        if let Some(user) = &socket.user {
            if !gateway.user_budgets.allow(policy, &policy::user_text(user), bytes) {
                gateway.metrics.inc(InboundEvent::UserRateLimited);
                tracing::debug!(socket = %socket.id, "client event refused: its user is past --max-events-per-second-per-user or --max-event-bytes-per-second-per-user");
                refuse(Refusal::RateLimited);
                return Ok(());
            }
        }
        let args = match &packet.data {
            Some(Value::Array(args)) => args.as_slice(),
            _ => &[],
        };
        let name = args.first().and_then(Value::as_str);
        let room = args.get(1).and_then(Value::as_str);
        if name == Some(policy.join_event.as_str()) {
            let outcome = self.join(socket, room);
            self.answer_room_request(socket, ack, outcome);
            return Ok(());
        }
        if name == Some(policy.leave_event.as_str()) {
            let outcome = self.leave(socket, room);
            self.answer_room_request(socket, ack, outcome);
            return Ok(());
        }
        if gateway.hooks.on_event(socket, packet) {
            return Ok(());
        }
        gateway.metrics.inc(UnhandledEvent::Dropped);
        refuse(Refusal::Unhandled);
        Ok(())
    }
}

impl Connection<'_> {
    /// A client's request to join `room`: a room an `--allow-join` pattern allows, never one
    /// wsgate assigns (see [`Gateway::is_reserved_room`]), at most `--max-room-name-bytes` long,
    /// at most `--max-rooms-per-socket` of them.
    fn join(&mut self, socket: &Arc<Socket>, room: Option<&str>) -> Result<RoomRequest, RoomRefusal> {
        let room = self.requested_room(socket, room)?;
        let gateway = self.gateway;
        let policy = &gateway.policy;
        if socket.in_room(room) {
            // Already in it (perhaps by a backend's join): nothing changes, and it stays the
            // backend's to take away.
            return Ok(RoomRequest::Joined);
        }
        let held = self.held.get_or_insert_with(|| Box::new(Held::OwnRooms(Vec::new())));
        let Held::OwnRooms(own) = &mut **held else {
            return Err(RoomRefusal::NotOwnRoom);
        };
        if own.len() >= policy.max_rooms_per_socket {
            return Err(RoomRefusal::TooManyRooms);
        }
        let room: super::socket::Room = room.into();
        own.push(room.clone());
        if let Some(nsp) = gateway.namespace(&socket.nsp) {
            nsp.join(socket, room);
        }
        Ok(RoomRequest::Joined)
    }

    /// A client's request to leave `room`: only a room it joined itself.
    fn leave(&mut self, socket: &Arc<Socket>, room: Option<&str>) -> Result<RoomRequest, RoomRefusal> {
        let room = self.requested_room(socket, room)?;
        let Some(Held::OwnRooms(own)) = self.held.as_deref_mut() else {
            return Err(RoomRefusal::NotOwnRoom);
        };
        let index = own.iter().position(|r| **r == *room).ok_or(RoomRefusal::NotOwnRoom)?;
        own.swap_remove(index);
        if let Some(nsp) = self.gateway.namespace(&socket.nsp) {
            nsp.leave(socket, room);
        }
        Ok(RoomRequest::Left)
    }

    /// The room a join or leave names, if a client may ask for it at all.
    fn requested_room<'r>(&self, socket: &Socket, room: Option<&'r str>) -> Result<&'r str, RoomRefusal> {
        let policy = &self.gateway.policy;
        let room = room
            .filter(|r| !r.is_empty() && r.len() <= policy.max_room_name_bytes)
            .ok_or(RoomRefusal::InvalidRoom)?;
        if self.gateway.is_reserved_room(room) {
            return Err(RoomRefusal::Reserved);
        }
        let user = policy::user_text(socket.user.as_ref().unwrap_or(&Value::Null));
        if !policy.allow_join.iter().any(|p| p.matches(room, &user)) {
            return Err(RoomRefusal::Forbidden);
        }
        Ok(room)
    }

    /// Counts, logs and acknowledges a room request.
    fn answer_room_request(&self, socket: &Socket, ack: Option<u64>, outcome: Result<RoomRequest, RoomRefusal>) {
        let metrics = &self.gateway.metrics;
        match outcome {
            Ok(done) => {
                metrics.inc(done);
                if let Some(id) = ack {
                    socket.ack(id, vec![json!({"ok": true})], Vec::new());
                }
            }
            Err(refused) => {
                metrics.inc(refused.label());
                tracing::debug!(socket = %socket.id, why = refused.why(), "room request refused");
                if let Some(id) = ack {
                    socket.refuse(id, refused.refusal());
                }
            }
        }
    }
}

/// Why a client's join or leave was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomRefusal {
    /// Empty, not a string, or longer than `--max-room-name-bytes`.
    InvalidRoom,
    /// A room wsgate assigns: a user's or session's room, a socket id.
    Reserved,
    /// No `--allow-join` pattern matches.
    Forbidden,
    /// `--max-rooms-per-socket` reached.
    TooManyRooms,
    /// A leave of a room the client did not join itself (the server's or a backend's).
    NotOwnRoom,
}

impl RoomRefusal {
    fn label(self) -> RoomRequest {
        match self {
            RoomRefusal::InvalidRoom => RoomRequest::InvalidRoom,
            RoomRefusal::Reserved => RoomRequest::Reserved,
            RoomRefusal::Forbidden | RoomRefusal::NotOwnRoom => RoomRequest::Forbidden,
            RoomRefusal::TooManyRooms => RoomRequest::TooManyRooms,
        }
    }

    fn refusal(self) -> Refusal {
        match self {
            RoomRefusal::InvalidRoom => Refusal::InvalidRoom,
            RoomRefusal::Reserved | RoomRefusal::Forbidden | RoomRefusal::NotOwnRoom => Refusal::Forbidden,
            RoomRefusal::TooManyRooms => Refusal::TooManyRooms,
        }
    }

    fn why(self) -> &'static str {
        match self {
            RoomRefusal::InvalidRoom => "not a room name, or longer than --max-room-name-bytes",
            RoomRefusal::Reserved => "a room wsgate assigns (user, session or socket id)",
            RoomRefusal::Forbidden => "no --allow-join pattern matches",
            RoomRefusal::TooManyRooms => "--max-rooms-per-socket reached",
            RoomRefusal::NotOwnRoom => "the client did not join that room itself",
        }
    }
}

#[cfg(test)]
mod tests {
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
