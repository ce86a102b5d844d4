//! A running node: the gateway, its listeners and (optionally) its cluster adapter, started
//! together and stopped in order.
//!
//! Owns start-up (the connection cap derived from the open-file limit, the admin listener) and
//! shutdown: stop accepting, drain the sessions, cancel and await every tracked task with a
//! deadline, and log what did not finish.

use crate::cluster::{Cluster, ClusterOptions};
use crate::gateway::{Gateway, GatewayConfig};
use crate::http::{self, HttpOptions};
use crate::listener::{self, Listener};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Descriptors kept free beyond the connection cap when it is derived from the open-file limit:
/// Redis connections, the admin listener, log files.
const DESCRIPTOR_RESERVE: u64 = 128;
/// Connections the admin listener holds at once.
const ADMIN_CONNECTIONS: usize = 64;
/// How long an admin connection may wait for its request's headers: health checks send theirs
/// at once, so idle connections (a full cap) are cleared within this.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long sessions get to end once they were asked to close (their queued frames flushed).
const SESSIONS_GRACE: Duration = Duration::from_secs(3);
/// How long the background tasks get to end once cancelled.
const TASKS_GRACE: Duration = Duration::from_secs(2);

/// A running gateway: an HTTP listener serving the Socket.IO endpoint (and optionally a second
/// one for `/healthz` and `/metrics`).
pub struct Server {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    gateway: Arc<Gateway>,
    cluster: Option<Arc<Cluster>>,
    listeners: Vec<Listener>,
}

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
        let tasks = gateway.tasks().clone();
        if cluster.is_some() {
            gateway.require_redis();
        }
        let cluster = cluster.map(|c| Cluster::start(gateway.clone(), c, &tasks));
        let metrics = gateway.metrics.clone();
        let (app, admin) = http::routers(gateway.clone(), http);
        let main = Listener::start(addr, app, limits.clone(), metrics.clone(), &tasks)?;
        let local_addr = main.local_addr;
        let mut listeners = vec![main];
        let mut admin_addr = None;
        if let Some(admin_listen) = admin_listen {
            let admin_limits = listener::Limits {
                max_connections: ADMIN_CONNECTIONS,
                header_timeout: ADMIN_HEADER_TIMEOUT,
                ..limits
            };
            let admin = Listener::start(admin_listen, admin, admin_limits, metrics, &tasks)?;
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
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Closes every client's connection at once, stops accepting, and waits for the tasks.
    pub async fn shutdown(self) {
        self.drain(Duration::ZERO).await;
    }

    /// Leaves the cluster gently, for deploys: `/readyz` turns 503 so the balancer stops sending,
    /// new connections are refused, open ones are closed in batches spread over `over` (clients
    /// reconnect to other nodes, not all at once), queued frames are flushed; then the
    /// background tasks (cluster adapter, inbound writer, store listeners, periodic checks) are
    /// cancelled, and every task is awaited with a deadline. What did not finish is logged.
    pub async fn drain(self, over: Duration) {
        let tasks = self.gateway.tasks().clone();
        tracing::info!(running = %tasks.counts(), "shutting down: tasks running");
        // The public listener stops at once (its socket closed before /readyz turns 503, so a
        // balancer told "draining" finds nothing accepting); the admin one (if any) keeps
        // answering /readyz with 503 until the end.
        let mut public = self.listeners;
        let admin = public.split_off(1);
        for listener in &mut public {
            listener.stop_accepting().await;
        }
        self.gateway.set_ready(false);
        let closing = async {
            for listener in public {
                listener.shutdown(Duration::from_secs(1)).await;
            }
        };
        let ((), ()) = tokio::join!(self.gateway.drain(over, 20), closing);
        let left = tasks.wait_for_sessions(SESSIONS_GRACE).await;
        if !left.is_empty() {
            tracing::warn!(unfinished = %left, "sessions still open after the drain; stopping anyway");
        }
        if let Some(cluster) = &self.cluster {
            cluster.stop();
        }
        for listener in admin {
            listener.shutdown(Duration::from_secs(1)).await;
        }
        let left = tasks.stop(TASKS_GRACE).await;
        if left.is_empty() {
            tracing::info!("every task finished");
        } else {
            tracing::warn!(unfinished = %left, "tasks still running at the end of the shutdown (they end with the process)");
        }
    }
}
