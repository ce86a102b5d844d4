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
//! - [`http`], [`config`] and the binary sit on top.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod transport;

use gateway::{Gateway, GatewayConfig};
use http::HttpOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where the cluster adapter talks to Redis.
pub struct ClusterOptions {
    pub redis: redis::Client,
    /// Shared publishing connection.
    pub publisher: redis::aio::ConnectionManager,
    /// Key prefix of the adapter channels (`key` of the Node adapter, default `socket.io`).
    pub prefix: String,
}

/// A running gateway: an HTTP listener serving the Socket.IO endpoint.
pub struct Server {
    local_addr: SocketAddr,
    gateway: Arc<Gateway>,
    cluster: Option<Arc<cluster::Cluster>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and starts serving; with `cluster`, the node also
    /// joins the cluster through Redis.
    pub async fn start(
        addr: SocketAddr,
        config: GatewayConfig,
        http: HttpOptions,
        cluster: Option<ClusterOptions>,
    ) -> std::io::Result<Server> {
        // A deep accept queue: reconnect storms otherwise overflow the default (1024) and clients
        // wait a full SYN retransmit (1 s). The kernel caps it at net.core.somaxconn.
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(4096)?;
        let local_addr = listener.local_addr()?;
        let gateway = Gateway::new(config);
        let cluster = cluster.map(|c| cluster::Cluster::start(gateway.clone(), c.redis, c.publisher, &c.prefix));
        let app = http::router(gateway.clone(), http).into_make_service_with_connect_info::<SocketAddr>();
        // No Nagle: two small frames in a row (a CONNECT reply, then an emit) would otherwise wait
        // for the client's delayed ACK, 40 ms. Node sets the same (`noDelay`).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "TCP_NODELAY not set");
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Server {
            local_addr,
            gateway,
            cluster,
            stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The cluster adapter, when the server was started with one.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// Disconnects every client, stops accepting, and waits for the listener to finish.
    pub async fn shutdown(self) {
        self.gateway.close_all();
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}
