//! The Redis Streams adapter protocol (`@socket.io/redis-streams-adapter` 0.3): broadcasts,
//! joins, leaves and disconnects are entries of a Redis Stream that every node reads with XREAD
//! on a connection of its own, from the last id it saw (so a Redis blip loses nothing that was
//! not trimmed); requests and responses go on PUBLISH/SUBSCRIBE as msgpack, answered with the
//! sharded adapter's logic ([`super::sharded::on_peer_message`]).
//!
//! Owns the stream readers and what an entry does on this node (with the entry id appended to
//! broadcasts as the client's recovery offset); the bytes are [`crate::protocol::streams`]'s.

use super::core::{Core, Local};
use super::driver::{Publication, Subscriber};
use super::sharded::on_peer_message;
use crate::metrics::{Metrics, PubSubEvent};
use crate::protocol::adapter::Broadcast;
use crate::protocol::sharded::{Encoding, Message, Outgoing, ShardedChannels};
use crate::protocol::streams::{self, StreamId};
use crate::redis_connection::{RedisConnection, RedisTarget};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// `createAdapter` options every node of a streams cluster must share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsSettings {
    /// `streamName`: the stream key, or its prefix with several streams.
    pub name: String,
    /// `streamCount`: namespaces are spread over this many streams by hash.
    pub count: u32,
    /// `maxLen`: entries kept per stream (XADD MAXLEN ~).
    pub max_len: u64,
}

impl Default for StreamsSettings {
    fn default() -> Self {
        StreamsSettings {
            name: "socket.io".into(),
            count: 1,
            max_len: 10_000,
        }
    }
}

impl StreamsSettings {
    /// The streams this node reads: the ones Node nodes read, plus any a served namespace is
    /// appended to that Node never reads (the negative-index pitfall), so wsgate nodes still
    /// reach each other there.
    pub(super) fn read_keys<'n>(&self, namespaces: impl IntoIterator<Item = &'n str>) -> Vec<String> {
        let mut keys = streams::read_keys(&self.name, self.count);
        for nsp in namespaces {
            if !streams::is_read_by_node(self.count, nsp) {
                let key = streams::stream_key(&self.name, self.count, nsp);
                tracing::warn!(
                    nsp,
                    stream = %key,
                    count = self.count,
                    "namespace maps to a stream no Node streams-adapter node reads (Node's negative hash index): \
                     wsgate nodes read it, Node nodes miss its broadcasts; pick another --stream-count (1 is safe)"
                );
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys
    }
}

/// XREAD BLOCK, as the adapter's `blockTimeInMs`.
const BLOCK: Duration = Duration::from_secs(5);
/// XREAD COUNT, as the adapter's `readCount`.
const READ_COUNT: usize = 100;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One namespace's stream and channels.
#[derive(Clone)]
pub(super) struct StreamsWire {
    pub channels: ShardedChannels,
    pub key: String,
    max_len: u64,
}

impl StreamsWire {
    pub fn new(settings: &StreamsSettings, prefix: &str, nsp: &str) -> Self {
        StreamsWire {
            channels: ShardedChannels::new(prefix, nsp),
            key: streams::stream_key(&settings.name, settings.count, nsp),
            max_len: settings.max_len,
        }
    }

    /// `message` as an entry of this namespace's stream.
    pub fn entry(&self, message: Outgoing) -> Publication {
        Publication::Entry {
            key: self.key.clone(),
            max_len: self.max_len,
            fields: streams::entry_fields(&message),
        }
    }
}

/// The channels of `local`: the namespace's and this node's own, once each (Node counts servers
/// by the first one's subscribers).
pub(super) async fn subscribe(
    subscriber: &mut Subscriber,
    wire: &StreamsWire,
    local: &Local,
) -> redis::RedisResult<()> {
    subscriber.subscribe(&wire.channels.base).await?;
    subscriber.subscribe(&wire.channels.response_for(&local.uid)).await
}

/// A stream entry read, for the delivery task.
pub(super) struct Entry {
    /// Index of the stream in the node's read keys.
    pub stream: usize,
    pub id: StreamId,
    /// `[field, value, field, value, …]`.
    pub fields: Vec<Vec<u8>>,
}

/// What a reader tells the delivery task, in stream order.
pub(super) enum StreamEvent {
    /// The reader starts after `id` (the stream's last entry when the node started).
    Start {
        stream: usize,
        id: StreamId,
    },
    Entry(Entry),
}

/// Reads stream `key` for the life of the node: from its last entry at start, then from the last
/// id read, on a connection of its own (a blocking read holds a connection), reconnecting with
/// backoff and resuming where it stopped. What it reads goes to `events` (the delivery task's
/// queue, each event `wrap`ped in its item type) in stream order.
pub(super) async fn read_forever<T>(
    target: RedisTarget,
    key: String,
    stream: usize,
    events: mpsc::Sender<T>,
    wrap: fn(StreamEvent) -> T,
    metrics: Arc<Metrics>,
) {
    let mut last: Option<StreamId> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut conn = match reader_connection(&target).await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(stream = %key, error = %err, retry_in = ?backoff, "cannot connect to Redis to read the adapter stream; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if last.is_none() {
            match last_id(&mut conn, &key).await {
                Ok(id) => {
                    last = Some(id);
                    if events.send(wrap(StreamEvent::Start { stream, id })).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(stream = %key, error = %err, "cannot read the adapter stream's last id; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let Some(mut from) = last else { continue };
        loop {
            match read(&mut conn, &key, from).await {
                Ok(entries) => {
                    backoff = Duration::from_millis(100);
                    for (id, fields) in entries {
                        let Some(id) = StreamId::parse(&id) else { continue };
                        from = id;
                        last = Some(id);
                        if events
                            .send(wrap(StreamEvent::Entry(Entry { stream, id, fields })))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                Err(err) => {
                    metrics.inc(PubSubEvent::Lost);
                    tracing::warn!(stream = %key, error = %err, resume_after = %from, "reading the adapter stream failed; resuming from the last id read once Redis answers");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A connection of its own for blocking reads, its response timeout past [`BLOCK`].
async fn reader_connection(target: &RedisTarget) -> redis::RedisResult<RedisConnection> {
    let timeout = BLOCK + Duration::from_secs(5);
    if target.cluster {
        let client = target.cluster_client(timeout, None)?;
        return Ok(RedisConnection::Cluster(client.get_async_connection().await?));
    }
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(0);
    Ok(target
        .client()?
        .get_connection_manager_with_config(config)
        .await?
        .into())
}

/// The id of the stream's last entry (`0-0` for an empty or missing stream).
async fn last_id(conn: &mut RedisConnection, key: &str) -> redis::RedisResult<StreamId> {
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(entries
        .first()
        .and_then(|(id, _)| StreamId::parse(id))
        .unwrap_or_default())
}

type Entries = Vec<(String, Vec<Vec<u8>>)>;

async fn read(conn: &mut RedisConnection, key: &str, after: StreamId) -> redis::RedisResult<Entries> {
    // [[key, [[id, [field, value, …]], …]]], or nil when nothing came within BLOCK.
    let reply: Option<Vec<(String, Entries)>> = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(key)
        .arg(after.to_string())
        .query_async(conn)
        .await?;
    Ok(reply
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(_, entries)| entries)
        .collect())
}

/// Entries of `key` after `after` up to `until` (inclusive, `+` for the end), at most `count`.
pub(super) async fn range(
    conn: &mut RedisConnection,
    key: &str,
    after: StreamId,
    until: Option<StreamId>,
    count: usize,
) -> redis::RedisResult<Vec<(StreamId, Vec<Vec<u8>>)>> {
    let until = until.map_or_else(|| "+".to_owned(), |id| id.to_string());
    let entries: Entries = redis::cmd("XRANGE")
        .arg(key)
        .arg(after.next().to_string())
        .arg(until)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, fields)| Some((StreamId::parse(&id)?, fields)))
        .collect())
}

/// Field-value pairs of a flat `[field, value, …]` list.
pub(super) fn pairs(fields: &[Vec<u8>]) -> impl Iterator<Item = (&[u8], &[u8])> {
    fields
        .chunks_exact(2)
        .map(|pair| (pair[0].as_slice(), pair[1].as_slice()))
}

/// What an entry of `key` does on this node for the namespace it names, if `served` here.
/// `offset`: the id to append to a broadcast as the client's recovery offset (recovery on and
/// the broadcast not volatile); `skip`: sockets that already got this entry in a replay.
pub(super) async fn on_entry<'a>(
    core: &Core,
    served: impl Fn(&str) -> Option<(&'a Local, &'a ShardedChannels)>,
    key: &str,
    entry: &Entry,
    recovery: bool,
    skip: &[Arc<str>],
) {
    let envelope = match streams::decode_entry(pairs(&entry.fields)) {
        Ok(Some(envelope)) => envelope,
        Ok(None) => return,
        Err(err) => return core.dropped(key, &err),
    };
    let Some((local, channels)) = envelope.nsp.as_deref().and_then(served) else {
        return;
    };
    match envelope.message {
        // Broadcasts are delivered here when read back, this node's own included: one order per
        // stream for every socket, and the entry id for the offset.
        Message::Broadcast {
            mut broadcast,
            request_id: None,
        } => {
            core.handled(crate::metrics::AdapterMessage::Broadcast);
            if recovery && !is_volatile(&broadcast) {
                broadcast.data.push(rmpv::Value::from(entry.id.to_string()));
            }
            broadcast.selector.except.extend(skip.iter().map(|s| s.to_string()));
            core.deliver(&local.nsp, &broadcast).await;
        }
        message => {
            // As Node: a node does not apply its own requests again.
            let Some(sender) = envelope.uid.filter(|uid| *uid != local.uid) else {
                return;
            };
            let reply_to = channels.response_for(&sender);
            on_peer_message(core, local, reply_to, message, Encoding::Msgpack).await;
        }
    }
}

/// `flags.volatile`: such broadcasts carry no offset (Node's `addOffsetIfNecessary`).
pub(super) fn is_volatile(broadcast: &Broadcast) -> bool {
    crate::protocol::adapter::flag(&broadcast.flags, "volatile").is_some_and(|v| v.as_bool() == Some(true))
}
