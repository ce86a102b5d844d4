//! Publishing into rooms from any process, with the bytes `@socket.io/redis-emitter` sends:
//! every gateway and Node socket.io node of the cluster applies them.

use super::ClusterError;
use crate::protocol::adapter::{encode, Broadcast, Channels, Selector, EMITTER_UID};

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
    redis: redis::aio::ConnectionManager,
    prefix: String,
}

impl Emitter {
    pub fn new(redis: redis::aio::ConnectionManager, prefix: &str) -> Self {
        Emitter {
            redis,
            prefix: prefix.into(),
        }
    }

    /// Targets namespace `nsp` (with its leading `/`).
    pub fn of(&self, nsp: &str) -> EmitterTarget {
        EmitterTarget {
            emitter: self.clone(),
            nsp: nsp.into(),
            channels: Channels::new(&self.prefix, nsp),
            selector: Selector::default(),
        }
    }
}

/// Sockets of one namespace, narrowed by rooms.
#[derive(Clone)]
pub struct EmitterTarget {
    emitter: Emitter,
    nsp: String,
    channels: Channels,
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

    async fn publish(&self, channel: &str, bytes: Vec<u8>) -> Result<i64, ClusterError> {
        let mut redis = self.emitter.redis.clone();
        Ok(redis::cmd("PUBLISH")
            .arg(channel)
            .arg(bytes)
            .query_async(&mut redis)
            .await?)
    }

    /// Emits `event` with `args`. Returns how many subscribers (nodes) received the message.
    pub async fn emit(&self, event: &str, args: Vec<rmpv::Value>) -> Result<i64, ClusterError> {
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
        self.publish(&self.channels.for_rooms(&self.selector.rooms), message.encode(true))
            .await
    }

    /// Makes the selected sockets join `rooms`.
    pub async fn sockets_join(&self, rooms: &[String]) -> Result<i64, ClusterError> {
        self.publish(&self.channels.request, encode::sockets_join(&self.selector, rooms))
            .await
    }

    /// Makes the selected sockets leave `rooms`.
    pub async fn sockets_leave(&self, rooms: &[String]) -> Result<i64, ClusterError> {
        self.publish(&self.channels.request, encode::sockets_leave(&self.selector, rooms))
            .await
    }

    /// Disconnects the selected sockets; `close` also closes their connections.
    pub async fn disconnect_sockets(&self, close: bool) -> Result<i64, ClusterError> {
        self.publish(
            &self.channels.request,
            encode::disconnect_sockets(&self.selector, close),
        )
        .await
    }

    /// Emits to the servers (not the clients) of the cluster.
    pub async fn server_side_emit(&self, event: &str, args: Vec<rmpv::Value>) -> Result<i64, ClusterError> {
        let mut data = vec![rmpv::Value::from(event)];
        data.extend(args);
        self.publish(&self.channels.request, encode::server_side_emit(EMITTER_UID, &data))
            .await
    }
}
