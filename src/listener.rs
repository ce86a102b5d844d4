//! Accepting TCP connections and serving HTTP/1 (with upgrades) on them, under limits that hold
//! before a single byte of a request has been read.
//!
//! Owns admission: every accepted connection takes a permit of the connection cap
//! (`--max-connections`) for as long as it lives (a WebSocket keeps the permit of the connection
//! it was upgraded from, through a [`ConnectionPermit`] in the request's extensions); connections
//! that have not yet sent a complete request are capped per client address, and their headers
//! must arrive within the handshake timeout, so slowloris clients cannot pin descriptors or
//! memory. Accept errors (a full descriptor table above all) are counted and logged, rate-
//! limited, and back off instead of spinning. Knows nothing of routes: it serves a [`Router`].

use crate::metrics::{AcceptError, ConnectionRefused, Label, Metrics, OncePerMinute};
use crate::tasks::{TaskKind, Tasks};
use crate::transport::ConnectionPermit;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tower::ServiceExt as _;

/// Admission limits of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once (the permit is kept by an upgraded WebSocket).
    pub max_connections: usize,
    /// Connections from one address that have not yet sent a complete request.
    pub max_pending_per_ip: usize,
    /// Time a client has to send a request's headers (each request of a keep-alive connection).
    pub header_timeout: Duration,
}

/// Counts per address of connections that have not sent a complete request yet.
#[derive(Default)]
struct PendingPerIp {
    counts: parking_lot::Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place among its address's pending connections: held while the connection
/// waits for a request (before its first, and idle between two on keep-alive), given back
/// while a request is served, and when it closes. An upgraded WebSocket never holds it again.
struct PendingGuard {
    registry: Arc<PendingPerIp>,
    ip: IpAddr,
    released: AtomicBool,
}

impl PendingPerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PendingGuard> {
        let mut counts = self.counts.lock();
        let count = counts.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PendingGuard {
            registry: self.clone(),
            ip,
            released: AtomicBool::new(false),
        })
    }
}

impl PendingGuard {
    /// Counts the connection as waiting again (a keep-alive connection between requests). Over
    /// the limit it still counts: new connections from its address are refused meanwhile.
    fn reenter(&self) {
        if !self.released.swap(false, Ordering::Relaxed) {
            return;
        }
        *self.registry.counts.lock().entry(self.ip).or_default() += 1;
    }

    fn release(&self) {
        if self.released.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut counts = self.registry.counts.lock();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// A running accept loop.
pub struct Listener {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Closed once the accept loop and every connection task have ended.
    done: mpsc::Receiver<()>,
    /// Closed once the accept loop has ended (its socket is closed: connections are refused).
    accepting: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Listener {
    /// Binds `addr` with a deep accept queue and serves `router` on it under `limits`.
    pub fn start(
        addr: SocketAddr,
        router: Router,
        limits: Limits,
        metrics: Arc<Metrics>,
        tasks: &Tasks,
    ) -> std::io::Result<Listener> {
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
        let (stop, stopped) = watch::channel(false);
        let tasks_for_loop = tasks.clone();
        let (done_tx, done) = mpsc::channel(1);
        let (accepting_tx, accepting) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(TaskKind::Listener, async move {
            let _accepting = accepting_tx;
            accept_loop(listener, router, limits, metrics, tasks_for_loop, stopped, done_tx).await
        });
        Ok(Listener {
            local_addr,
            stop,
            done,
            accepting: Some(accepting),
        })
    }

    /// Stops accepting and returns once the listening socket is closed: from then on new
    /// connections are refused by the kernel. Open connections are left alone.
    pub async fn stop_accepting(&mut self) {
        let _ = self.stop.send(true);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.await;
        }
    }

    /// Stops accepting, asks open HTTP connections to finish their request and close, and waits
    /// up to `wait` for them. Upgraded WebSockets are the gateway's to close.
    pub async fn shutdown(mut self, wait: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(wait, self.done.recv()).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    tasks: Tasks,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let pending = Arc::new(PendingPerIp::default());
    let accept_log = OncePerMinute::default();
    let refusal_log = OncePerMinute::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                let out_of_descriptors = matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                metrics.inc(if out_of_descriptors {
                    AcceptError::OutOfDescriptors
                } else {
                    AcceptError::Other
                });
                if accept_log.first_this_minute() {
                    tracing::warn!(error = %err, "accept failed; raise the open-file limit or lower --max-connections if it is out of descriptors (logged once a minute)");
                } else {
                    tracing::debug!(error = %err, "accept failed");
                }
                // The error repeats until a descriptor frees: wait instead of spinning.
                let pause = if out_of_descriptors { 50 } else { 5 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                continue;
            }
        };
        let refuse = |why: ConnectionRefused| {
            metrics.inc(why);
            let why = why.as_str();
            if refusal_log.first_this_minute() {
                tracing::warn!(peer = %peer, why, "connection refused at accept (logged once a minute; see wsgate_connections_refused_total)");
            } else {
                tracing::debug!(peer = %peer, why, "connection refused at accept");
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(ConnectionRefused::MaxConnections);
            continue;
        };
        let Some(pending) = pending.enter(peer.ip(), limits.max_pending_per_ip) else {
            refuse(ConnectionRefused::PendingPerIp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let slot = ConnectionPermit::new(permit, metrics.clone());
        tasks.spawn(
            TaskKind::Connection,
            serve_connection(
                tcp,
                peer,
                router.clone(),
                slot,
                pending,
                limits.header_timeout,
                stop.clone(),
                done.clone(),
            ),
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    slot: ConnectionPermit,
    pending: PendingGuard,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    let pending = Arc::new(pending);
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        // A complete request: while it is served the connection is no slowloris suspect; once
        // answered, a keep-alive connection waits again and counts again (unless upgraded).
        pending.release();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(slot.clone());
        let (router, pending) = (router.clone(), pending.clone());
        async move {
            let response = router.oneshot(request).await;
            if let Ok(response) = &response {
                if response.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS {
                    pending.reenter();
                }
            }
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Raises this process's soft open-file limit to its hard limit and returns the result (`None`
/// where it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}
