//! The Redis adapter: this node as a peer of Node `socket.io` + `@socket.io/redis-adapter`
//! nodes (classic `createAdapter`, or sharded `createShardedAdapter`) or
//! `@socket.io/redis-streams-adapter` nodes, and of their emitters; and, on the streams adapter,
//! connection state recovery ([`recovery`]).
//!
//! This module owns the node's one subscriber connection (kept up with backoff, resubscribing
//! everything after a loss while local delivery goes on), the delivery task that handles what
//! it reads in order (pub/sub messages, stream entries, restored sockets), and the one dispatch
//! over the wire protocols (`wire.rs`). Each protocol is
//! a module of its own ([`classic`], [`sharded`], [`streams`]) that decodes its messages and calls the
//! protocol-independent [`core`]; keyspace revocation is [`keyspace`]'s; Redis commands are
//! [`driver`]'s. Adding a protocol means adding a module and one arm in each method of `wire::Wire`.
//! Reaches sockets only through the gateway's [`crate::gateway::Namespace`] API.

mod classic;
mod core;
pub mod driver;
mod emitter;
mod keyspace;
mod recovery;
mod sharded;
mod streams;
mod wire;

pub use driver::Published;
pub use emitter::{Emitter, EmitterTarget};
pub use keyspace::KeyspaceOptions;
pub use recovery::RecoverySettings;
pub use streams::StreamsSettings;
pub use wire::{AdapterProtocol, ClusterError};

use self::core::{Core, Local};
use crate::gateway::{Gateway, RoomEvent};
use crate::metrics::PubSubEvent;
use crate::protocol::adapter::{Broadcast, Selector};
use crate::protocol::sharded::SubscriptionMode;
use crate::protocol::streams as streams_protocol;
use crate::redis_connection::{RedisConnection, RedisTarget};
use crate::tasks::{TaskKind, Tasks};
use driver::{Incoming, Publication, Publisher, Subscriber};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use streams::StreamEvent;
use tokio::sync::mpsc;
use wire::Wire;

/// How often the subscriber connection is pinged, so a dead link is noticed.
const PING_EVERY: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Messages read from Redis and not yet handled. Past it the subscriber stops reading, so a
/// node that cannot keep up leaves the backlog in Redis's output buffer (which Redis bounds and
/// cuts, as it does for a slow Node subscriber) rather than in its own memory.
const DELIVERY_QUEUE: usize = 1024;

/// Where the cluster adapter talks to Redis.
pub struct ClusterOptions {
    /// Where the subscriber connects: one Redis, or a Redis Cluster's seed nodes.
    pub redis: RedisTarget,
    /// Shared publishing connection.
    pub publisher: RedisConnection,
    /// Key prefix of the adapter channels (`key` of the Node adapter, default `socket.io`).
    pub prefix: String,
    /// Longest a peer's broadcast-with-ack may keep this node waiting for client acks.
    pub max_ack_timeout: Duration,
    /// Follow the session keys through Redis keyspace notifications, so a logout or an expiry
    /// closes the session's sockets at once (`None`: only the periodic revalidation).
    pub keyspace: Option<KeyspaceOptions>,
    /// Classic (`createAdapter`), sharded (`createShardedAdapter`) or Redis Streams adapter
    /// protocol.
    pub protocol: AdapterProtocol,
    /// Connection state recovery (Redis Streams adapter only; `None`: off).
    pub recovery: Option<RecoverySettings>,
}

/// Why the subscriber connection was given up (and a new one is made).
#[derive(Debug, thiserror::Error)]
enum SubscriberLost {
    #[error("the adapter is stopping")]
    Stopped,
    #[error("Redis ended the subscription of {0} (its slot moved)")]
    SlotMoved(String),
    #[error("connection closed")]
    Closed,
    #[error("room subscription failed: {0}")]
    RoomSubscription(#[source] redis::RedisError),
    #[error("PING failed: {0}")]
    Ping(#[source] redis::RedisError),
    #[error("no answer to PING within {PING_EVERY:?}")]
    NoPong,
}

/// What the delivery task handles, one at a time, in the order it was read.
enum Delivery {
    /// A pub/sub message.
    Message { channel: String, payload: Vec<u8> },
    /// A stream reader's start or entry.
    Stream(StreamEvent),
    /// A restored socket to put back in stream order.
    Resume(Box<recovery::Resume>),
}

/// One served namespace: its sockets, this node's uid, and its channels.
struct Adapter {
    local: Local,
    wire: Wire,
}

/// The cluster adapter of one gateway node.
pub struct Cluster {
    core: Core,
    redis: RedisTarget,
    publisher: Publisher,
    protocol: AdapterProtocol,
    adapters: Vec<Adapter>,
    /// Rooms appearing and disappearing, by adapter index (protocols with room channels only).
    room_events: tokio::sync::Mutex<mpsc::UnboundedReceiver<(usize, RoomEvent)>>,
    /// Messages from the subscriber to the delivery task, in the order Redis sent them.
    deliveries: mpsc::Sender<Delivery>,
    /// The streams read (Redis Streams adapter), and per stream the id of the last entry the
    /// delivery task handled.
    streams: Vec<String>,
    positions: parking_lot::Mutex<Vec<streams_protocol::StreamId>>,
    /// Restored sockets whose replay reached past the delivery task's position: entries up to
    /// that id are not delivered to them again (socket id, last replayed id, stream index).
    replayed_up_to: parking_lot::Mutex<Vec<(Arc<str>, streams_protocol::StreamId, usize)>>,
    /// Connection state recovery, when on.
    recovery: Option<RecoverySettings>,
    keyspace: Option<keyspace::Keyspace>,
    /// Ends the subscriber, the delivery task and the response publisher (shutdown).
    stop: tokio_util::sync::CancellationToken,
}

impl Cluster {
    /// Starts the adapter for every namespace of `gateway`, its tasks tracked by `tasks`.
    pub fn start(gateway: Arc<Gateway>, options: ClusterOptions, tasks: &Tasks) -> Arc<Cluster> {
        let ClusterOptions {
            redis,
            publisher,
            prefix,
            max_ack_timeout,
            keyspace,
            protocol,
            recovery,
        } = options;
        let recovery = recovery.filter(|_| matches!(protocol, AdapterProtocol::Streams(_)));
        // Keyspace notifications stay on the node holding the key: on a Redis Cluster one
        // subscriber cannot hear them all, so revocation there is the periodic revalidation.
        let db = redis
            .client()
            .map_or(0, |c| c.get_connection_info().redis_settings().db());
        let keyspace = keyspace
            .filter(|_| !redis.cluster)
            .map(|k| keyspace::Keyspace::new(k, db));
        let adapters: Vec<Adapter> = gateway
            .namespaces()
            .map(|nsp| Adapter {
                local: Local {
                    nsp: nsp.clone(),
                    uid: protocol.new_uid(),
                },
                wire: Wire::new(&protocol, &prefix, &nsp.name),
            })
            .collect();
        let stop = tasks.stopping().child_token();
        // Per-room channels follow the rooms: every namespace's events into one queue, read by
        // the subscriber task.
        let (room_sender, room_events) = mpsc::unbounded_channel();
        if let AdapterProtocol::Sharded(mode) = protocol {
            if mode != SubscriptionMode::Static {
                for (index, adapter) in adapters.iter().enumerate() {
                    let Some(mut events) = adapter.local.nsp.watch_rooms(mode.subscribes(true)) else {
                        continue;
                    };
                    let (sender, stop) = (room_sender.clone(), stop.clone());
                    tasks.spawn(TaskKind::Cluster, async move {
                        while let Some(Some(event)) = stop.run_until_cancelled(events.recv()).await {
                            if sender.send((index, event)).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        }
        let stream_keys = match &protocol {
            AdapterProtocol::Streams(settings) => settings.read_keys(adapters.iter().map(|a| &*a.local.nsp.name)),
            _ => Vec::new(),
        };
        let (responses, queue) = core::Responses::new();
        let (deliveries, mut delivery_queue) = mpsc::channel(DELIVERY_QUEUE);
        let cluster = Arc::new(Cluster {
            core: Core::new(gateway, responses, max_ack_timeout),
            redis,
            publisher: Publisher::new(publisher, protocol.pubsub()),
            protocol,
            room_events: tokio::sync::Mutex::new(room_events),
            adapters,
            deliveries,
            positions: parking_lot::Mutex::new(vec![Default::default(); stream_keys.len()]),
            streams: stream_keys,
            replayed_up_to: parking_lot::Mutex::new(Vec::new()),
            recovery: recovery.clone(),
            keyspace,
            stop: stop.clone(),
        });
        if let Some(settings) = recovery {
            let (records, closes) = mpsc::channel(recovery::RECORD_QUEUE);
            let keys = cluster
                .adapters
                .iter()
                .filter_map(|a| match &a.wire {
                    Wire::Streams(wire) => Some((a.local.nsp.name.to_string(), wire.key.clone())),
                    _ => None,
                })
                .collect();
            let gateway = cluster.core.gateway.clone();
            tasks.spawn(
                TaskKind::Cluster,
                recovery::write_records(
                    gateway.clone(),
                    cluster.publisher.connection(),
                    settings.clone(),
                    closes,
                    stop.clone(),
                ),
            );
            // Restored sockets are put back by the delivery task, in stream order.
            let (resumes, mut resumed) = mpsc::channel(64);
            let (forward, stopped) = (cluster.deliveries.clone(), stop.clone());
            tasks.spawn(TaskKind::Cluster, async move {
                while let Some(Some(resume)) = stopped.run_until_cancelled(resumed.recv()).await {
                    if forward.send(Delivery::Resume(Box::new(resume))).await.is_err() {
                        return;
                    }
                }
            });
            gateway.set_recovery(Arc::new(recovery::StreamsRecovery {
                settings,
                conn: cluster.publisher.connection(),
                keys,
                resumes,
                records,
                gateway: gateway.clone(),
            }));
        }
        // One reader per stream, each on a connection of its own, feeding the delivery task.
        for (index, key) in cluster.streams.iter().enumerate() {
            let reader = streams::read_forever(
                cluster.redis.clone(),
                key.clone(),
                index,
                cluster.deliveries.clone(),
                Delivery::Stream,
                cluster.core.gateway.metrics.clone(),
            );
            let stopped = stop.clone();
            tasks.spawn(TaskKind::Cluster, async move {
                stopped.run_until_cancelled(reader).await;
            });
        }
        tasks.spawn(
            TaskKind::Cluster,
            core::publish_responses(
                cluster.publisher.clone(),
                cluster.core.gateway.clone(),
                queue,
                stop.clone(),
            ),
        );
        // Messages are handled on their own task, so a large fan-out delays neither the
        // subscriber's reads nor its pings, and one at a time, so each socket sees them in the
        // order Redis sent them.
        let delivery = cluster.clone();
        let stopped = stop.clone();
        tasks.spawn(TaskKind::Cluster, async move {
            while let Some(Some(next)) = stopped.run_until_cancelled(delivery_queue.recv()).await {
                match next {
                    Delivery::Message { channel, payload } => delivery.on_message(&channel, &payload).await,
                    Delivery::Stream(event) => delivery.on_stream(event).await,
                    Delivery::Resume(resume) => delivery.on_resume(*resume).await,
                }
            }
        });
        if cluster.keyspace.is_some() {
            tasks.spawn(
                TaskKind::Cluster,
                keyspace::Keyspace::watch_flushes(
                    cluster.core.gateway.clone(),
                    cluster.publisher.connection(),
                    stop.clone(),
                ),
            );
        }
        let subscriber = cluster.clone();
        let metrics = cluster.core.gateway.metrics.clone();
        tasks.spawn(TaskKind::Cluster, async move {
            stop.run_until_cancelled(subscriber.subscribe_forever()).await;
            metrics.pubsub_up.store(0, Ordering::Relaxed);
        });
        cluster
    }

    /// Leaves the cluster: unsubscribes (the pub/sub connection is closed) and stops publishing
    /// responses, once what is queued is out. The node's shutdown does this too.
    pub fn stop(&self) {
        self.stop.cancel();
        self.core.gateway.metrics.pubsub_up.store(0, Ordering::Relaxed);
    }

    fn adapter(&self, nsp: &str) -> Result<&Adapter, ClusterError> {
        self.adapters
            .iter()
            .find(|a| &*a.local.nsp.name == nsp)
            .ok_or_else(|| ClusterError::UnknownNamespace(nsp.into()))
    }

    /// Broadcasts from this node: delivered to local sockets, and published for every other
    /// node. Local delivery happens even when Redis is down (the error says so). Returns how
    /// many local sockets got it now; with the Redis Streams adapter, none: they get it when the
    /// entry is read back, in stream order and with its offset.
    pub async fn broadcast(
        &self,
        nsp: &str,
        selector: Selector,
        data: Vec<rmpv::Value>,
    ) -> Result<usize, ClusterError> {
        let adapter = self.adapter(nsp)?;
        let message = Broadcast {
            uid: Some(adapter.local.uid.clone()),
            nsp: nsp.into(),
            data,
            selector,
            flags: vec![],
        };
        let publication = adapter.wire.broadcast(&message, &adapter.local.uid);
        if let Publication::Entry { .. } = publication {
            return match self.publisher.send(&publication).await {
                Ok(_) => Ok(0),
                Err(err) => {
                    // Redis is down: this node's sockets still get it, without an offset.
                    self.broadcast_local(nsp, &message.selector, &message.data)?;
                    Err(err.into())
                }
            };
        }
        let local = self.broadcast_local(nsp, &message.selector, &message.data)?;
        self.publisher.send(&publication).await?;
        Ok(local)
    }

    /// A `local` broadcast: this node's sockets only, nothing is published. Returns how many
    /// sockets got it.
    pub fn broadcast_local(&self, nsp: &str, selector: &Selector, data: &[rmpv::Value]) -> Result<usize, ClusterError> {
        let adapter = self.adapter(nsp)?;
        Ok(self.core.deliver_now(&adapter.local.nsp, selector, data))
    }

    /// Keeps one subscriber connection up for the life of the node.
    async fn subscribe_forever(self: Arc<Self>) {
        let metrics = self.core.gateway.metrics.clone();
        let mut backoff = Duration::from_millis(100);
        let mut was_up = false;
        // Held for the life of the task: room events are read here only.
        let mut room_events = self.room_events.lock().await;
        loop {
            match self.subscribe_all(&mut room_events).await {
                Ok(subscriber) => {
                    metrics.pubsub_up.store(1, Ordering::Relaxed);
                    // Redis may have restarted with another setting: check it on every connect.
                    if let Some(keyspace) = &self.keyspace {
                        keyspace
                            .check_redis(&self.core.gateway, self.publisher.connection())
                            .await;
                    }
                    if was_up {
                        metrics.inc(PubSubEvent::Recovered);
                        tracing::info!("Redis pub/sub connection restored; resubscribed to every adapter channel");
                        // Keyspace events were lost meanwhile: look at every session now.
                        self.core.gateway.revalidate_sessions_soon();
                    } else {
                        tracing::info!(namespaces = self.adapters.len(), protocol = ?self.protocol, "cluster adapter subscribed");
                    }
                    was_up = true;
                    backoff = Duration::from_millis(100);
                    let why = self.serve(subscriber, &mut room_events).await;
                    metrics.pubsub_up.store(0, Ordering::Relaxed);
                    metrics.inc(PubSubEvent::Lost);
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
        if let Some(keyspace) = &self.keyspace {
            subscriber.psubscribe(&keyspace.pattern()).await?;
        }
        while room_events.try_recv().is_ok() {}
        for adapter in &self.adapters {
            adapter.wire.subscribe(&mut subscriber, &adapter.local).await?;
        }
        Ok(subscriber)
    }

    /// Handles messages (and per-room subscriptions) until the connection fails; returns why.
    async fn serve(
        &self,
        mut subscriber: Subscriber,
        room_events: &mut mpsc::UnboundedReceiver<(usize, RoomEvent)>,
    ) -> SubscriberLost {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                incoming = subscriber.next() => match incoming {
                    Incoming::Message { channel, payload } => {
                        if self.deliveries.send(Delivery::Message { channel, payload }).await.is_err() {
                            return SubscriberLost::Stopped;
                        }
                    }
                    // A slot migration moves shard channels away from their node: resubscribing
                    // everything on a fresh subscriber finds their new home.
                    Incoming::ShardUnsubscribed { channel } if self.wants(&channel) => {
                        return SubscriberLost::SlotMoved(channel);
                    }
                    Incoming::ShardUnsubscribed { .. } => {}
                    Incoming::Closed => return SubscriberLost::Closed,
                },
                Some((index, event)) = room_events.recv() => {
                    let Some(adapter) = self.adapters.get(index) else { continue };
                    let result = match &event {
                        RoomEvent::Created(room) => match adapter.wire.room_channel(room) {
                            Some(channel) => subscriber.subscribe(&channel).await,
                            None => Ok(()),
                        },
                        RoomEvent::Deleted(room) => match adapter.wire.room_channel(room) {
                            Some(channel) => subscriber.unsubscribe(&channel).await,
                            None => Ok(()),
                        },
                    };
                    if let Err(err) = result {
                        return SubscriberLost::RoomSubscription(err);
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(PING_EVERY, subscriber.ping()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => return SubscriberLost::Ping(err),
                        Err(_) => return SubscriberLost::NoPong,
                    }
                }
            }
        }
    }

    async fn on_message(&self, channel: &str, payload: &[u8]) {
        if let Some(keyspace) = &self.keyspace {
            if keyspace.on_message(&self.core.gateway, channel, payload) {
                return;
            }
        }
        for adapter in &self.adapters {
            if adapter
                .wire
                .on_message(&self.core, &adapter.local, channel, payload)
                .await
            {
                return;
            }
        }
    }

    /// A stream reader's start or entry, in stream order.
    async fn on_stream(&self, event: StreamEvent) {
        let entry = match event {
            StreamEvent::Start { stream, id } => {
                if let Some(position) = self.positions.lock().get_mut(stream) {
                    *position = id;
                }
                return;
            }
            StreamEvent::Entry(entry) => entry,
        };
        if let Some(position) = self.positions.lock().get_mut(entry.stream) {
            *position = entry.id;
        }
        let Some(key) = self.streams.get(entry.stream) else {
            return;
        };
        // As Node: an entry of any stream read goes to its namespace.
        let served = |nsp: &str| {
            self.adapters.iter().find_map(|a| match &a.wire {
                Wire::Streams(wire) if *a.local.nsp.name == *nsp => Some((&a.local, &wire.channels)),
                _ => None,
            })
        };
        // Restored sockets that got this entry in their replay.
        let skip: Vec<Arc<str>> = {
            let mut replayed = self.replayed_up_to.lock();
            let skip = replayed
                .iter()
                .filter(|(_, until, stream)| *stream == entry.stream && *until >= entry.id)
                .map(|(sid, _, _)| sid.clone())
                .collect();
            replayed.retain(|(_, until, stream)| *stream != entry.stream || *until > entry.id);
            skip
        };
        streams::on_entry(&self.core, served, key, &entry, self.recovery.is_some(), &skip).await;
    }

    /// Puts a restored socket back, here where the stream position is known: the entries its
    /// replay ends before are fetched now, and entries it already has are marked so they are
    /// not delivered to it again; then the replay, the CONNECT reply, and its rooms.
    async fn on_resume(&self, resume: recovery::Resume) {
        let recovery::Resume {
            nsp,
            socket,
            rooms,
            restored,
            connect,
            done,
        } = resume;
        let key = self.adapter(&nsp.name).ok().and_then(|a| match &a.wire {
            Wire::Streams(wire) => Some(wire.key.clone()),
            _ => None,
        });
        let stream = key.as_ref().and_then(|key| self.streams.iter().position(|k| k == key));
        let position = stream.and_then(|i| self.positions.lock().get(i).copied());
        let mut replay = restored.replay;
        match (key, stream, position) {
            (Some(key), Some(_), Some(position)) if position > restored.until => {
                let mut conn = self.publisher.connection();
                let mut session_rooms = restored.rooms;
                // In batches: the reader may be far past the replay's end (it is up to
                // `position`, which bounds this).
                let mut after = restored.until;
                loop {
                    match streams::range(&mut conn, &key, after, Some(position), 500).await {
                        Ok(entries) => {
                            let full = entries.len() == 500;
                            for (id, fields) in entries {
                                after = id;
                                if let Some(event) = recovery::replayed(&fields, id, &nsp.name, &mut session_rooms) {
                                    replay.push(event);
                                }
                            }
                            if !full {
                                break;
                            }
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, socket = %socket.id, "recovery: could not read the entries between the replay and live delivery; the socket may miss some");
                            break;
                        }
                    }
                }
            }
            (_, Some(stream), Some(position)) if position < restored.until => {
                self.replayed_up_to
                    .lock()
                    .push((socket.id.clone(), restored.until, stream));
            }
            _ => {}
        }
        // This socket, still here from before (its connection's end not seen yet), gives way.
        if let Some(stale) = nsp.socket(&socket.id) {
            self.core.gateway.disconnect(&stale, true);
        }
        for event in &replay {
            socket.send(&recovery::replay_packet(&nsp.name, event));
        }
        socket.send(&connect);
        nsp.add(&socket, rooms);
        let _ = done.send(());
    }

    /// Whether this node is meant to be subscribed to `channel` now.
    fn wants(&self, channel: &str) -> bool {
        self.adapters.iter().any(|a| a.wire.wants(&a.local, channel))
    }
}
