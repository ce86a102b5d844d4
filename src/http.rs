//! HTTP routes: the Socket.IO endpoint, `/healthz` and `/metrics`.
//!
//! The endpoint only checks and hands off: handshake query (in engine.io's order), Origin,
//! optionally the session, then the upgrade. Everything after the upgrade is the gateway's.

use crate::auth::OriginPolicy;
use crate::gateway::{parse_query, Gateway, Handshake, PendingAuth};
use crate::protocol::engineio::{check_handshake, HandshakeError};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the endpoint needs besides the gateway.
pub struct HttpOptions {
    /// The Socket.IO path, e.g. `/socket.io/`.
    pub path: String,
    pub origins: OriginPolicy,
    /// Refuse anonymous handshakes with HTTP 401 instead of a CONNECT_ERROR after the upgrade.
    pub reject_at_upgrade: bool,
    /// Open connections beyond which handshakes get HTTP 503 (`None`: no limit).
    pub max_connections: Option<usize>,
}

struct AppState {
    gateway: Arc<Gateway>,
    options: HttpOptions,
}

pub fn router(gateway: Arc<Gateway>, options: HttpOptions) -> Router {
    let path = options.path.clone();
    let state = Arc::new(AppState { gateway, options });
    let mut router = Router::new()
        .route(&path, any(socket_endpoint))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics));
    // engine.io matches `/socket.io` as well as `/socket.io/`.
    let trimmed = path.trim_end_matches('/');
    if !trimmed.is_empty() && trimmed != path {
        router = router.route(trimmed, any(socket_endpoint));
    }
    router.with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.gateway.metrics.render(),
    )
}

fn json_error(status: StatusCode, code: u8, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn handshake_error(err: HandshakeError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_error(status, err.code(), err.message())
}

async fn socket_endpoint(
    State(state): State<Arc<AppState>>,
    method: Method,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let gateway = &state.gateway;
    let query = parse_query(uri.query().unwrap_or(""));
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let checked = check_handshake(
        param("transport"),
        param("sid"),
        param("EIO"),
        method == Method::GET,
        upgrade.is_ok(),
    );
    if let Err(err) = checked {
        gateway.metrics.inc("wsgate_handshakes_total", "bad_request");
        return handshake_error(err);
    }
    let Ok(upgrade) = upgrade else {
        return handshake_error(HandshakeError::BadRequest);
    };

    if state
        .options
        .max_connections
        .is_some_and(|max| gateway.connection_count() >= max)
    {
        gateway.metrics.inc("wsgate_handshakes_total", "over_capacity");
        tracing::warn!(peer = %peer, "handshake refused: --max-connections reached");
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            HandshakeError::Forbidden.code(),
            "Server at capacity",
        );
    }

    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = header(header::ORIGIN);
    if !state.options.origins.allows(origin, header(header::HOST)) {
        gateway.metrics.inc("wsgate_handshakes_total", "origin_rejected");
        tracing::info!(origin = origin.unwrap_or(""), peer = %peer, "handshake refused: Origin not allowed (add it with --allowed-origin)");
        return handshake_error(HandshakeError::Forbidden);
    }

    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let pending = match (gateway.auth(), state.options.reject_at_upgrade) {
        (Some(auth), true) => match auth.authenticate(cookies.iter().map(String::as_str)).await {
            Ok(identity) => PendingAuth::Decided(Some(Ok(identity))),
            Err(err) => {
                gateway.metrics.inc("wsgate_auth_total", err.reason());
                gateway.metrics.inc("wsgate_handshakes_total", "auth_rejected");
                let status = match err {
                    crate::auth::AuthError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::UNAUTHORIZED,
                };
                return json_error(status, HandshakeError::Forbidden.code(), err.client_message());
            }
        },
        _ => PendingAuth::Cookies(cookies),
    };
    gateway.metrics.inc("wsgate_handshakes_total", "upgraded");

    let handshake = handshake_info(&headers, peer, &uri);
    let transport = gateway.transport();
    let gateway = gateway.clone();
    upgrade
        // tungstenite's defaults keep 128 KiB per connection; Socket.IO frames are small.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(transport.max_queue_bytes.max(64 * 1024))
        .max_message_size(transport.max_payload)
        .max_frame_size(transport.max_payload)
        .on_upgrade(move |ws| gateway.serve(ws, handshake, pending))
}

const KEPT_HEADERS: [&str; 4] = ["host", "origin", "user-agent", "x-forwarded-for"];

fn handshake_info(headers: &HeaderMap, peer: SocketAddr, uri: &Uri) -> Handshake {
    let issued = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Handshake {
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|name| Some((*name, headers.get(*name)?.to_str().ok()?.into())))
            .collect(),
        issued,
        address: peer.ip(),
        url: uri.path_and_query().map(|p| p.as_str()).unwrap_or_default().into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_is_split_and_decoded() {
        let q = super::parse_query("EIO=4&transport=websocket&t=a%20b&flag");
        assert_eq!(q[0], ("EIO".into(), "4".into()));
        assert_eq!(q[2], ("t".into(), "a b".into()));
        assert_eq!(q[3], ("flag".into(), "".into()));
    }
}
