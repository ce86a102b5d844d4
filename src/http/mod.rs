//! HTTP routes: the Socket.IO endpoint ([`endpoint`]), `/healthz`, `/readyz`, `/metrics` and
//! the served client script. Handlers are thin: parse, authorize, hand off to the transport
//! and the gateway.

mod endpoint;
mod handshake;
mod options;

pub use options::HttpOptions;

use crate::gateway::Gateway;
use crate::metrics::OncePerMinute;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use endpoint::{socket_endpoint, AppState};
use std::sync::Arc;

/// The routes of the main listener, and those of the admin listener (`/healthz`, `/metrics`).
/// Without `admin_listen`, the main listener serves `/metrics` too.
pub fn routers(gateway: Arc<Gateway>, options: HttpOptions) -> (Router, Router) {
    let path = options.path.clone();
    let separate_admin = options.admin_listen.is_some();
    let mut options = options;
    let app = options.app.take();
    let burst = options.max_handshakes_per_second.unwrap_or(0.0);
    let state = Arc::new(AppState {
        gateway,
        options,
        handshakes: parking_lot::Mutex::new((burst, std::time::Instant::now())),
        refusal_log: OncePerMinute::default(),
        binding_key: std::hash::RandomState::new(),
        handshakes_per_ip: Default::default(),
    });
    let admin = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let mut main = Router::new()
        .route(&path, any(socket_endpoint))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if state.options.serve_client {
        let base = path.trim_end_matches('/');
        for (name, script) in CLIENT_SCRIPTS {
            let etag = script_etag(script);
            main = main.route(
                &format!("{base}/{name}"),
                get(move |headers: HeaderMap| client_script(script, etag.clone(), headers)),
            );
        }
    }
    if !separate_admin {
        main = main.route("/metrics", get(metrics));
    }
    // engine.io matches `/socket.io` as well as `/socket.io/`.
    let trimmed = path.trim_end_matches('/');
    if !trimmed.is_empty() && trimmed != path {
        main = main.route(trimmed, any(socket_endpoint));
    }
    let main = main.with_state(state);
    let main = match app {
        Some(app) => main.merge(app),
        None => main,
    };
    (main, admin)
}

/// client-js, built into the binary (client-js/dist is committed: see client-js/build.mjs).
const CLIENT_SCRIPTS: [(&str, &str); 3] = [
    ("socket.io.js", include_str!("../../client-js/dist/wsgate-client.js")),
    (
        "socket.io.min.js",
        include_str!("../../client-js/dist/wsgate-client.min.js"),
    ),
    (
        "socket.io.esm.min.js",
        include_str!("../../client-js/dist/wsgate-client.esm.js"),
    ),
];

/// The ETag of a built-in script: a prefix of its SHA-256, computed once at start-up.
fn script_etag(script: &str) -> HeaderValue {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(script.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"wsgate\""))
}

/// A client script with an ETag, revalidated on every load (as socket.io serves its client), so
/// pages pick up a new build as soon as the gateway is upgraded.
async fn client_script(script: &'static str, etag: HeaderValue, headers: HeaderMap) -> Response {
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| etag == tag.trim()));
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=0")),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, "application/javascript; charset=utf-8")],
        script,
    )
        .into_response()
}

/// 200 while this node should get new clients; 503 with the reason while it drains or cannot
/// reach Redis. `/healthz` only says the process is alive.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.gateway.readiness() {
        Ok(()) => "ready".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.gateway.metrics.render(),
    )
}
