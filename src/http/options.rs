//! What the HTTP layer is configured with.

use crate::auth::OriginPolicy;
use crate::protocol::engineio::TransportKind;
use axum::Router;
use std::net::SocketAddr;

/// What the endpoint needs besides the gateway.
pub struct HttpOptions {
    /// The Socket.IO path, e.g. `/socket.io/`.
    pub path: String,
    pub origins: OriginPolicy,
    /// Refuse anonymous handshakes with HTTP 401 instead of a CONNECT_ERROR after the upgrade.
    pub reject_at_upgrade: bool,
    /// Open connections (and sessions) allowed at once; connections beyond are refused at
    /// accept, handshakes beyond get HTTP 503. `None`: the open-file limit minus a reserve.
    pub max_connections: Option<usize>,
    /// Connections from one address that have not yet sent a complete request.
    pub max_pending_per_ip: usize,
    /// New sessions per second, at most (`None`: no limit); more get 503 and back off.
    pub max_handshakes_per_second: Option<f64>,
    /// New sessions per second from one client address, at most, in bursts of twice as many
    /// (`None`: no limit).
    pub max_handshakes_per_second_per_ip: Option<f64>,
    /// Session lookups under way, at most: past it new sessions get 503, so a reconnect storm
    /// cannot pile onto Redis.
    pub max_pending_lookups: usize,
    /// Time a client has to send a request's headers, and a POST its body.
    pub handshake_timeout: std::time::Duration,
    /// A second listener for `/healthz` and `/metrics`, outside the connection cap; `/metrics`
    /// is then served there only.
    pub admin_listen: Option<SocketAddr>,
    /// Serve client-js at `{path}socket.io.js` (and `.min.js`, `.esm.min.js`).
    pub serve_client: bool,
    /// Routes served beside the endpoint on the main listener (the demo's pages).
    pub app: Option<Router>,
    /// The transports served. Sessions opened over polling may upgrade when WebSocket is served.
    pub transports: Vec<TransportKind>,
    /// engine.io's `cookie` option: a cookie of this name is set to the session id on every
    /// handshake, for load balancers that keep a session on one node by cookie.
    pub sticky_cookie: Option<String>,
    /// Believe `X-Forwarded-Proto` (set by a proxy that terminates TLS) for the scheme of the
    /// same-origin check. Off: every request is plain http, as wsgate itself serves.
    pub trust_proxy: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            path: "/socket.io/".into(),
            origins: OriginPolicy::default(),
            reject_at_upgrade: false,
            max_connections: None,
            transports: vec![TransportKind::Polling, TransportKind::WebSocket],
            sticky_cookie: None,
            trust_proxy: false,
            max_pending_per_ip: 64,
            max_handshakes_per_second: None,
            max_handshakes_per_second_per_ip: None,
            max_pending_lookups: usize::MAX,
            handshake_timeout: std::time::Duration::from_secs(10),
            admin_listen: None,
            serve_client: true,
            app: None,
        }
    }
}
