//! Publishing into rooms from any process, with the bytes `@socket.io/redis-emitter` sends
//! (classic adapter), or the bytes a `createShardedAdapter` node publishes for the same call
//! (sharded adapter, which Node's emitter cannot reach), or the stream entries
//! `@socket.io/redis-streams-emitter` appends (Redis Streams adapter): every gateway and Node
//! socket.io node of the cluster applies them.

use super::core::Command;
use super::driver::{Publication, Published, Publisher};
use super::wire::{AdapterProtocol, ClusterError, Wire};
use crate::protocol::adapter::{Broadcast, Selector, EMITTER_UID};
use crate::redis_connection::RedisConnection;

/// A publisher for one Redis and key prefix (`socket.io` by default).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = redis::Client::open("redis://127.0.0.1:6379")?;
/// let emitter = wsgate::cluster::Emitter::new(redis.get_connection_manager().await?, "socket.io");
/// emitter.of("/").to("user:42").emit("notice", vec!["hi".into()]).await?;
/// emitter.of("/").to("session:abc").disconnect_sockets(true).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Emitter {
    publisher: Publisher,
    prefix: String,
    protocol: AdapterProtocol,
}

impl Emitter {
    /// An emitter for the classic adapter, as `@socket.io/redis-emitter`.
    pub fn new(redis: impl Into<RedisConnection>, prefix: &str) -> Self {
        Self::with_protocol(redis, prefix, AdapterProtocol::Classic)
    }

    /// An emitter for nodes of either adapter protocol (every node's `--adapter` and
    /// `--subscription-mode`).
    pub fn with_protocol(redis: impl Into<RedisConnection>, prefix: &str, protocol: AdapterProtocol) -> Self {
        Emitter {
            publisher: Publisher::new(redis.into(), protocol.pubsub()),
            prefix: prefix.into(),
            protocol,
        }
    }

    /// Targets namespace `nsp` (with its leading `/`).
    pub fn of(&self, nsp: &str) -> EmitterTarget {
        EmitterTarget {
            publisher: self.publisher.clone(),
            nsp: nsp.into(),
            wire: Wire::new(&self.protocol, &self.prefix, nsp),
            selector: Selector::default(),
        }
    }
}

/// Sockets of one namespace, narrowed by rooms.
#[derive(Clone)]
pub struct EmitterTarget {
    publisher: Publisher,
    nsp: String,
    wire: Wire,
    selector: Selector,
}

impl EmitterTarget {
    /// Only sockets in `room` (repeat for any of several rooms).
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.selector.rooms.push(room.into());
        self
    }

    /// Not the sockets in `room`.
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.selector.except.push(room.into());
        self
    }

    async fn publish(&self, publication: Publication) -> Result<Published, ClusterError> {
        Ok(self.publisher.send(&publication).await?)
    }

    async fn request(&self, command: Command<'_>) -> Result<Published, ClusterError> {
        self.publish(self.wire.command(EMITTER_UID, &self.nsp, &self.selector, &command))
            .await
    }

    /// Emits `event` with `args`. Returns how many subscribers (nodes) received the message, or
    /// the stream entry it was appended as.
    pub async fn emit(&self, event: &str, args: Vec<rmpv::Value>) -> Result<Published, ClusterError> {
        let mut data = Vec::with_capacity(args.len() + 1);
        data.push(rmpv::Value::from(event));
        data.extend(args);
        let message = Broadcast {
            uid: Some(EMITTER_UID.into()),
            nsp: self.nsp.clone(),
            data,
            selector: self.selector.clone(),
            flags: vec![],
        };
        self.publish(self.wire.broadcast(&message, EMITTER_UID)).await
    }

    /// Makes the selected sockets join `rooms`.
    pub async fn sockets_join(&self, rooms: &[String]) -> Result<Published, ClusterError> {
        self.request(Command::Join(rooms)).await
    }

    /// Makes the selected sockets leave `rooms`.
    pub async fn sockets_leave(&self, rooms: &[String]) -> Result<Published, ClusterError> {
        self.request(Command::Leave(rooms)).await
    }

    /// Disconnects the selected sockets; `close` also closes their connections.
    pub async fn disconnect_sockets(&self, close: bool) -> Result<Published, ClusterError> {
        self.request(Command::Disconnect { close }).await
    }

    /// Emits to the servers (not the clients) of the cluster.
    pub async fn server_side_emit(&self, event: &str, args: Vec<rmpv::Value>) -> Result<Published, ClusterError> {
        let mut data = vec![rmpv::Value::from(event)];
        data.extend(args);
        self.request(Command::ServerSideEmit(&data)).await
    }
}
