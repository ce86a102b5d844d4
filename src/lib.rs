//! wsgate: a Socket.IO gateway for Express apps.
//!
//! Browsers keep using the official `socket.io-client` v4; each handshake is authenticated from
//! the same signed `express-session` cookie and the same `connect-redis` record the Express app
//! uses.
//!
//! Layers, each depending only on those before it:
//! - [`protocol`]: Engine.IO and Socket.IO codecs, pure.
//! - [`transport`]: one WebSocket per task, heartbeats, bounded outbound queue.
//! - [`auth`]: express-session cookie, connect-redis session record, Origin policy.
//! - [`gateway`]: namespaces, sockets, rooms, connect policy.
//! - [`cluster`]: the Redis adapter, wire-compatible with `@socket.io/redis-adapter` and
//!   `@socket.io/redis-emitter`; [`cluster::Emitter`] publishes from any process.
//! - [`http`] (routes), [`listener`] (accepting connections, admission), [`config`] and the
//!   binary sit on top.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod http;
pub mod inbound;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod redis_connection;
pub mod transport;

use gateway::{Gateway, GatewayConfig};
use http::HttpOptions;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where the cluster adapter talks to Redis.
pub struct ClusterOptions {
    /// Where the subscriber connects: one Redis, or a Redis Cluster's seed nodes.
    pub redis: redis_connection::RedisTarget,
    /// Shared publishing connection.
    pub publisher: redis_connection::RedisConnection,
    /// Key prefix of the adapter channels (`key` of the Node adapter, default `socket.io`).
    pub prefix: String,
    /// Longest a peer's broadcast-with-ack may keep this node waiting for client acks.
    pub max_ack_timeout: std::time::Duration,
    /// Follow the session keys through Redis keyspace notifications, so a logout or an expiry
    /// closes the session's sockets at once (`None`: only the periodic revalidation).
    pub keyspace: Option<KeyspaceOptions>,
    /// Classic (`createAdapter`) or sharded (`createShardedAdapter`) adapter protocol.
    pub protocol: cluster::AdapterProtocol,
}

/// Revocation through keyspace notifications on the session keys.
pub struct KeyspaceOptions {
    /// The session keys' prefix (`--session-prefix`, e.g. `sess:`).
    pub session_prefix: String,
    /// Merge the needed `notify-keyspace-events` flags into Redis's setting at start.
    pub configure: bool,
}

/// A running gateway: an HTTP listener serving the Socket.IO endpoint (and optionally a second
/// one for `/healthz` and `/metrics`).
pub struct Server {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    gateway: Arc<Gateway>,
    cluster: Option<Arc<cluster::Cluster>>,
    listeners: Vec<listener::Listener>,
}

/// Descriptors kept free beyond the connection cap when it is derived from the open-file limit:
/// Redis connections, the admin listener, log files.
const DESCRIPTOR_RESERVE: u64 = 128;

impl Server {
    /// Binds `addr` (port 0 picks a free port) and starts serving; with `cluster`, the node also
    /// joins the cluster through Redis.
    pub async fn start(
        addr: SocketAddr,
        config: GatewayConfig,
        mut http: HttpOptions,
        cluster: Option<ClusterOptions>,
    ) -> std::io::Result<Server> {
        // Without an explicit cap, stay below the open-file limit with room to spare, so a flood
        // of connections cannot take the descriptors Redis and the admin listener need.
        let open_files = listener::raise_open_file_limit();
        let max_connections = http
            .max_connections
            .unwrap_or_else(|| open_files.map_or(16_000, |n| n.saturating_sub(DESCRIPTOR_RESERVE).max(16)) as usize);
        http.max_connections = Some(max_connections);
        let limits = listener::Limits {
            max_connections,
            max_pending_per_ip: http.max_pending_per_ip,
            header_timeout: http.handshake_timeout,
        };
        let admin_listen = http.admin_listen;
        let gateway = Gateway::new(config);
        if cluster.is_some() {
            gateway.require_redis();
        }
        let cluster = cluster.map(|c| cluster::Cluster::start(gateway.clone(), c));
        let metrics = gateway.metrics.clone();
        let (app, admin) = http::routers(gateway.clone(), http);
        let main = listener::Listener::start(addr, app, limits.clone(), metrics.clone())?;
        let local_addr = main.local_addr;
        let mut listeners = vec![main];
        let mut admin_addr = None;
        if let Some(admin_listen) = admin_listen {
            let admin_limits = listener::Limits {
                max_connections: 64,
                ..limits
            };
            let admin = listener::Listener::start(admin_listen, admin, admin_limits, metrics)?;
            admin_addr = Some(admin.local_addr);
            listeners.push(admin);
        }
        Ok(Server {
            local_addr,
            admin_addr,
            gateway,
            cluster,
            listeners,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of `/healthz` and `/metrics` when they have a listener of their own.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The cluster adapter, when the server was started with one.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// Closes every client's connection at once, stops accepting, and waits for the listeners.
    pub async fn shutdown(self) {
        self.drain(std::time::Duration::ZERO).await;
    }

    /// Leaves the cluster gently, for deploys: `/readyz` turns 503 so the balancer stops sending,
    /// new connections are refused, open ones are closed in batches spread over `over` (clients
    /// reconnect to other nodes, not all at once), queued frames are flushed, and this returns
    /// once every session has ended (or `over` plus a few seconds have passed).
    pub async fn drain(self, over: std::time::Duration) {
        self.gateway.set_ready(false);
        // The public listener stops at once; the admin one (if any) keeps answering /readyz
        // with 503 until the end.
        let mut public = self.listeners;
        let admin = public.split_off(1);
        let closing = async {
            for listener in public {
                listener.shutdown(std::time::Duration::from_secs(1)).await;
            }
        };
        let ((), ()) = tokio::join!(self.gateway.drain(over, 20), closing);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while !self.gateway.engine().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if let Some(cluster) = &self.cluster {
            cluster.stop();
        }
        for listener in admin {
            listener.shutdown(std::time::Duration::from_secs(1)).await;
        }
    }
}
