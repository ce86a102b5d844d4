//! The Redis side of the cluster adapter, and nothing else: publishing, counting a channel's
//! subscribers, and one subscriber connection, in classic pub/sub (PUBLISH, SUBSCRIBE,
//! PSUBSCRIBE, NUMSUB) or sharded pub/sub (SPUBLISH, SSUBSCRIBE, SHARDNUMSUB, Redis 7+).
//!
//! Knows channels and bytes, not what they mean: the adapter logic above it is the same for
//! both flavours. The subscriber speaks RESP3, where one connection can hold classic, pattern
//! and shard subscriptions at once and still answer PING; messages arrive as pushes.

use crate::redis_connection::{RedisConnection, RedisTarget};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use std::time::Duration;
use tokio::sync::mpsc;

/// Which pub/sub commands channels are used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSub {
    Classic,
    Sharded,
}

/// Publishes and counts on a shared, self-reconnecting connection.
#[derive(Clone)]
pub struct Publisher {
    conn: RedisConnection,
    flavour: PubSub,
}

impl Publisher {
    pub fn new(conn: RedisConnection, flavour: PubSub) -> Self {
        Publisher { conn, flavour }
    }

    /// Publishes `bytes` on `channel`; returns how many subscribers got it (on its shard, for
    /// sharded pub/sub).
    pub async fn publish(&self, channel: &str, bytes: &[u8]) -> redis::RedisResult<i64> {
        let command = match self.flavour {
            PubSub::Classic => "PUBLISH",
            PubSub::Sharded => "SPUBLISH",
        };
        let mut conn = self.conn.clone();
        redis::cmd(command).arg(channel).arg(bytes).query_async(&mut conn).await
    }

    /// Puts `publication` in Redis: PUBLISH (or SPUBLISH), or XADD.
    pub async fn send(&self, publication: &Publication) -> redis::RedisResult<Published> {
        match publication {
            Publication::Message { channel, bytes } => self.publish(channel, bytes).await.map(Published::Receivers),
            Publication::Entry { key, max_len, fields } => {
                let mut command = redis::cmd("XADD");
                command.arg(key).arg("MAXLEN").arg("~").arg(*max_len).arg("*");
                for (name, value) in fields {
                    command.arg(*name).arg(value.as_slice());
                }
                let mut conn = self.conn.clone();
                command.query_async(&mut conn).await.map(Published::Appended)
            }
        }
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB` or `PUBSUB SHARDNUMSUB`; on a Redis Cluster
    /// summed over its nodes, as Node's sharded adapter counts servers).
    pub async fn subscribers(&self, channel: &str) -> redis::RedisResult<i64> {
        let which = match self.flavour {
            PubSub::Classic => "NUMSUB",
            PubSub::Sharded => "SHARDNUMSUB",
        };
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("PUBSUB")
            .arg(which)
            .arg(channel)
            .query_async(&mut conn)
            .await?;
        Ok(match reply {
            // One server: [channel, count].
            Value::Array(items) | Value::Set(items) => match items.get(1) {
                Some(Value::Int(n)) => *n,
                _ => 0,
            },
            // A cluster client merges every node's answer into a map.
            Value::Map(pairs) => pairs
                .iter()
                .filter_map(|(_, count)| if let Value::Int(n) = count { Some(*n) } else { None })
                .sum(),
            _ => 0,
        })
    }

    /// The shared connection, for the commands that are neither (CONFIG).
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }
}

/// What one publish puts in Redis: a pub/sub message, or a stream entry (the Redis Streams
/// adapter's broadcasts and room operations).
#[derive(Debug, Clone, PartialEq)]
pub enum Publication {
    Message {
        channel: String,
        bytes: Vec<u8>,
    },
    /// `XADD <key> MAXLEN ~ <max_len> * <field> <value> …`.
    Entry {
        key: String,
        max_len: u64,
        fields: [(&'static str, Vec<u8>); 4],
    },
}

/// What Redis said to a [`Publication`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// How many subscribers got the message (on its shard, for sharded pub/sub).
    Receivers(i64),
    /// The id of the stream entry.
    Appended(String),
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Published::Receivers(n) => write!(f, "{n} subscribed node(s) received it"),
            Published::Appended(id) => write!(f, "appended as stream entry {id}"),
        }
    }
}

/// What the subscriber connection delivered.
#[derive(Debug)]
pub enum Incoming {
    /// A message on `channel` (for a pattern subscription, the channel it matched).
    Message { channel: String, payload: Vec<u8> },
    /// Redis ended a shard subscription by itself (its slot moved to another node), or confirmed
    /// one of ours: the adapter decides which, by whether it still wants the channel.
    ShardUnsubscribed { channel: String },
    /// The connection is gone; a new [`Subscriber`] must be connected.
    Closed,
}

/// One subscriber connection. Not reconnecting by itself: the adapter reconnects and
/// resubscribes what it needs, in the order it needs.
pub struct Subscriber {
    conn: SubscriberConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    flavour: PubSub,
}

enum SubscriberConnection {
    Single(MultiplexedConnection),
    /// Shard channels are subscribed on the node owning their slot. The client resubscribes
    /// by itself after a node's connection drops, but in one SSUBSCRIBE per node, which Redis
    /// refuses when the channels span slots (CROSSSLOT), silently: so a dropped node is treated
    /// as a lost subscriber, and the adapter builds a new one, one channel per command.
    Cluster(ClusterConnection),
}

impl Subscriber {
    pub async fn connect(target: &RedisTarget, flavour: PubSub, timeout: Duration) -> redis::RedisResult<Subscriber> {
        let (pushed, pushes) = mpsc::unbounded_channel();
        let conn = if target.cluster {
            let client = target.cluster_client(timeout, Some(pushed))?;
            SubscriberConnection::Cluster(client.get_async_connection().await?)
        } else {
            let client = target.client()?;
            let info = client.get_connection_info().clone();
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            let client = redis::Client::open(info.set_redis_settings(settings))?;
            let config = redis::AsyncConnectionConfig::new()
                .set_push_sender(pushed)
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            SubscriberConnection::Single(client.get_multiplexed_async_connection_with_config(&config).await?)
        };
        Ok(Subscriber { conn, pushes, flavour })
    }

    /// Subscribes to `channel` with the flavour's command. Sharded channels are subscribed one
    /// per command: several in one SSUBSCRIBE must hash to one slot.
    pub async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match (&mut self.conn, self.flavour) {
            (SubscriberConnection::Single(conn), PubSub::Classic) => conn.subscribe(channel).await,
            (SubscriberConnection::Single(conn), PubSub::Sharded) => {
                redis::cmd("SSUBSCRIBE").arg(channel).exec_async(conn).await
            }
            (SubscriberConnection::Cluster(conn), PubSub::Classic) => conn.subscribe(channel).await,
            (SubscriberConnection::Cluster(conn), PubSub::Sharded) => conn.ssubscribe(channel).await,
        }
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match (&mut self.conn, self.flavour) {
            (SubscriberConnection::Single(conn), PubSub::Classic) => conn.unsubscribe(channel).await,
            (SubscriberConnection::Single(conn), PubSub::Sharded) => {
                redis::cmd("SUNSUBSCRIBE").arg(channel).exec_async(conn).await
            }
            (SubscriberConnection::Cluster(conn), PubSub::Classic) => conn.unsubscribe(channel).await,
            (SubscriberConnection::Cluster(conn), PubSub::Sharded) => conn.sunsubscribe(channel).await,
        }
    }

    /// A classic pattern subscription (keyspace notifications, the classic broadcast channels).
    pub async fn psubscribe(&mut self, pattern: &str) -> redis::RedisResult<()> {
        match &mut self.conn {
            SubscriberConnection::Single(conn) => conn.psubscribe(pattern).await,
            SubscriberConnection::Cluster(conn) => conn.psubscribe(pattern).await,
        }
    }

    /// Proves the link is alive (on a cluster, every master answers).
    pub async fn ping(&mut self) -> redis::RedisResult<()> {
        match &mut self.conn {
            SubscriberConnection::Single(conn) => redis::cmd("PING").exec_async(conn).await,
            SubscriberConnection::Cluster(conn) => redis::cmd("PING").exec_async(conn).await,
        }
    }

    /// The next message, or [`Incoming::Closed`] once the connection is gone.
    pub async fn next(&mut self) -> Incoming {
        loop {
            let Some(push) = self.pushes.recv().await else {
                return Incoming::Closed;
            };
            let mut data = push.data.into_iter();
            let (channel, payload) = match push.kind {
                PushKind::Message | PushKind::SMessage => (data.next(), data.next()),
                // [pattern, channel, payload]
                PushKind::PMessage => (data.nth(1), data.next()),
                PushKind::Disconnection => return Incoming::Closed,
                PushKind::SUnsubscribe => {
                    if let Some(channel) = bytes_of(data.next()) {
                        let channel = String::from_utf8_lossy(&channel).into_owned();
                        return Incoming::ShardUnsubscribed { channel };
                    }
                    continue;
                }
                // Subscription confirmations and the rest.
                _ => continue,
            };
            if let (Some(channel), Some(payload)) = (bytes_of(channel), bytes_of(payload)) {
                // Channel names are the adapter's own, or keys: text in practice.
                let channel = String::from_utf8_lossy(&channel).into_owned();
                return Incoming::Message { channel, payload };
            }
        }
    }
}

fn bytes_of(value: Option<Value>) -> Option<Vec<u8>> {
    match value? {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}
