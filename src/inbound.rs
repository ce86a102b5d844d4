//! Client events to backends: each event a client emits becomes one entry of a Redis Stream
//! (`XADD`), which backends read with consumer groups and answer through the emitter.
//!
//! Owns the stream writer: one task per node, fed by a bounded queue (full: the event is
//! refused, never buffered without bound), writing in pipelined batches with approximate
//! trimming. An ack means stored: a client that asked for one gets `{"ok":true,"id":…}` only once
//! Redis accepted the entry, and `{"ok":false,"error":…}` otherwise. Knows nothing of rooms or
//! transports: it is the gateway's [`SocketHooks`] for events.
//!
//! The entry's fields are a contract backends rely on (README, "Client events"): `nsp`,
//! `socket`, `user` (JSON), `session`, `event`, `args` (JSON array; binary attachments as
//! `{"_placeholder":true,"num":N}`, their bytes in `bin0`, `bin1`, …), `node`, `ts` (ms).

use crate::gateway::{Socket, SocketHooks};
use crate::protocol::socketio::Packet;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Where and what to forward.
#[derive(Debug, Clone)]
pub struct InboundOptions {
    /// The stream key (`--inbound-stream`).
    pub stream: String,
    /// Approximate length the stream is trimmed to (`MAXLEN ~`).
    pub max_len: u64,
    /// Event names forwarded; empty: all.
    pub events: Vec<String>,
    /// This node's name in the `node` field.
    pub node: String,
    /// Events waiting to be written, at most.
    pub queue: usize,
}

/// Why an event was not stored, as its ack says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    StoreUnavailable,
    QueueFull,
    RateLimited,
    NotForwarded,
    Forbidden,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::QueueFull => "queue_full",
            Refusal::RateLimited => "rate_limited",
            Refusal::NotForwarded => "not_forwarded",
            Refusal::Forbidden => "forbidden",
        }
    }

    /// The ack a client gets: `{"ok":false,"error":"…"}`.
    pub fn ack(self) -> Value {
        json!({ "ok": false, "error": self.as_str() })
    }
}

struct Entry {
    fields: Vec<(&'static str, Vec<u8>)>,
    /// Who to acknowledge, and under which id.
    ack: Option<(Arc<Socket>, u64)>,
}

/// The gateway's event hook that forwards client events to the stream.
pub struct Forwarder {
    options: InboundOptions,
    queue: mpsc::Sender<Entry>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Forwarder {
    /// Starts the writer task on `redis`.
    pub fn start(
        options: InboundOptions,
        redis: crate::redis_connection::RedisConnection,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Forwarder> {
        let (queue, entries) = mpsc::channel(options.queue.max(1));
        tokio::spawn(write(options.clone(), redis, entries, metrics.clone()));
        Arc::new(Forwarder {
            options,
            queue,
            metrics,
        })
    }
}

impl SocketHooks for Forwarder {
    fn on_event(&self, socket: &Arc<Socket>, packet: Packet) -> bool {
        let Some(Value::Array(mut data)) = packet.data else {
            return false;
        };
        let Some(Value::String(event)) = (!data.is_empty()).then(|| data.remove(0)) else {
            return false;
        };
        let ack = packet.id.map(|id| (socket.clone(), id));
        if !self.options.events.is_empty() && !self.options.events.contains(&event) {
            self.metrics.inc("wsgate_inbound_events_total", "not_forwarded");
            tracing::debug!(event = %event, "client event not forwarded (--inbound-events)");
            if let Some((socket, id)) = ack {
                socket.ack(id, vec![Refusal::NotForwarded.ack()], Vec::new());
            }
            return true;
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut fields = vec![
            ("nsp", socket.nsp.as_bytes().to_vec()),
            ("socket", socket.id.as_bytes().to_vec()),
            (
                "user",
                socket.user.as_ref().unwrap_or(&Value::Null).to_string().into_bytes(),
            ),
            ("session", socket.session.as_deref().unwrap_or("").as_bytes().to_vec()),
            ("event", event.into_bytes()),
            ("args", Value::Array(data).to_string().into_bytes()),
            ("node", self.options.node.as_bytes().to_vec()),
            ("ts", ts.to_string().into_bytes()),
        ];
        fields.extend(attachment_fields(&packet.attachments));
        match self.queue.try_send(Entry { fields, ack }) {
            Ok(()) => {}
            Err(refused) => {
                self.metrics.inc("wsgate_inbound_events_total", "queue_full");
                tracing::debug!(socket = %socket.id, "client event refused: the inbound writer's queue is full (Redis slow or down)");
                let entry = match refused {
                    mpsc::error::TrySendError::Full(entry) | mpsc::error::TrySendError::Closed(entry) => entry,
                };
                if let Some((socket, id)) = entry.ack {
                    socket.ack(id, vec![Refusal::QueueFull.ack()], Vec::new());
                }
            }
        }
        true
    }
}

/// `bin0`, `bin1`, …: the raw bytes of each attachment.
fn attachment_fields(attachments: &[Bytes]) -> Vec<(&'static str, Vec<u8>)> {
    const NAMES: [&str; 10] = [
        "bin0", "bin1", "bin2", "bin3", "bin4", "bin5", "bin6", "bin7", "bin8", "bin9",
    ];
    attachments
        .iter()
        .zip(NAMES)
        .map(|(data, name)| (name, data.to_vec()))
        .collect()
}

/// Most entries written in one pipeline.
const BATCH: usize = 256;

/// The writer: takes what is queued (up to a batch), writes it in one pipeline, acks each entry
/// with its id or the error.
async fn write(
    options: InboundOptions,
    mut redis: crate::redis_connection::RedisConnection,
    mut entries: mpsc::Receiver<Entry>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while entries.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for entry in &batch {
            let cmd = pipe
                .cmd("XADD")
                .arg(&options.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(options.max_len)
                .arg("*");
            for (name, value) in &entry.fields {
                cmd.arg(*name).arg(value.as_slice());
            }
        }
        let stored: redis::RedisResult<Vec<String>> = pipe.query_async(&mut redis).await;
        match stored {
            Ok(ids) => {
                for (entry, id) in batch.drain(..).zip(ids) {
                    metrics.inc("wsgate_inbound_events_total", "stored");
                    if let Some((socket, ack)) = entry.ack {
                        socket.ack(ack, vec![json!({ "ok": true, "id": id })], Vec::new());
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, entries = batch.len(), stream = %options.stream, "client events not stored: Redis refused or is unreachable; their acks say so");
                for entry in batch.drain(..) {
                    metrics.inc("wsgate_inbound_events_total", "store_unavailable");
                    if let Some((socket, ack)) = entry.ack {
                        socket.ack(ack, vec![Refusal::StoreUnavailable.ack()], Vec::new());
                    }
                }
            }
        }
    }
}

/// One client event as a backend reads it from the stream (the fields above, decoded).
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEvent {
    /// The stream entry id, to acknowledge with [`ack_events`].
    pub id: String,
    pub nsp: String,
    pub socket: String,
    pub user: Value,
    pub session: String,
    pub event: String,
    /// The arguments, binary ones as `{"_placeholder":true,"num":N}`.
    pub args: Vec<Value>,
    /// The bytes of `bin0`, `bin1`, … in order.
    pub attachments: Vec<Vec<u8>>,
    pub node: String,
    pub ts: u64,
}

/// Reads up to `count` new events for `consumer` of consumer group `group` (see
/// [`create_group`]), waiting up to `block_ms` for one. For Rust backends; any language
/// with a Redis client does the same with `XREADGROUP`. Give it a connection of its own: a
/// blocking read holds a multiplexed connection, and everything else on it waits.
pub async fn read_events(
    redis: &mut redis::aio::ConnectionManager,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
    block_ms: u64,
) -> redis::RedisResult<Vec<InboundEvent>> {
    // [[stream, [[id, [field, value, …]], …]]], or nil when nothing came.
    type Reply = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;
    let reply: Reply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(redis)
        .await?;
    let mut events = Vec::new();
    for (_, entries) in reply.unwrap_or_default() {
        for (id, flat) in entries {
            let mut fields: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
            for pair in flat.chunks(2) {
                if let [name, value] = pair {
                    fields.insert(String::from_utf8_lossy(name).into_owned(), value.clone());
                }
            }
            let text = |name: &str| String::from_utf8_lossy(fields.get(name).map_or(&[][..], |v| v)).into_owned();
            let json = |name: &str| serde_json::from_str::<Value>(&text(name)).unwrap_or(Value::Null);
            let attachments = (0..10).map_while(|n| fields.get(&format!("bin{n}")).cloned()).collect();
            events.push(InboundEvent {
                nsp: text("nsp"),
                socket: text("socket"),
                user: json("user"),
                session: text("session"),
                event: text("event"),
                args: match json("args") {
                    Value::Array(args) => args,
                    _ => Vec::new(),
                },
                attachments,
                node: text("node"),
                ts: text("ts").parse().unwrap_or(0),
                id,
            });
        }
    }
    Ok(events)
}

/// A connection for [`read_events`]: its own, reconnecting by itself, with a response timeout
/// longer than the blocking reads (the default one would cut every quiet read short).
pub async fn reader_connection(client: &redis::Client) -> redis::RedisResult<redis::aio::ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(30)))
        .set_connection_timeout(Some(std::time::Duration::from_secs(5)));
    client.get_connection_manager_with_config(config).await
}

/// Creates consumer group `group` at the end of `stream` (and the stream), unless it exists.
pub async fn create_group(
    redis: &mut redis::aio::ConnectionManager,
    stream: &str,
    group: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(redis)
        .await;
    match created {
        Err(err) if !err.to_string().contains("BUSYGROUP") => Err(err),
        _ => Ok(()),
    }
}

/// Acknowledges handled events (`XACK`), so the group does not hand them out again.
pub async fn ack_events(
    redis: &mut redis::aio::ConnectionManager,
    stream: &str,
    group: &str,
    events: &[InboundEvent],
) -> redis::RedisResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut cmd = redis::cmd("XACK");
    cmd.arg(stream).arg(group);
    for event in events {
        cmd.arg(&event.id);
    }
    cmd.query_async::<i64>(redis).await.map(|_| ())
}

/// The chat of the demo and of `examples/chat_backend.rs`: every `chat` event
/// `{"room": …, "text": …}` is sent to that room as `chat` `{"user", "room", "text"}`, through
/// the cluster emitter, so every member on every node gets it. Runs until the connection fails.
/// `redis` must be a connection of its own ([`reader_connection`]), not the emitter's.
pub async fn run_chat(
    mut redis: redis::aio::ConnectionManager,
    emitter: crate::cluster::Emitter,
    stream: &str,
    group: &str,
    consumer: &str,
) -> redis::RedisResult<()> {
    create_group(&mut redis, stream, group).await?;
    loop {
        let events = read_events(&mut redis, stream, group, consumer, 100, 5000).await?;
        for event in events.iter().filter(|e| e.event == "chat") {
            let message = event.args.first().cloned().unwrap_or(Value::Null);
            let (Some(room), Some(text)) = (message["room"].as_str(), message["text"].as_str()) else {
                continue;
            };
            let reply = json!({ "user": event.user, "room": room, "text": text });
            let arg = crate::protocol::adapter::from_client_value(&reply, &[]);
            if let Err(err) = emitter.of(&event.nsp).to(room).emit("chat", vec![arg]).await {
                tracing::warn!(error = %err, "chat message not published");
            }
        }
        ack_events(&mut redis, stream, group, &events).await?;
    }
}
