//! The protocol-independent half of the adapter: what a peer's message does on this node.
//!
//! Owns local delivery (a broadcast reaching this node's sockets), the operations a peer can
//! apply to a selection of sockets (join, leave, disconnect), the answers to requests (built off
//! the subscriber task when they read many sockets, published in order by one task) and
//! broadcasts that wait for client acks. Every wire protocol (classic, sharded, …) decodes its
//! own messages and calls in here with typed values; nothing here knows a channel name or a
//! byte of any wire format. Reaches sockets only through the gateway's [`Namespace`] API.

use crate::gateway::{AckHandler, Gateway, Namespace, Socket};
use crate::metrics::{AdapterDrop, AdapterMessage};
use crate::protocol::adapter::{self, AdapterError, Broadcast, Selector};
use crate::protocol::socketio::Packet;
use rand::Rng as _;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

use super::driver::Publisher;

/// How long a BROADCAST-with-ack waits for client acks when the requester set no timeout.
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses waiting to be published; past this, responses are dropped and counted.
pub(super) const RESPONSE_QUEUE: usize = 10_000;
/// Read-only requests (SOCKETS, ALL_ROOMS, REMOTE_FETCH) built at once off the subscriber task;
/// more waiting than this are dropped and counted (the requester times out, as with a lost node).
const READS_IN_FLIGHT: usize = 64;

/// One served namespace as the adapter sees it: its sockets and this node's uid in it.
pub(super) struct Local {
    pub nsp: Arc<Namespace>,
    /// Never "emitter": that uid belongs to the Node emitter.
    pub uid: String,
}

/// Where a peer's request is applied: a selection of sockets and what to do with them.
pub(super) enum Operation<'a> {
    Join(&'a [String]),
    Leave(&'a [String]),
    Disconnect { close: bool },
}

/// A request this node (or an emitter) publishes to every node.
pub(super) enum Command<'a> {
    Join(&'a [String]),
    Leave(&'a [String]),
    Disconnect { close: bool },
    ServerSideEmit(&'a [rmpv::Value]),
}

/// A response waiting to be published: its channel and bytes.
pub(super) type Response = (String, Vec<u8>);

/// What every wire protocol needs from the node: its gateway, the response queue and limits.
pub(super) struct Core {
    pub gateway: Arc<Gateway>,
    /// Responses are published in order by one task, so CLIENT_COUNT precedes its acks.
    responses: mpsc::Sender<Response>,
    max_ack_timeout: Duration,
    /// Read-only requests being answered (bounded by [`READS_IN_FLIGHT`]).
    reads: Arc<AtomicUsize>,
    /// One builds a read-only response at a time: the subscriber task never waits for it.
    read_worker: Arc<Semaphore>,
}

impl Core {
    pub fn new(gateway: Arc<Gateway>, responses: mpsc::Sender<Response>, max_ack_timeout: Duration) -> Self {
        Core {
            gateway,
            responses,
            max_ack_timeout,
            reads: Arc::default(),
            read_worker: Arc::new(Semaphore::new(1)),
        }
    }

    /// Counts a message handled, by kind.
    pub fn handled(&self, kind: AdapterMessage) {
        self.gateway.metrics.inc(kind);
    }

    /// Counts and logs a message that could not be decoded.
    pub fn dropped(&self, channel: &str, err: &AdapterError) {
        self.gateway.metrics.inc(err.label());
        tracing::debug!(channel, error = %err, "dropped an undecodable adapter message");
    }

    /// Counts the `n` packets one broadcast queued; returns `n`.
    pub fn delivered(&self, n: usize) -> usize {
        self.gateway
            .metrics
            .broadcast_deliveries
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// A peer's broadcast, delivered to this node's selected sockets (spread over the workers
    /// when it reaches many).
    pub async fn deliver(&self, nsp: &Namespace, message: &Broadcast) {
        let packet = client_packet(&nsp.name, &message.data);
        let (rooms, except) = (&message.selector.rooms, &message.selector.except);
        self.delivered(nsp.broadcast_spread(rooms, except, &packet).await);
    }

    /// A broadcast to this node's sockets only; returns how many got it.
    pub fn deliver_now(&self, nsp: &Namespace, selector: &Selector, data: &[rmpv::Value]) -> usize {
        let packet = client_packet(&nsp.name, data);
        self.delivered(nsp.broadcast(&selector.rooms, &selector.except, &packet))
    }

    /// Applies a peer's request to the selected sockets.
    pub fn apply(&self, nsp: &Namespace, selector: &Selector, operation: Operation<'_>) {
        for socket in nsp.select(&selector.rooms, &selector.except) {
            self.apply_to(nsp, &socket, &operation);
        }
    }

    /// Applies a request to one socket.
    pub fn apply_to(&self, nsp: &Namespace, socket: &Arc<Socket>, operation: &Operation<'_>) {
        match operation {
            Operation::Join(rooms) => {
                for room in *rooms {
                    nsp.join(socket, room.as_str().into());
                }
            }
            Operation::Leave(rooms) => {
                for room in *rooms {
                    nsp.leave(socket, room);
                }
            }
            Operation::Disconnect { close } => self.gateway.disconnect(socket, *close),
        }
    }

    /// Queues a response for publishing; a full queue drops it (counted) rather than grow.
    pub fn respond(&self, channel: &str, bytes: Vec<u8>) {
        respond(&self.responses, &self.gateway, channel.to_owned(), bytes);
    }

    /// Builds a read-only response off the subscriber task, so a request about every socket of
    /// a large node does not hold up broadcasts behind it.
    pub fn respond_later(&self, build: impl FnOnce() -> Vec<u8> + Send + 'static, channel: &str) {
        let reads = self.reads.clone();
        if reads.fetch_add(1, Ordering::Relaxed) >= READS_IN_FLIGHT {
            reads.fetch_sub(1, Ordering::Relaxed);
            self.gateway.metrics.inc(AdapterDrop::ReadsBusy);
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

    /// A peer's broadcast with acks: the client count first (`count`), then each client's ack
    /// (`ack`), both encoded in the requester's protocol and published on `reply_to`.
    pub fn broadcast_with_ack(
        &self,
        nsp: &Namespace,
        message: Broadcast,
        reply_to: String,
        count: impl FnOnce(usize) -> Vec<u8>,
        ack: impl Fn(rmpv::Value) -> Vec<u8> + Send + Sync + 'static,
    ) {
        // The requester decides how long to wait, up to --max-ack-timeout.
        let timeout = message
            .timeout_ms()
            .map_or(DEFAULT_ACK_TIMEOUT, Duration::from_millis)
            .min(self.max_ack_timeout);
        let packet = client_packet(&nsp.name, &message.data);
        // One handler for every socket.
        let (responses, gateway, channel) = (self.responses.clone(), self.gateway.clone(), reply_to.clone());
        let handler: AckHandler = Arc::new(move |args: Vec<Value>, attachments: Vec<bytes::Bytes>| {
            // Node passes on the first argument of the client's ack.
            let first = args
                .first()
                .map_or(rmpv::Value::Nil, |a| adapter::from_client_value(a, &attachments));
            respond(&responses, &gateway, channel.clone(), ack(first));
        });
        let (rooms, except) = (&message.selector.rooms, &message.selector.except);
        let reached = nsp.broadcast_with_ack(rooms, except, packet, timeout, handler);
        self.delivered(reached);
        self.respond(&reply_to, count(reached));
    }
}

/// The client packet of a broadcast's `[event, ...args]`.
fn client_packet(nsp: &str, data: &[rmpv::Value]) -> Packet {
    let (args, attachments) = adapter::to_client_args(data);
    Packet::event(nsp, args, attachments)
}

/// Queues a response for publishing; a full queue drops it (counted) rather than grow.
fn respond(queue: &mpsc::Sender<Response>, gateway: &Gateway, channel: String, bytes: Vec<u8>) {
    if queue.try_send((channel, bytes)).is_err() {
        gateway.metrics.inc(AdapterDrop::ResponseQueueFull);
    }
}

/// Publishes the queued responses in order until `stop`; what is queued then still goes out.
pub(super) async fn publish_responses(
    publisher: Publisher,
    gateway: Arc<Gateway>,
    mut queue: mpsc::Receiver<Response>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let next = tokio::select! {
            next = queue.recv() => next,
            () = stop.cancelled() => None,
        };
        match next {
            Some((channel, bytes)) => publish_one(&publisher, &gateway, &channel, bytes).await,
            None => {
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
        gateway.metrics.inc(AdapterDrop::PublishFailed);
        tracing::warn!(channel, error = %err, "could not publish an adapter response");
    }
}

/// A socket as fetchSockets describes it: `{id, handshake, rooms, data}`. Cookies are never
/// included (Node would publish them).
pub(super) fn remote_socket(socket: &Socket) -> Value {
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
            // The CONNECT payload is not kept (its size is the client's to choose).
            "auth": {},
        },
        "rooms": socket.rooms().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "data": socket.data(),
    })
}

/// A node's uid as the classic adapter makes it: `uid2(6)`, 6 characters of `[A-Za-z0-9_-]`.
pub(super) fn short_uid() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A node's uid as socket.io-adapter's `randomId()` makes it: 16 hex digits.
pub(super) fn hex_uid() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}
