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
const RESPONSE_QUEUE: usize = 10_000;
/// Room joins or leaves one request may ask for (rooms × selected sockets); past it the request
/// is refused and counted: a 190,000-room join once stalled a node for seconds.
const MAX_OPERATIONS_PER_REQUEST: usize = 4_000_000;
/// Operations applied between two yields, so the node's other tasks (health checks, sessions)
/// run while a large request is applied.
const OPERATIONS_PER_SLICE: usize = 4096;
/// Bytes of responses waiting to be published; past it, responses are dropped and counted
/// (100 fetchSockets answers once took a node to 3.2 GB).
const RESPONSE_QUEUE_BYTES: usize = 64 << 20;
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
    responses: Responses,
    max_ack_timeout: Duration,
    /// Read-only requests being answered (bounded by [`READS_IN_FLIGHT`]).
    reads: Arc<AtomicUsize>,
    /// One builds a read-only response at a time: the subscriber task never waits for it.
    read_worker: Arc<Semaphore>,
}

impl Core {
    pub fn new(gateway: Arc<Gateway>, responses: Responses, max_ack_timeout: Duration) -> Self {
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

    /// Applies a peer's request to the selected sockets, in slices that yield, so a request
    /// about many rooms or sockets never holds up the node's other work; one past
    /// [`MAX_OPERATIONS_PER_REQUEST`] is refused and counted.
    pub async fn apply(&self, nsp: &Namespace, selector: &Selector, operation: Operation<'_>) {
        let sockets = nsp.select(&selector.rooms, &selector.except);
        let per_socket = match &operation {
            Operation::Join(rooms) | Operation::Leave(rooms) => rooms.len().max(1),
            Operation::Disconnect { .. } => 1,
        };
        if sockets.len().saturating_mul(per_socket) > MAX_OPERATIONS_PER_REQUEST {
            self.gateway.metrics.inc(AdapterDrop::TooManyOperations);
            tracing::warn!(
                sockets = sockets.len(),
                rooms = per_socket,
                "refused a peer's request: more room operations than one request may ask for"
            );
            return;
        }
        let mut done = 0;
        for socket in &sockets {
            match &operation {
                Operation::Join(rooms) | Operation::Leave(rooms) => {
                    for chunk in rooms.chunks(OPERATIONS_PER_SLICE) {
                        let slice = match &operation {
                            Operation::Join(_) => Operation::Join(chunk),
                            _ => Operation::Leave(chunk),
                        };
                        self.apply_to(nsp, socket, &slice);
                        done += chunk.len();
                        if done >= OPERATIONS_PER_SLICE {
                            done = 0;
                            tokio::task::yield_now().await;
                        }
                    }
                }
                disconnect => {
                    self.apply_to(nsp, socket, disconnect);
                    done += 1;
                    if done >= OPERATIONS_PER_SLICE {
                        done = 0;
                        tokio::task::yield_now().await;
                    }
                }
            }
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

/// The queue of responses waiting to be published, bounded in count and in bytes.
#[derive(Clone)]
pub(super) struct Responses {
    queue: mpsc::Sender<Response>,
    bytes: Arc<AtomicUsize>,
}

impl Responses {
    pub fn new() -> (Responses, ResponseQueue) {
        let (queue, receiver) = mpsc::channel(RESPONSE_QUEUE);
        let bytes = Arc::new(AtomicUsize::new(0));
        (
            Responses {
                queue,
                bytes: bytes.clone(),
            },
            ResponseQueue { receiver, bytes },
        )
    }
}

/// The publishing end of [`Responses`].
pub(super) struct ResponseQueue {
    receiver: mpsc::Receiver<Response>,
    bytes: Arc<AtomicUsize>,
}

/// Queues a response for publishing; a full queue (by count or bytes) drops it (counted) rather
/// than grow.
fn respond(queue: &Responses, gateway: &Gateway, channel: String, bytes: Vec<u8>) {
    let size = bytes.len();
    if queue.bytes.fetch_add(size, Ordering::Relaxed) + size > RESPONSE_QUEUE_BYTES {
        queue.bytes.fetch_sub(size, Ordering::Relaxed);
        gateway.metrics.inc(AdapterDrop::ResponseQueueFull);
        return;
    }
    if queue.queue.try_send((channel, bytes)).is_err() {
        queue.bytes.fetch_sub(size, Ordering::Relaxed);
        gateway.metrics.inc(AdapterDrop::ResponseQueueFull);
    }
}

/// Publishes the queued responses in order until `stop`; what is queued then still goes out.
pub(super) async fn publish_responses(
    publisher: Publisher,
    gateway: Arc<Gateway>,
    mut queue: ResponseQueue,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let next = tokio::select! {
            next = queue.receiver.recv() => next,
            () = stop.cancelled() => None,
        };
        match next {
            Some((channel, bytes)) => publish_one(&publisher, &gateway, &queue, &channel, bytes).await,
            None => {
                while let Ok((channel, bytes)) = queue.receiver.try_recv() {
                    publish_one(&publisher, &gateway, &queue, &channel, bytes).await;
                }
                return;
            }
        }
    }
}

async fn publish_one(publisher: &Publisher, gateway: &Gateway, queue: &ResponseQueue, channel: &str, bytes: Vec<u8>) {
    let size = bytes.len();
    let published = publisher.publish(channel, &bytes).await;
    drop(bytes);
    queue.bytes.fetch_sub(size, Ordering::Relaxed);
    if let Err(err) = published {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{GatewayConfig, NoHooks, RoomTemplates};

    fn gateway() -> Arc<Gateway> {
        Gateway::new(GatewayConfig {
            namespaces: vec![],
            auth: None,
            rooms: RoomTemplates::default(),
            transport: Default::default(),
            hooks: Arc::new(NoHooks),
            revalidate_interval: None,
            touch_interval: None,
            policy: Default::default(),
            metrics: Default::default(),
            tasks: Default::default(),
            admission: Default::default(),
        })
    }

    /// 100 fetchSockets answers of 82-byte requests once took a node to 3.2 GB: responses
    /// waiting to be published are bounded in bytes, and what does not fit is dropped, counted.
    #[tokio::test]
    async fn responses_waiting_to_be_published_are_bounded_in_bytes() {
        let gateway = gateway();
        let (responses, mut queue) = Responses::new();
        let ten_mib = 10 << 20;
        for _ in 0..10 {
            respond(&responses, &gateway, "ch".into(), vec![0u8; ten_mib]);
        }
        let mut queued = 0;
        while let Ok((_, bytes)) = queue.receiver.try_recv() {
            queued += bytes.len();
        }
        assert_eq!(queued, 6 * ten_mib, "64 MiB hold six");
        assert_eq!(gateway.metrics.get(AdapterDrop::ResponseQueueFull), 4);
    }
}
