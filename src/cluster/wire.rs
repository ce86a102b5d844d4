//! The one dispatch over the adapter's wire protocols: which protocol a cluster speaks, a
//! namespace's channels in it, and the bytes this node (or an emitter) publishes. Each arm calls
//! the protocol's own module; a new protocol adds its module and one arm per method here.

use super::core::{self, Command, Core, Local};
use super::driver::{PubSub, Publication, Subscriber};
use super::streams::{StreamsSettings, StreamsWire};
use super::{classic, sharded, streams};
use crate::protocol::adapter::{Broadcast, Selector, EMITTER_UID};
use crate::protocol::classic::Channels;
use crate::protocol::sharded::{Encoding, ShardedChannels, SubscriptionMode};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis did not accept the publish: {0}")]
    Publish(#[from] redis::RedisError),
    #[error("namespace {0} is not served by this node")]
    UnknownNamespace(String),
}

/// Which Node adapter this node is a peer of (every node of a cluster must speak the same).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AdapterProtocol {
    /// `createAdapter`: PUBLISH/PSUBSCRIBE, request and response channels, msgpack broadcasts.
    #[default]
    Classic,
    /// `createShardedAdapter` (Redis 7+): SPUBLISH/SSUBSCRIBE, `{type, data, uid, nsp}` messages.
    Sharded(SubscriptionMode),
    /// `@socket.io/redis-streams-adapter` 0.3: broadcasts and room operations as Redis Streams
    /// entries, requests and responses on PUBLISH/SUBSCRIBE in msgpack.
    Streams(StreamsSettings),
}

impl AdapterProtocol {
    /// The pub/sub commands its channels are used with.
    pub fn pubsub(&self) -> PubSub {
        match self {
            AdapterProtocol::Classic | AdapterProtocol::Streams(_) => PubSub::Classic,
            AdapterProtocol::Sharded(_) => PubSub::Sharded,
        }
    }

    /// A node's uid as the Node adapter of this protocol makes it.
    pub(super) fn new_uid(&self) -> String {
        match self {
            AdapterProtocol::Classic => core::short_uid(),
            AdapterProtocol::Sharded(_) | AdapterProtocol::Streams(_) => core::hex_uid(),
        }
    }
}

/// One namespace's channels in the protocol the cluster speaks: the one dispatch over the wire
/// protocols.
#[derive(Clone)]
pub(super) enum Wire {
    Classic(Channels),
    Sharded(ShardedChannels, SubscriptionMode),
    Streams(StreamsWire),
}

impl Wire {
    pub(super) fn new(protocol: &AdapterProtocol, prefix: &str, nsp: &str) -> Wire {
        match protocol {
            AdapterProtocol::Classic => Wire::Classic(Channels::new(prefix, nsp)),
            AdapterProtocol::Sharded(mode) => Wire::Sharded(ShardedChannels::new(prefix, nsp), *mode),
            AdapterProtocol::Streams(settings) => Wire::Streams(StreamsWire::new(settings, prefix, nsp)),
        }
    }

    pub(super) async fn subscribe(&self, subscriber: &mut Subscriber, local: &Local) -> redis::RedisResult<()> {
        match self {
            Wire::Classic(channels) => classic::subscribe(subscriber, channels, local).await,
            Wire::Sharded(channels, mode) => sharded::subscribe(subscriber, channels, *mode, local).await,
            Wire::Streams(wire) => streams::subscribe(subscriber, wire, local).await,
        }
    }

    /// Handles a message if it is on one of this namespace's channels; returns whether it was.
    pub(super) async fn on_message(&self, core: &Core, local: &Local, channel: &str, payload: &[u8]) -> bool {
        match self {
            Wire::Classic(channels) => classic::on_message(core, channels, local, channel, payload).await,
            Wire::Sharded(channels, _) => {
                sharded::on_message(core, channels, local, channel, payload, Encoding::JsonUnlessBinary).await
            }
            Wire::Streams(wire) => {
                sharded::on_message(core, &wire.channels, local, channel, payload, Encoding::Msgpack).await
            }
        }
    }

    /// Whether this node should still be subscribed to `channel` (Redis may end a shard
    /// subscription by itself when its slot moves).
    pub(super) fn wants(&self, local: &Local, channel: &str) -> bool {
        match self {
            Wire::Classic(_) | Wire::Streams(_) => false,
            Wire::Sharded(channels, mode) => sharded::wants(channels, *mode, local, channel),
        }
    }

    /// The channel a room appearing or disappearing here is (un)subscribed on, if rooms have
    /// channels of their own in this protocol.
    pub(super) fn room_channel(&self, room: &str) -> Option<String> {
        match self {
            Wire::Classic(_) | Wire::Streams(_) => None,
            Wire::Sharded(channels, _) => Some(channels.room(room)),
        }
    }

    /// What a broadcast from `uid` puts in Redis.
    pub(super) fn broadcast(&self, message: &Broadcast, uid: &str) -> Publication {
        let (channel, bytes) = match self {
            Wire::Classic(channels) => classic::broadcast(channels, message, uid == EMITTER_UID),
            Wire::Sharded(channels, mode) => sharded::broadcast(channels, *mode, message, uid),
            Wire::Streams(wire) => return wire.entry(crate::protocol::sharded::encode::broadcast(message, uid, None)),
        };
        Publication::Message { channel, bytes }
    }

    /// What a request to every node puts in Redis.
    pub(super) fn command(&self, uid: &str, nsp: &str, selector: &Selector, command: &Command<'_>) -> Publication {
        let (channel, bytes) = match self {
            Wire::Classic(channels) => classic::command(channels, uid, selector, command),
            Wire::Sharded(channels, _) => sharded::command(channels, uid, nsp, selector, command),
            // As the Node emitter: every request is a stream entry.
            Wire::Streams(wire) => return wire.entry(sharded::outgoing(uid, nsp, selector, command)),
        };
        Publication::Message { channel, bytes }
    }
}
