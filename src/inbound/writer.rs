//! The gateway's stream writer: each event a client emits becomes one entry of a Redis Stream
//! (`XADD`), which backends read with consumer groups and answer through the emitter.
//!
//! One task per node, fed by a bounded queue (full: the event is refused, never buffered without
//! bound), writing in pipelined batches with approximate trimming. An ack means stored: a client
//! that asked for one gets `{"ok":true,"id":…}` only once Redis accepted the entry, and
//! `{"ok":false,"error":…}` otherwise. Knows nothing of rooms or transports: it is the gateway's
//! [`SocketHooks`] for events.

use crate::gateway::{Refusal, Socket, SocketHooks};
use crate::metrics::{InboundEvent, Metrics};
use crate::protocol::socketio::Packet;
use crate::redis_connection::RedisConnection;
use crate::tasks::{TaskKind, Tasks};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Bytes of events waiting to be written, at most.
    pub queue_bytes: usize,
}

struct Entry {
    fields: Vec<(&'static str, Vec<u8>)>,
    /// What the entry counts against the queue's byte budget.
    bytes: usize,
    /// Who to acknowledge, and under which id.
    ack: Option<(Arc<Socket>, u64)>,
}

/// The gateway's event hook that forwards client events to the stream.
pub struct Forwarder {
    options: InboundOptions,
    queue: mpsc::Sender<Entry>,
    /// Bytes of the entries queued and not yet written.
    queued_bytes: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// Starts the writer task on `redis`.
    pub fn start(
        options: InboundOptions,
        redis: RedisConnection,
        metrics: Arc<Metrics>,
        tasks: &Tasks,
    ) -> Arc<Forwarder> {
        let (queue, entries) = mpsc::channel(options.queue.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            options: options.clone(),
            redis,
            metrics: metrics.clone(),
            queued_bytes: queued_bytes.clone(),
        };
        tasks.spawn(TaskKind::InboundWriter, writer.run(entries, tasks.stopping()));
        Arc::new(Forwarder {
            options,
            queue,
            queued_bytes,
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
            self.metrics.inc(InboundEvent::NotForwarded);
            tracing::debug!(event = %event, "client event not forwarded (--inbound-events)");
            if let Some((socket, id)) = ack {
                socket.refuse(id, Refusal::NotForwarded);
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
        let bytes: usize = fields.iter().map(|(name, value)| name.len() + value.len()).sum();
        let queued = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let over_budget = queued + bytes > self.options.queue_bytes;
        let sent = if over_budget {
            Err(mpsc::error::TrySendError::Full(Entry { fields, bytes, ack }))
        } else {
            self.queue.try_send(Entry { fields, bytes, ack })
        };
        match sent {
            Ok(()) => {}
            Err(refused) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.metrics.inc(InboundEvent::QueueFull);
                tracing::debug!(socket = %socket.id, "client event refused: the inbound writer's queue is full (Redis slow or down; --inbound-queue-bytes)");
                let entry = match refused {
                    mpsc::error::TrySendError::Full(entry) | mpsc::error::TrySendError::Closed(entry) => entry,
                };
                if let Some((socket, id)) = entry.ack {
                    socket.refuse(id, Refusal::QueueFull);
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

/// The writer task's state.
struct Writer {
    options: InboundOptions,
    redis: RedisConnection,
    metrics: Arc<Metrics>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Writer {
    /// Takes what is queued (up to a batch), writes it in one pipeline, acks each entry with
    /// its id or the error. On `stop`, the queue is closed and what it holds is still written
    /// (those events were accepted), then the task ends.
    async fn run(mut self, mut entries: mpsc::Receiver<Entry>, stop: tokio_util::sync::CancellationToken) {
        let options = &self.options;
        let metrics = &self.metrics;
        let redis = &mut self.redis;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let received = tokio::select! {
                n = entries.recv_many(&mut batch, BATCH) => n,
                () = stop.cancelled(), if !entries.is_closed() => {
                    entries.close();
                    continue;
                }
            };
            if received == 0 {
                return;
            }
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
            let stored: redis::RedisResult<Vec<String>> = pipe.query_async(redis).await;
            let written: usize = batch.iter().map(|entry| entry.bytes).sum();
            self.queued_bytes.fetch_sub(written, Ordering::Relaxed);
            match stored {
                Ok(ids) => {
                    for (entry, id) in batch.drain(..).zip(ids) {
                        metrics.inc(InboundEvent::Stored);
                        if let Some((socket, ack)) = entry.ack {
                            socket.ack(ack, vec![json!({ "ok": true, "id": id })], Vec::new());
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, entries = batch.len(), stream = %options.stream, "client events not stored: Redis refused or is unreachable; their acks say so");
                    for entry in batch.drain(..) {
                        metrics.inc(InboundEvent::StoreUnavailable);
                        if let Some((socket, ack)) = entry.ack {
                            socket.refuse(ack, Refusal::StoreUnavailable);
                        }
                    }
                }
            }
        }
    }
}
