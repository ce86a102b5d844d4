//! The Redis adapter: this node as a peer of Node `socket.io` + `@socket.io/redis-adapter`
//! nodes (classic `createAdapter`, or sharded `createShardedAdapter`) and
//! `@socket.io/redis-emitter` publishers.
//!
//! Owns the only pub/sub connection: per served namespace it subscribes where a Node adapter
//! does (in sharded dynamic modes, one channel per room with members here, following the
//! namespace's room events), delivers broadcasts to local sockets, answers every request Node
//! nodes count it for, and publishes this node's own broadcasts byte-compatibly. It reaches
//! sockets only through the gateway's [`Namespace`] API and Redis only through [`driver`]. A
//! lost subscription reconnects with backoff and resubscribes everything; local delivery goes
//! on meanwhile.

pub mod driver;
mod emitter;

pub use emitter::{Emitter, EmitterTarget};

use crate::gateway::{Gateway, Namespace, RoomEvent, Socket};
use crate::protocol::adapter::{self, encode, AdapterError, Broadcast, Channels, Request, RequestType, Selector};
use crate::protocol::sharded::{self, ShardedChannels, SubscriptionMode};
use crate::protocol::socketio::Packet;
use driver::{Incoming, PubSub, Publisher, Subscriber};
use rand::Rng as _;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a BROADCAST-with-ack waits for client acks when the requester set no timeout.
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses waiting to be published; past this, responses are dropped and counted.
const RESPONSE_QUEUE: usize = 10_000;
/// Read-only requests (SOCKETS, ALL_ROOMS, REMOTE_FETCH) built at once off the subscriber task;
/// more waiting than this are dropped and counted (the requester times out, as with a lost node).
const READS_IN_FLIGHT: usize = 64;
/// How often the subscriber connection is pinged, so a dead link is noticed.
const PING_EVERY: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Messages read from Redis and not yet handled. Past it the subscriber stops reading, so a
/// node that cannot keep up leaves the backlog in Redis's output buffer (which Redis bounds and
/// cuts, as it does for a slow Node subscriber) rather than in its own memory.
const DELIVERY_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis did not accept the publish: {0}")]
    Publish(#[from] redis::RedisError),
    #[error("namespace {0} is not served by this node")]
    UnknownNamespace(String),
}

/// Which Node adapter this node is a peer of (every node of a cluster must speak the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdapterProtocol {
    /// `createAdapter`: PUBLISH/PSUBSCRIBE, request and response channels, msgpack broadcasts.
    #[default]
    Classic,
    /// `createShardedAdapter` (Redis 7+): SPUBLISH/SSUBSCRIBE, `{type, data, uid, nsp}` messages.
    Sharded(SubscriptionMode),
}

/// One namespace's adapter: its channels and this node's uid in it.
struct NamespaceAdapter {
    nsp: Arc<Namespace>,
    channels: Channels,
    sharded: ShardedChannels,
    uid: String,
}

/// The cluster adapter of one gateway node.
pub struct Cluster {
    gateway: Arc<Gateway>,
    redis: crate::redis_connection::RedisTarget,
    publisher: Publisher,
    protocol: AdapterProtocol,
    adapters: Vec<NamespaceAdapter>,
    /// Rooms appearing and disappearing, by adapter index (sharded dynamic modes only).
    room_events: tokio::sync::Mutex<mpsc::UnboundedReceiver<(usize, RoomEvent)>>,
    /// Responses are published in order by one task, so CLIENT_COUNT precedes its acks.
    responses: mpsc::Sender<(String, Vec<u8>)>,
    /// Messages from the subscriber to the delivery task, in the order Redis sent them.
    deliveries: mpsc::Sender<(String, Vec<u8>)>,
    max_ack_timeout: Duration,
    /// Read-only requests being answered (bounded by [`READS_IN_FLIGHT`]).
    reads: Arc<std::sync::atomic::AtomicUsize>,
    /// One builds a read-only response at a time: the subscriber task never waits for it.
    read_worker: Arc<tokio::sync::Semaphore>,
    /// `__keyspace@<db>__:<session prefix>`, and whether to configure Redis to send it.
    keyspace: Option<(String, bool)>,
    /// Ends the subscriber and the response publisher (shutdown).
    stop: tokio::sync::watch::Sender<bool>,
}

/// The flags `notify-keyspace-events` needs for revocation: keyspace channel (K), generic
/// commands such as DEL (g), expiry (x), eviction (e) and string commands such as SET ($).
const KEYSPACE_FLAGS: &str = "Kgxe$";

/// Whether a `notify-keyspace-events` setting sends every event revocation needs.
fn keyspace_flags_enough(flags: &str) -> bool {
    flags.contains('K') && (flags.contains('A') || "gxe$".chars().all(|f| flags.contains(f)))
}

/// A glob pattern matching `literal` exactly (for PSUBSCRIBE).
fn glob_escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl AdapterProtocol {
    /// The pub/sub commands its channels are used with.
    pub fn pubsub(self) -> PubSub {
        match self {
            AdapterProtocol::Classic => PubSub::Classic,
            AdapterProtocol::Sharded(_) => PubSub::Sharded,
        }
    }
}

/// A node's uid as Node makes it: the classic adapter's `uid2(6)` (6 characters of
/// `[A-Za-z0-9_-]`), socket.io-adapter's `randomId()` (16 hex digits) for the sharded one.
fn new_uid(protocol: AdapterProtocol) -> String {
    let mut rng = rand::rng();
    match protocol {
        AdapterProtocol::Classic => {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            (0..6)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect()
        }
        AdapterProtocol::Sharded(_) => format!("{:016x}", rng.random::<u64>()),
    }
}

impl Cluster {
    /// Starts the adapter for every namespace of `gateway` under key prefix `prefix`.
    pub fn start(gateway: Arc<Gateway>, options: crate::ClusterOptions) -> Arc<Cluster> {
        let crate::ClusterOptions {
            redis,
            publisher,
            prefix,
            max_ack_timeout,
            keyspace,
            protocol,
        } = options;
        // Keyspace notifications stay on the node holding the key: on a Redis Cluster one
        // subscriber cannot hear them all, so revocation there is the periodic revalidation.
        let db = redis
            .client()
            .map_or(0, |c| c.get_connection_info().redis_settings().db());
        let keyspace = keyspace
            .filter(|_| !redis.cluster)
            .map(|k| (format!("__keyspace@{db}__:{}", k.session_prefix), k.configure));
        let adapters: Vec<NamespaceAdapter> = gateway
            .namespaces()
            .map(|nsp| NamespaceAdapter {
                nsp: nsp.clone(),
                channels: Channels::new(&prefix, &nsp.name),
                sharded: ShardedChannels::new(&prefix, &nsp.name),
                // Never "emitter": that uid belongs to the Node emitter.
                uid: new_uid(protocol),
            })
            .collect();
        // Per-room channels follow the rooms: every namespace's events into one queue, read
        // by the subscriber task.
        let (room_sender, room_events) = mpsc::unbounded_channel();
        if let AdapterProtocol::Sharded(mode) = protocol {
            if mode != SubscriptionMode::Static {
                for (index, adapter) in adapters.iter().enumerate() {
                    let Some(mut events) = adapter.nsp.watch_rooms(mode.subscribes(true)) else {
                        continue;
                    };
                    let sender = room_sender.clone();
                    tokio::spawn(async move {
                        while let Some(event) = events.recv().await {
                            if sender.send((index, event)).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        }
        let (responses, queue) = mpsc::channel(RESPONSE_QUEUE);
        let (deliveries, mut delivery_queue) = mpsc::channel(DELIVERY_QUEUE);
        let cluster = Arc::new(Cluster {
            gateway,
            redis,
            publisher: Publisher::new(publisher, protocol.pubsub()),
            protocol,
            room_events: tokio::sync::Mutex::new(room_events),
            adapters,
            responses,
            deliveries,
            max_ack_timeout,
            reads: Arc::default(),
            read_worker: Arc::new(tokio::sync::Semaphore::new(1)),
            keyspace,
            stop: tokio::sync::watch::channel(false).0,
        });
        tokio::spawn(publish_responses(
            cluster.publisher.clone(),
            cluster.gateway.clone(),
            queue,
            cluster.stop.subscribe(),
        ));
        // Messages are handled on their own task, so a large fan-out delays neither the
        // subscriber's reads nor its pings, and one at a time, so each socket sees them in the
        // order Redis sent them.
        let mut stopped = cluster.stop.subscribe();
        let delivery = cluster.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some((channel, payload)) = delivery_queue.recv() => delivery.on_message(&channel, &payload).await,
                    _ = stopped.changed() => return,
                }
            }
        });
        let mut stopped = cluster.stop.subscribe();
        let subscriber = cluster.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = subscriber.subscribe_forever() => {}
                _ = stopped.changed() => {}
            }
        });
        cluster
    }

    /// Leaves the cluster: unsubscribes (the pub/sub connection is closed) and stops publishing
    /// responses, once what is queued is out.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        self.gateway.metrics.pubsub_up.store(0, Ordering::Relaxed);
    }

    fn adapter(&self, nsp: &str) -> Result<&NamespaceAdapter, ClusterError> {
        self.adapters
            .iter()
            .find(|a| &*a.nsp.name == nsp)
            .ok_or_else(|| ClusterError::UnknownNamespace(nsp.into()))
    }

    /// Broadcasts from this node: delivered to local sockets, then published for every other
    /// node. Local delivery happens even when Redis is down (the error says so).
    pub async fn broadcast(
        &self,
        nsp: &str,
        selector: Selector,
        data: Vec<rmpv::Value>,
    ) -> Result<usize, ClusterError> {
        let local = self.broadcast_local(nsp, &selector, &data)?;
        let adapter = self.adapter(nsp)?;
        let message = Broadcast {
            uid: Some(adapter.uid.clone()),
            nsp: nsp.into(),
            data,
            selector,
            flags: vec![],
        };
        let (channel, bytes) = match self.protocol {
            AdapterProtocol::Classic => (
                adapter.channels.for_rooms(&message.selector.rooms),
                message.encode(false),
            ),
            AdapterProtocol::Sharded(mode) => (
                adapter.sharded.for_broadcast(mode, &message.selector.rooms),
                sharded::encode::broadcast(&message, &adapter.uid, None),
            ),
        };
        self.publisher.publish(&channel, &bytes).await?;
        Ok(local)
    }

    /// A `local` broadcast: this node's sockets only, nothing is published. Returns how many
    /// sockets got it.
    pub fn broadcast_local(&self, nsp: &str, selector: &Selector, data: &[rmpv::Value]) -> Result<usize, ClusterError> {
        let adapter = self.adapter(nsp)?;
        let (args, attachments) = adapter::to_client_args(data);
        let packet = Packet::event(nsp, args, attachments);
        Ok(self.delivered(adapter.nsp.broadcast(&selector.rooms, &selector.except, &packet)))
    }

    /// Keeps one subscriber connection up for the life of the process.
    async fn subscribe_forever(self: Arc<Self>) {
        let metrics = self.gateway.metrics.clone();
        let mut backoff = Duration::from_millis(100);
        let mut was_up = false;
        // Held for the life of the task: room events are read here only.
        let mut room_events = self.room_events.lock().await;
        loop {
            match self.subscribe_all(&mut room_events).await {
                Ok(subscriber) => {
                    metrics.pubsub_up.store(1, Ordering::Relaxed);
                    // Redis may have restarted with another setting: check it on every connect.
                    self.check_keyspace_events().await;
                    if was_up {
                        metrics.inc("wsgate_redis_pubsub_total", "recovered");
                        tracing::info!("Redis pub/sub connection restored; resubscribed to every adapter channel");
                        // Keyspace events were lost meanwhile: look at every session now.
                        let gateway = self.gateway.clone();
                        tokio::spawn(async move { gateway.revalidate_sessions().await });
                    } else {
                        tracing::info!(namespaces = self.adapters.len(), protocol = ?self.protocol, "cluster adapter subscribed");
                    }
                    was_up = true;
                    backoff = Duration::from_millis(100);
                    let why = self.serve(subscriber, &mut room_events).await;
                    metrics.pubsub_up.store(0, Ordering::Relaxed);
                    metrics.inc("wsgate_redis_pubsub_total", "lost");
                    tracing::warn!(reason = %why, "Redis pub/sub connection lost: cross-node broadcasts are not received until it is back; local delivery goes on; reconnecting");
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "cannot subscribe to Redis for the cluster adapter; retrying (Redis down, or a Redis Cluster failover or resharding under way: check --redis-url and the cluster's state if it lasts)");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// A fresh subscriber with every channel this node listens on. Room events queued so far
    /// are dropped first: the rooms are read after them, so the snapshot covers them, and the
    /// events that follow are applied on top of it.
    async fn subscribe_all(
        &self,
        room_events: &mut mpsc::UnboundedReceiver<(usize, RoomEvent)>,
    ) -> redis::RedisResult<Subscriber> {
        let connect = Subscriber::connect(&self.redis, self.protocol.pubsub(), Duration::from_secs(5));
        let mut subscriber = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
        if let Some((channel, _)) = &self.keyspace {
            subscriber.psubscribe(&format!("{}*", glob_escape(channel))).await?;
        }
        while room_events.try_recv().is_ok() {}
        for adapter in &self.adapters {
            match self.protocol {
                AdapterProtocol::Classic => {
                    let c = &adapter.channels;
                    subscriber.psubscribe(&c.broadcast_pattern()).await?;
                    for channel in [&c.request, &c.response, &c.response_for(&adapter.uid)] {
                        subscriber.subscribe(channel).await?;
                    }
                }
                AdapterProtocol::Sharded(mode) => {
                    // Exactly once each: Node counts servers by the base channel's subscribers.
                    subscriber.subscribe(&adapter.sharded.base).await?;
                    subscriber
                        .subscribe(&adapter.sharded.response_for(&adapter.uid))
                        .await?;
                    if mode != SubscriptionMode::Static {
                        for room in adapter.nsp.watched_rooms(mode.subscribes(true)) {
                            subscriber.subscribe(&adapter.sharded.room(&room)).await?;
                        }
                    }
                }
            }
        }
        Ok(subscriber)
    }

    /// Handles messages (and per-room subscriptions) until the connection fails; returns why.
    async fn serve(
        &self,
        mut subscriber: Subscriber,
        room_events: &mut mpsc::UnboundedReceiver<(usize, RoomEvent)>,
    ) -> String {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                incoming = subscriber.next() => match incoming {
                    Incoming::Message { channel, payload } => {
                        if self.deliveries.send((channel, payload)).await.is_err() {
                            return "stopped".into();
                        }
                    }
                    // A slot migration moves shard channels away from their node: resubscribing
                    // everything on a fresh subscriber finds their new home.
                    Incoming::ShardUnsubscribed { channel } if self.wants(&channel) => {
                        return format!("Redis ended the subscription of {channel} (its slot moved)");
                    }
                    Incoming::ShardUnsubscribed { .. } => {}
                    Incoming::Closed => return "connection closed".into(),
                },
                Some((index, event)) = room_events.recv() => {
                    let Some(adapter) = self.adapters.get(index) else { continue };
                    let result = match &event {
                        RoomEvent::Created(room) => subscriber.subscribe(&adapter.sharded.room(room)).await,
                        RoomEvent::Deleted(room) => subscriber.unsubscribe(&adapter.sharded.room(room)).await,
                    };
                    if let Err(err) = result {
                        return format!("room subscription failed: {err}");
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(PING_EVERY, subscriber.ping()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => return err.to_string(),
                        Err(_) => return "no answer to PING".into(),
                    }
                }
            }
        }
    }

    /// Makes sure Redis sends the keyspace events revocation needs, merging the flags in with
    /// `--configure-keyspace-events`; otherwise says loudly that logouts wait for the periodic
    /// check. `wsgate_keyspace_notifications` shows the outcome (1 on, 0 off, -1 unknown).
    async fn check_keyspace_events(&self) {
        let Some((_, configure)) = &self.keyspace else { return };
        let metrics = &self.gateway.metrics;
        let mut conn = self.publisher.connection();
        let current: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut conn)
            .await;
        let flags = match current {
            Ok(pair) => pair.get(1).cloned().unwrap_or_default(),
            Err(err) => {
                metrics.keyspace_notifications.store(-1, Ordering::Relaxed);
                tracing::warn!(error = %err, "cannot read notify-keyspace-events (CONFIG refused?): if Redis does not send keyspace events for session keys, logouts close sockets only at the next --revalidate-interval");
                return;
            }
        };
        if keyspace_flags_enough(&flags) {
            metrics.keyspace_notifications.store(1, Ordering::Relaxed);
            return;
        }
        if *configure {
            let mut merged = flags.clone();
            merged.extend(KEYSPACE_FLAGS.chars().filter(|f| !flags.contains(*f)));
            let set: redis::RedisResult<()> = redis::cmd("CONFIG")
                .arg("SET")
                .arg("notify-keyspace-events")
                .arg(&merged)
                .query_async(&mut conn)
                .await;
            match set {
                Ok(()) => {
                    metrics.keyspace_notifications.store(1, Ordering::Relaxed);
                    tracing::info!(from = %flags, to = %merged, "notify-keyspace-events set for session revocation");
                }
                Err(err) => {
                    metrics.keyspace_notifications.store(0, Ordering::Relaxed);
                    tracing::error!(error = %err, "could not set notify-keyspace-events: logouts close sockets only at the next --revalidate-interval");
                }
            }
            return;
        }
        metrics.keyspace_notifications.store(0, Ordering::Relaxed);
        tracing::error!(
            setting = %flags,
            "Redis sends no keyspace events for session keys (notify-keyspace-events lacks {KEYSPACE_FLAGS}): a logout or expiry closes sockets only at the next --revalidate-interval. Run with --configure-keyspace-events, or set notify-keyspace-events {KEYSPACE_FLAGS} in redis.conf"
        );
    }

    /// A keyspace event on session key `session`: the session ended, or was rewritten.
    fn on_keyspace(&self, session: &str, event: &[u8]) {
        match event {
            b"del" => {
                self.gateway.revoke_session(session, "deleted");
            }
            b"expired" => {
                self.gateway.revoke_session(session, "expired");
            }
            b"evicted" => {
                self.gateway.revoke_session(session, "evicted");
            }
            b"rename_from" => {
                self.gateway.revoke_session(session, "renamed");
            }
            // Rewritten (passport's login into an existing session, a changed user): read it.
            b"set" | b"rename_to" if !self.gateway.sockets_of_session(session).is_empty() => {
                let (gateway, session) = (self.gateway.clone(), session.to_owned());
                tokio::spawn(async move { gateway.recheck_session(&session).await });
            }
            // EXPIRE (express-session's touch) and the rest change nothing.
            _ => {}
        }
    }

    async fn on_message(&self, channel: &str, payload: &[u8]) {
        if let Some((prefix, _)) = &self.keyspace {
            if let Some(session) = channel.strip_prefix(prefix.as_str()) {
                return self.on_keyspace(session, payload);
            }
        }
        for adapter in &self.adapters {
            match self.protocol {
                AdapterProtocol::Classic => {
                    if let Some(room) = adapter.channels.room_of(channel) {
                        return self.on_broadcast(adapter, room, payload).await;
                    }
                    if channel == adapter.channels.request {
                        return self.on_request(adapter, payload);
                    }
                }
                AdapterProtocol::Sharded(_) => {
                    if channel == adapter.sharded.base {
                        return self.on_sharded(adapter, None, payload).await;
                    }
                    if let Some(suffix) = adapter.sharded.suffix_of(channel) {
                        // Responses to this node: it sends no requests, so none are awaited.
                        if suffix != adapter.uid {
                            return self.on_sharded(adapter, Some(suffix), payload).await;
                        }
                        return;
                    }
                }
            }
        }
        // Classic responses: this node sends no requests of its own, so none are awaited.
    }

    /// Whether this node is meant to be subscribed to shard channel `channel` now.
    fn wants(&self, channel: &str) -> bool {
        let AdapterProtocol::Sharded(mode) = self.protocol else {
            return false;
        };
        self.adapters.iter().any(|adapter| {
            if channel == adapter.sharded.base {
                return true;
            }
            match adapter.sharded.suffix_of(channel) {
                Some(suffix) if suffix == adapter.uid => true,
                Some(room) => mode != SubscriptionMode::Static && adapter.nsp.has_members(room),
                None => false,
            }
        })
    }

    /// A message of the sharded adapter, from the base channel or from `room`'s channel.
    async fn on_sharded(&self, adapter: &NamespaceAdapter, room: Option<&str>, payload: &[u8]) {
        // A room channel for a room nobody here is in any more: nothing to decode.
        if room.is_some_and(|room| !adapter.nsp.has_members(room)) {
            return;
        }
        let channel = || room.map_or_else(|| adapter.sharded.base.clone(), |r| adapter.sharded.room(r));
        let envelope = match sharded::decode(payload) {
            Ok(envelope) => envelope,
            Err(err) => return self.dropped(&channel(), &err),
        };
        // As socket.io-adapter: our own messages, and messages without our namespace, are not
        // for us (Node drops those without `nsp` too).
        let Some(sender) = envelope.uid.filter(|uid| *uid != adapter.uid) else {
            return;
        };
        if envelope.nsp.as_deref() != Some(&*adapter.nsp.name) {
            return;
        }
        let message = envelope.message;
        self.gateway
            .metrics
            .inc("wsgate_adapter_messages_total", message.as_str());
        let nsp = &adapter.nsp;
        let reply_to = adapter.sharded.response_for(&sender);
        match message {
            sharded::Message::Broadcast {
                broadcast,
                request_id: None,
            } => {
                let (args, attachments) = adapter::to_client_args(&broadcast.data);
                let packet = Packet::event(&nsp.name, args, attachments);
                let (rooms, except) = (&broadcast.selector.rooms, &broadcast.selector.except);
                self.delivered(nsp.broadcast_spread(rooms, except, &packet).await);
            }
            sharded::Message::Broadcast {
                broadcast,
                request_id: Some(request_id),
            } => self.broadcast_with_ack(adapter, broadcast, request_id, Reply::Sharded(reply_to)),
            sharded::Message::SocketsJoin { selector, rooms } => {
                for socket in nsp.select(&selector.rooms, &selector.except) {
                    for room in &rooms {
                        nsp.join(&socket, room.as_str().into());
                    }
                }
            }
            sharded::Message::SocketsLeave { selector, rooms } => {
                for socket in nsp.select(&selector.rooms, &selector.except) {
                    for room in &rooms {
                        nsp.leave(&socket, room);
                    }
                }
            }
            sharded::Message::DisconnectSockets { selector, close } => {
                for socket in nsp.select(&selector.rooms, &selector.except) {
                    self.gateway.disconnect(&socket, close);
                }
            }
            sharded::Message::FetchSockets { selector, request_id } => {
                let (shared, uid, name) = (nsp.clone(), adapter.uid.clone(), nsp.name.clone());
                let build = move || {
                    let sockets = shared.select(&selector.rooms, &selector.except);
                    let sockets = sockets.iter().map(|s| remote_socket(s)).collect();
                    sharded::encode::fetch_sockets_response(&uid, &name, &request_id, sockets)
                };
                self.respond_later(build, &reply_to);
            }
            sharded::Message::ServerSideEmit { request_id, .. } => {
                // No server-side handlers run here; an ack request is answered without a value,
                // so the Node caller gets every server's answer instead of waiting for its
                // timeout.
                if let Some(id) = request_id {
                    let bytes = sharded::encode::server_side_emit_response(&adapter.uid, &nsp.name, &id, Value::Null);
                    self.respond(&reply_to, bytes);
                }
            }
            sharded::Message::Ignored(_) => {}
        }
    }

    fn dropped(&self, channel: &str, err: &AdapterError) {
        self.gateway.metrics.inc("wsgate_adapter_dropped_total", err.as_str());
        tracing::debug!(channel, error = %err, "dropped an undecodable adapter message");
    }

    async fn on_broadcast(&self, adapter: &NamespaceAdapter, room: &str, payload: &[u8]) {
        // A room channel for a room nobody here is in: nothing to decode (as Node does).
        if !room.is_empty() && !adapter.nsp.has_members(room) {
            return;
        }
        let message = match Broadcast::decode(payload) {
            Ok(message) => message,
            Err(err) => return self.dropped(&adapter.channels.broadcast, &err),
        };
        if message.uid.as_deref() == Some(adapter.uid.as_str()) || message.nsp != *adapter.nsp.name {
            return;
        }
        self.gateway.metrics.inc("wsgate_adapter_messages_total", "broadcast");
        let (args, attachments) = adapter::to_client_args(&message.data);
        let packet = Packet::event(&adapter.nsp.name, args, attachments);
        let (rooms, except) = (&message.selector.rooms, &message.selector.except);
        self.delivered(adapter.nsp.broadcast_spread(rooms, except, &packet).await);
    }

    /// Counts the `n` packets one broadcast queued; returns `n`.
    fn delivered(&self, n: usize) -> usize {
        self.gateway
            .metrics
            .broadcast_deliveries
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    fn respond(&self, channel: &str, bytes: Vec<u8>) {
        respond(&self.responses, &self.gateway, channel.to_owned(), bytes);
    }

    /// Builds a read-only response off the subscriber task, so a request about every socket of
    /// a large node does not hold up broadcasts behind it.
    fn respond_later(&self, build: impl FnOnce() -> Vec<u8> + Send + 'static, channel: &str) {
        let reads = self.reads.clone();
        if reads.fetch_add(1, Ordering::Relaxed) >= READS_IN_FLIGHT {
            reads.fetch_sub(1, Ordering::Relaxed);
            self.gateway.metrics.inc("wsgate_adapter_dropped_total", "reads_busy");
            return;
        }
        let (responses, gateway, channel) = (self.responses.clone(), self.gateway.clone(), channel.to_owned());
        let worker = self.read_worker.clone();
        tokio::spawn(async move {
            let permit = worker.acquire_owned().await;
            let bytes = tokio::task::spawn_blocking(build).await;
            drop(permit);
            reads.fetch_sub(1, Ordering::Relaxed);
            if let Ok(bytes) = bytes {
                respond(&responses, &gateway, channel, bytes);
            }
        });
    }

    fn on_request(&self, adapter: &NamespaceAdapter, payload: &[u8]) {
        let request = match Request::decode(payload) {
            Ok(request) => request,
            Err(err) => return self.dropped(&adapter.channels.request, &err),
        };
        self.gateway
            .metrics
            .inc("wsgate_adapter_messages_total", request.kind.as_str());
        let nsp = &adapter.nsp;
        let response = &adapter.channels.response;
        let selected = |s: &Selector| nsp.select(&s.rooms, &s.except);
        let (shared, request_id) = (nsp.clone(), request.request_id.clone());
        // The legacy per-socket form: `{sid, room, requestId}`, answered by the node holding sid.
        let legacy = |apply: &dyn Fn(&Arc<Socket>)| {
            if let (Some(socket), Some(id)) = (
                request.sid.as_deref().and_then(|sid| nsp.socket(sid)),
                &request.request_id,
            ) {
                apply(&socket);
                self.respond(response, encode::done_response(id));
            }
        };
        match request.kind {
            RequestType::Sockets => {
                let Some(id) = request_id else { return };
                let selector = request.selector.clone().unwrap_or(Selector {
                    rooms: request.rooms.clone(),
                    except: vec![],
                });
                let build = move || {
                    let sockets = shared.select(&selector.rooms, &selector.except);
                    let ids: Vec<String> = sockets.iter().map(|s| s.id.to_string()).collect();
                    encode::sockets_response(&id, &ids)
                };
                self.respond_later(build, response);
            }
            RequestType::AllRooms => {
                let Some(id) = request_id else { return };
                let build = move || {
                    let rooms: Vec<String> = shared.all_rooms().iter().map(|r| r.to_string()).collect();
                    encode::all_rooms_response(&id, &rooms)
                };
                self.respond_later(build, response);
            }
            RequestType::RemoteJoin => match &request.selector {
                Some(s) => {
                    for socket in selected(s) {
                        for room in &request.rooms {
                            nsp.join(&socket, room.as_str().into());
                        }
                    }
                }
                None => legacy(&|socket| {
                    if let Some(room) = &request.room {
                        nsp.join(socket, room.as_str().into());
                    }
                }),
            },
            RequestType::RemoteLeave => match &request.selector {
                Some(s) => {
                    for socket in selected(s) {
                        for room in &request.rooms {
                            nsp.leave(&socket, room);
                        }
                    }
                }
                None => legacy(&|socket| {
                    if let Some(room) = &request.room {
                        nsp.leave(socket, room);
                    }
                }),
            },
            RequestType::RemoteDisconnect => match &request.selector {
                Some(s) => {
                    for socket in selected(s) {
                        self.gateway.disconnect(&socket, request.close);
                    }
                }
                None => legacy(&|socket| self.gateway.disconnect(socket, request.close)),
            },
            RequestType::RemoteFetch => {
                let Some(id) = request_id else { return };
                let selector = request.selector.clone().unwrap_or_default();
                let build = move || {
                    let sockets = shared.select(&selector.rooms, &selector.except);
                    encode::fetch_response(&id, sockets.iter().map(|s| remote_socket(s)).collect())
                };
                self.respond_later(build, response);
            }
            RequestType::ServerSideEmit => {
                if request.uid.as_deref() == Some(adapter.uid.as_str()) {
                    return;
                }
                // No server-side handlers run here; an ack request still gets its answer so
                // the Node caller does not wait for the timeout. Always the shared channel.
                if let Some(id) = &request.request_id {
                    self.respond(response, encode::server_side_emit_response(id, json!([])));
                }
            }
            RequestType::Broadcast => {
                let (Some(request_id), Some(message)) = (request.request_id, request.broadcast) else {
                    return self.dropped(
                        &adapter.channels.request,
                        &AdapterError::Shape("broadcast request without requestId"),
                    );
                };
                if message.uid.as_deref() == Some(adapter.uid.as_str()) {
                    return;
                }
                let reply = Reply::Classic(adapter.channels.response.clone());
                self.broadcast_with_ack(adapter, message, request_id, reply);
            }
            RequestType::BroadcastClientCount | RequestType::BroadcastAck => {}
        }
    }

    /// A peer's broadcast with acks: the client count first, then each client's ack, in the
    /// requester's protocol.
    fn broadcast_with_ack(&self, adapter: &NamespaceAdapter, message: Broadcast, request_id: String, reply: Reply) {
        // The requester decides how long to wait, up to --max-ack-timeout.
        let timeout = message
            .timeout_ms()
            .map_or(DEFAULT_ACK_TIMEOUT, Duration::from_millis)
            .min(self.max_ack_timeout);
        let (args, attachments) = adapter::to_client_args(&message.data);
        let packet = Packet::event(&adapter.nsp.name, args, attachments);
        // One handler for every socket.
        let route = (
            self.responses.clone(),
            self.gateway.clone(),
            reply.clone(),
            request_id.clone(),
            adapter.uid.clone(),
            adapter.nsp.name.clone(),
        );
        let handler: crate::gateway::AckHandler = Arc::new(move |args: Vec<Value>, attachments: Vec<bytes::Bytes>| {
            let (responses, gateway, reply, request_id, uid, nsp) = &route;
            // Node passes on the first argument of the client's ack.
            let first = args
                .first()
                .map_or(rmpv::Value::Nil, |a| adapter::from_client_value(a, &attachments));
            let (channel, bytes) = match reply {
                Reply::Classic(channel) => (channel, encode::broadcast_ack(request_id, first)),
                Reply::Sharded(channel) => (channel, sharded::encode::broadcast_ack(uid, nsp, request_id, first)),
            };
            respond(responses, gateway, channel.clone(), bytes);
        });
        let count = adapter.nsp.broadcast_with_ack(
            &message.selector.rooms,
            &message.selector.except,
            packet,
            timeout,
            handler,
        );
        self.delivered(count);
        let (channel, bytes) = match &reply {
            Reply::Classic(channel) => (channel, encode::client_count(&request_id, count)),
            Reply::Sharded(channel) => (
                channel,
                sharded::encode::client_count(&adapter.uid, &adapter.nsp.name, &request_id, count),
            ),
        };
        self.respond(channel, bytes);
    }
}

/// Where, and in which protocol, the answers to a peer's request go.
#[derive(Clone)]
enum Reply {
    /// The classic adapter's shared response channel.
    Classic(String),
    /// The requester's own response channel of the sharded adapter.
    Sharded(String),
}

/// A socket as REMOTE_FETCH describes it: `{id, handshake, rooms, data}`. Cookies are never
/// included (Node would publish them).
fn remote_socket(socket: &Socket) -> Value {
    let h = &socket.handshake;
    let headers: serde_json::Map<String, Value> = h
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(&**v)))
        .collect();
    let query: serde_json::Map<String, Value> = h.query().into_iter().map(|(k, v)| (k, Value::from(v))).collect();
    json!({
        "id": &*socket.id,
        "handshake": {
            "headers": headers,
            "time": crate::protocol::js_date_string(h.issued),
            "address": h.address.to_string(),
            "xdomain": headers.contains_key("origin"),
            "secure": false,
            "issued": h.issued,
            "url": h.url,
            "query": query,
            "auth": socket.auth,
        },
        "rooms": socket.rooms().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "data": socket.data(),
    })
}

/// Queues a response for publishing; a full queue drops it (counted) rather than grow.
fn respond(queue: &mpsc::Sender<(String, Vec<u8>)>, gateway: &Gateway, channel: String, bytes: Vec<u8>) {
    if queue.try_send((channel, bytes)).is_err() {
        gateway
            .metrics
            .inc("wsgate_adapter_dropped_total", "response_queue_full");
    }
}

async fn publish_responses(
    publisher: Publisher,
    gateway: Arc<Gateway>,
    mut queue: mpsc::Receiver<(String, Vec<u8>)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            next = queue.recv() => next,
            _ = stop.changed() => None,
        };
        match next {
            Some((channel, bytes)) => publish_one(&publisher, &gateway, &channel, bytes).await,
            None => {
                // Stopping: what is queued still goes out.
                while let Ok((channel, bytes)) = queue.try_recv() {
                    publish_one(&publisher, &gateway, &channel, bytes).await;
                }
                return;
            }
        }
    }
}

async fn publish_one(publisher: &Publisher, gateway: &Gateway, channel: &str, bytes: Vec<u8>) {
    if let Err(err) = publisher.publish(channel, &bytes).await {
        gateway.metrics.inc("wsgate_adapter_dropped_total", "publish_failed");
        tracing::warn!(channel, error = %err, "could not publish an adapter response");
    }
}
