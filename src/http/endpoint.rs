//! The Socket.IO endpoint (both transports).
//!
//! It only checks and hands off, in engine.io's order: transport, session id, then for a new
//! session the method, the upgrade and the protocol version; Origin on every request;
//! optionally the session cookie; then the WebSocket upgrade, or the polling request handed to
//! its session. Everything after that is the transport's and the gateway's.

use super::handshake::handshake_info;
use super::options::HttpOptions;
use crate::auth::OriginPolicy;
use crate::gateway::{Gateway, Opening, PendingAuth, PendingFull};
use crate::metrics::{Auth, Handshake as HandshakeOutcome, Label, OncePerMinute, PollingRefused, Upgrade};
use crate::protocol::engineio::{check_handshake, HandshakeError, TransportKind};
use crate::protocol::handshake::parse_query;
use crate::protocol::new_id;
use crate::transport::{CloseReason, ConnectionPermit, PollError, SessionHandle, TransportConfig};
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use axum::Extension;

use std::net::SocketAddr;
use std::sync::Arc;

/// What every route of the HTTP layer shares.
pub(super) struct AppState {
    pub(super) gateway: Arc<Gateway>,
    pub(super) options: HttpOptions,
    /// New sessions this node may still open now (`--max-handshakes-per-second`).
    pub(super) handshakes: parking_lot::Mutex<(f64, std::time::Instant)>,
    /// The minute (since the epoch) of the last refusal logged at info.
    pub(super) refusal_log: OncePerMinute,
    /// Keys the session-cookie tags that bind an engine session to its handshake's cookie
    /// (random per process).
    pub(super) binding_key: std::hash::RandomState,
    /// Handshakes each address may still make now (`--max-handshakes-per-second-per-ip`).
    pub(super) handshakes_per_ip:
        parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, (f64, std::time::Instant)>>,
}

fn json_error(status: StatusCode, code: u8, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn handshake_error(err: HandshakeError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_error(status, err.code(), err.message())
}

/// A polling response: engine.io's content types, never cached.
fn polling_response(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// What the endpoint reads from every request.
struct Request {
    method: Method,
    peer: SocketAddr,
    /// The client's address: the peer's, or with `--trust-proxy` the one the proxy appended to
    /// `X-Forwarded-For`.
    client: std::net::IpAddr,
    uri: Uri,
    headers: HeaderMap,
    /// `None`: no Origin header.
    origin: Option<String>,
    /// The scheme the browser used: `http`, or with `--trust-proxy` what `X-Forwarded-Proto` says.
    scheme: &'static str,
    /// The connection's place under the connection cap; an upgraded WebSocket keeps it.
    slot: Option<ConnectionPermit>,
}

impl Request {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn origin_allowed(&self, policy: &OriginPolicy) -> bool {
        policy.allows(self.origin.as_deref(), self.header(header::HOST), self.scheme)
    }
}

impl AppState {
    /// What binds a session to this request's session cookie: a keyed hash of the cookie's raw
    /// value, or 0 when the request has none (or auth is off). Later requests of the session
    /// must carry the same cookie: the Engine.IO session id alone is a bearer token.
    fn binding(&self, req: &Request) -> u64 {
        use std::hash::BuildHasher as _;
        let Some(auth) = self.gateway.auth() else { return 0 };
        let joined = req
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ");
        match crate::auth::cookie::find_cookie(&joined, &auth.cookie_name) {
            Some(value) if !value.is_empty() => self.binding_key.hash_one(value).max(1),
            _ => 0,
        }
    }

    /// One new session under `--max-handshakes-per-second` (a token bucket with a one-second
    /// burst), if there is room.
    fn take_handshake(&self) -> bool {
        let Some(rate) = self.options.max_handshakes_per_second else {
            return true;
        };
        let mut bucket = self.handshakes.lock();
        let now = std::time::Instant::now();
        bucket.0 = (bucket.0 + now.duration_since(bucket.1).as_secs_f64() * rate).min(rate);
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes a handshake from `ip`'s budget (`--max-handshakes-per-second-per-ip`, bursts of
    /// twice as many); false when it is spent.
    fn take_handshake_from(&self, ip: std::net::IpAddr) -> bool {
        let Some(rate) = self.options.max_handshakes_per_second_per_ip else {
            return true;
        };
        let now = std::time::Instant::now();
        let mut buckets = self.handshakes_per_ip.lock();
        // Addresses not heard from in a while start full again: their entries go.
        // (Two seconds refill a whole burst, so an older entry is the same as none.)
        if buckets.len() >= 4096 {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < std::time::Duration::from_secs(2));
        }
        let (tokens, at) = buckets.entry(ip).or_insert((2.0 * rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(2.0 * rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts a refused request on an existing session and logs why: the first of each minute
    /// at info (so a misconfigured balancer shows up), the rest at debug.
    fn refuse(&self, reason: PollingRefused, req: &Request, detail: &str) {
        self.gateway.metrics.inc(reason);
        let reason = reason.as_str();
        if self.refusal_log.first_this_minute() {
            tracing::info!(reason, peer = %req.peer, method = %req.method, "request refused: {detail} (more refusals this minute are logged at debug)");
        } else {
            tracing::debug!(reason, peer = %req.peer, method = %req.method, "request refused: {detail}");
        }
    }

    fn poll_error(&self, err: PollError, req: &Request) -> Response {
        self.refuse(PollingRefused::from(&err), req, &err.to_string());
        handshake_error(match err {
            PollError::Closed => HandshakeError::SessionIdUnknown,
            PollError::Upgraded | PollError::Overlap(_) | PollError::Malformed(_) => HandshakeError::BadRequest,
        })
    }
}

// One extractor per part of the request axum hands over.
#[allow(clippy::too_many_arguments)]
pub(super) async fn socket_endpoint(
    State(state): State<Arc<AppState>>,
    method: Method,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    slot: Option<Extension<ConnectionPermit>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Body,
) -> Response {
    // An Origin that cannot be read is refused: treating it as absent would let it pass.
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => None,
        Some(Ok(origin)) => Some(origin.to_owned()),
        Some(Err(_)) => {
            state.gateway.metrics.inc(HandshakeOutcome::OriginRejected);
            tracing::info!(peer = %peer, "request refused: unreadable Origin header");
            return handshake_error(HandshakeError::Forbidden);
        }
    };
    let forwarded_https = || {
        headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    };
    let scheme = if state.options.trust_proxy && forwarded_https() {
        "https"
    } else {
        "http"
    };
    // The client's address: the peer, or behind a trusted proxy the address it appended to
    // X-Forwarded-For (the last one: earlier ones are the client's to write).
    let client = match state.options.trust_proxy {
        true => headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
            .next_back()
            .unwrap_or(peer.ip()),
        false => peer.ip(),
    };
    let req = Request {
        method,
        peer,
        client,
        uri,
        headers,
        origin,
        scheme,
        slot: slot.map(|Extension(slot)| slot),
    };
    let mut response = if req.method == Method::OPTIONS {
        preflight(&state, &req)
    } else {
        route(&state, &req, upgrade, body).await
    };
    // CORS for pages on an allowed origin, on every answer but the upgrade (engine.io's `cors`).
    if let Some(origin) = &req.origin {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS && req.origin_allowed(&state.options.origins) {
            if let Ok(value) = HeaderValue::from_str(origin) {
                let headers = response.headers_mut();
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                headers.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }
    response
}

/// A CORS preflight: allowed origins may `GET` and `POST` with the headers they ask for.
fn preflight(state: &AppState, req: &Request) -> Response {
    if req.origin.is_none() || !req.origin_allowed(&state.options.origins) {
        state.refuse(
            PollingRefused::OriginRejected,
            req,
            "CORS preflight from an origin that is not allowed",
        );
        return handshake_error(HandshakeError::Forbidden);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    if let Some(asked) = req.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

async fn route(
    state: &Arc<AppState>,
    req: &Request,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Body,
) -> Response {
    let query = parse_query(req.uri.query().unwrap_or(""));
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref());
    let transport = match TransportKind::parse(param("transport"), &state.options.transports) {
        Ok(transport) => transport,
        Err(err) => {
            state.gateway.metrics.inc(HandshakeOutcome::BadRequest);
            return handshake_error(err);
        }
    };
    match param("sid") {
        Some(sid) => existing_session(state, req, transport, sid, upgrade, body).await,
        None => {
            let checked = check_handshake(transport, param("EIO"), req.method == Method::GET, upgrade.is_ok());
            match checked {
                // Boxed: its state (the session lookup) is large, and a pending polling GET
                // should not carry that much room while it waits.
                Ok(()) => Box::pin(new_session(state, req, transport, upgrade)).await,
                Err(err) => {
                    state.gateway.metrics.inc(HandshakeOutcome::BadRequest);
                    handshake_error(err)
                }
            }
        }
    }
}

/// A request that opens a session: capacity, Origin, optionally the session, then the session.
async fn new_session(
    state: &Arc<AppState>,
    req: &Request,
    transport: TransportKind,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let gateway = &state.gateway;
    let peer = req.peer;
    if state
        .options
        .max_connections
        // Sessions not yet connected have a budget of their own (below): they never take
        // the places of connected ones.
        .is_some_and(|max| gateway.connection_count().saturating_sub(gateway.pending().total()) >= max)
    {
        gateway.metrics.inc(HandshakeOutcome::OverCapacity);
        tracing::warn!(peer = %peer, "handshake refused: --max-connections reached");
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            HandshakeError::Forbidden.code(),
            "Server at capacity",
        );
    }

    // Admission: a reconnect storm is spread out (clients back off on 503) instead of piling
    // handshakes and session lookups onto this node and Redis.
    let busy = if gateway.lookups_in_flight() >= state.options.max_pending_lookups {
        Some(HandshakeOutcome::LookupsPending)
    } else if !state.take_handshake_from(req.client) {
        Some(HandshakeOutcome::RateLimitedAddress)
    } else if !state.take_handshake() {
        Some(HandshakeOutcome::RateLimited)
    } else {
        None
    };
    if let Some(reason) = busy {
        gateway.metrics.inc(reason);
        let reason = reason.as_str();
        tracing::debug!(peer = %peer, reason, "handshake refused: server busy (--max-handshakes-per-second, --max-pending-lookups)");
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            HandshakeError::Forbidden.code(),
            "Server busy",
        );
    }

    if !req.origin_allowed(&state.options.origins) {
        gateway.metrics.inc(HandshakeOutcome::OriginRejected);
        tracing::info!(origin = req.origin.as_deref().unwrap_or(""), peer = %peer, "handshake refused: Origin not allowed (add it with --allowed-origin)");
        return handshake_error(HandshakeError::Forbidden);
    }

    let cookies: Vec<String> = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let pending_auth = match (gateway.auth(), state.options.reject_at_upgrade) {
        (Some(auth), true) => match auth.authenticate(cookies.iter().map(String::as_str)).await {
            Ok(identity) => PendingAuth::Decided(Some(Ok(identity))),
            Err(err) => {
                gateway.metrics.inc(Auth::from(&err));
                gateway.metrics.inc(HandshakeOutcome::AuthRejected);
                let status = match err {
                    crate::auth::AuthError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::UNAUTHORIZED,
                };
                return json_error(status, HandshakeError::Forbidden.code(), err.client_message());
            }
        },
        _ => PendingAuth::Cookies(cookies),
    };

    // Its place among the sessions not yet connected, node-wide and for its address: anonymous
    // and unproven sessions never take the capacity of connected ones.
    let pending = match gateway.pending().try_enter(req.client) {
        Ok(slot) => slot,
        Err(full) => {
            let (outcome, limit) = match full {
                PendingFull::Node => (HandshakeOutcome::PendingFull, "--max-pending-sessions"),
                PendingFull::Address => (HandshakeOutcome::PendingFullAddress, "--max-pending-sessions-per-ip"),
            };
            gateway.metrics.inc(outcome);
            tracing::debug!(client = %req.client, limit, "handshake refused: too many sessions not yet connected");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                HandshakeError::Forbidden.code(),
                "Server busy",
            );
        }
    };
    let opening = Opening {
        auth: pending_auth,
        pending: Some(pending),
    };
    let handshake = handshake_info(&req.headers, peer, &req.uri);
    let sid: Arc<str> = new_id().into();
    let sticky = state.options.sticky_cookie.as_ref().and_then(|name| {
        // Secure when the browser came over TLS (seen through --trust-proxy).
        let secure = if req.scheme == "https" { "; Secure" } else { "" };
        HeaderValue::from_str(&format!("{name}={sid}; Path=/; HttpOnly; SameSite=Lax{secure}")).ok()
    });
    let binding = state.binding(req);
    let engine = gateway.engine().clone();
    let gateway = gateway.clone();
    let mut response = match (transport, upgrade) {
        (TransportKind::WebSocket, Ok(upgrade)) => {
            gateway.metrics.inc(HandshakeOutcome::Upgraded);
            // The connection's place under the cap lives as long as the session.
            let held = req.slot.clone();
            // Boxed: axum's upgrade task keeps the callback's captures for the connection's
            // whole life, so 8 bytes stay behind instead of 224.
            let start = Box::new((engine, sid, binding, held, handshake, opening));
            let transport = gateway.transport().clone();
            configure(upgrade, &transport).on_upgrade(move |ws| {
                let (engine, sid, binding, held, handshake, opening) = *start;
                let session = engine.open_websocket(ws, sid, binding, held);
                gateway.serve(session, Arc::new(handshake), Box::new(opening))
            })
        }
        (TransportKind::WebSocket, Err(_)) => handshake_error(HandshakeError::BadRequest),
        (TransportKind::Polling, _) => {
            gateway.metrics.inc(HandshakeOutcome::Polling);
            let upgrades = state.options.transports.contains(&TransportKind::WebSocket);
            let (session, open) = engine.open_polling(sid, binding, upgrades);
            tokio::spawn(gateway.serve(session, Arc::new(handshake), Box::new(opening)));
            polling_response("text/plain; charset=UTF-8", open)
        }
    };
    if let Some(cookie) = sticky {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A request with a session id: a polling `GET` or `POST`, or the WebSocket of an upgrade.
async fn existing_session(
    state: &Arc<AppState>,
    req: &Request,
    transport: TransportKind,
    sid: &str,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Body,
) -> Response {
    let Some(session) = state.gateway.engine().lookup(sid) else {
        state.refuse(
            PollingRefused::UnknownSid,
            req,
            "unknown session id: the session ended, or the load balancer sent the request to a node that does not hold it (make it sticky: nginx ip_hash, or --sticky-cookie)",
        );
        return handshake_error(HandshakeError::SessionIdUnknown);
    };
    let upgrading = transport == TransportKind::WebSocket && upgrade.is_ok();
    if !upgrading && transport != session.transport() {
        state.refuse(
            PollingRefused::TransportMismatch,
            req,
            "the session is on the other transport",
        );
        return handshake_error(HandshakeError::BadRequest);
    }
    // A cross-site page must not be able to read or inject packets of someone's session.
    if !req.origin_allowed(&state.options.origins) {
        state.refuse(
            PollingRefused::OriginRejected,
            req,
            "Origin not allowed (add it with --allowed-origin)",
        );
        return handshake_error(HandshakeError::Forbidden);
    }
    if session.binding != 0 && state.binding(req) != session.binding {
        state.refuse(
            PollingRefused::CookieMismatch,
            req,
            "the request does not carry the session cookie its handshake had (a session id used from elsewhere?)",
        );
        return handshake_error(HandshakeError::BadRequest);
    }
    match (transport, upgrade) {
        (TransportKind::WebSocket, Ok(upgrade)) => upgrade_session(state, session, upgrade, req.slot.clone()),
        (TransportKind::WebSocket, Err(_)) => handshake_error(HandshakeError::BadRequest),
        (TransportKind::Polling, _) => poll(state, req, session, body).await,
    }
}

/// The WebSocket of a polling session's upgrade (or a second one, which is closed at once).
fn upgrade_session(
    state: &Arc<AppState>,
    session: SessionHandle,
    upgrade: WebSocketUpgrade,
    slot: Option<ConnectionPermit>,
) -> Response {
    let metrics = state.gateway.metrics.clone();
    let timeout = state.gateway.transport().upgrade_timeout;
    configure(upgrade, state.gateway.transport()).on_upgrade(move |ws| async move {
        let outcome = match session.polling {
            // The connection's place under the cap moves with the WebSocket into the session.
            Some(polling) => polling.upgrade(ws, timeout, slot).await,
            None => {
                drop(ws);
                Err(crate::transport::UpgradeError::NotPolling)
            }
        };
        metrics.inc(outcome.map_or_else(Upgrade::from, |()| Upgrade::Upgraded));
    })
}

async fn poll(state: &Arc<AppState>, req: &Request, session: SessionHandle, body: Body) -> Response {
    let Some(polling) = session.polling else {
        return handshake_error(HandshakeError::BadRequest);
    };
    match req.method {
        Method::GET => match polling.get().await {
            Ok(payload) => polling_response("text/plain; charset=UTF-8", payload),
            Err(err) => state.poll_error(err, req),
        },
        Method::POST => {
            // engine.io 6 takes binary only as base64 text in a v4 payload.
            if req.header(header::CONTENT_TYPE) == Some("application/octet-stream") {
                polling.fail(CloseReason::ParseError);
                state.refuse(
                    PollingRefused::BinaryBody,
                    req,
                    "binary POST body (EIO=4 payloads are text)",
                );
                return handshake_error(HandshakeError::BadRequest);
            }
            let max = state.gateway.transport().max_payload;
            let declared = req.header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
            // A body that trickles in is cut off like slow headers.
            let timeout = state.options.handshake_timeout;
            let body = match declared {
                Some(len) if len > max as u64 => None,
                _ => tokio::time::timeout(timeout, axum::body::to_bytes(body, max))
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            let Some(body) = body else {
                polling.fail(CloseReason::PayloadTooLarge);
                state.refuse(
                    PollingRefused::PayloadTooLarge,
                    req,
                    "POST body larger than --max-payload, or cut short; the session is closed",
                );
                return StatusCode::PAYLOAD_TOO_LARGE.into_response();
            };
            match polling.post(body).await {
                // text/html, not text/plain: some user agents offer to download text/plain.
                Ok(()) => polling_response("text/html", "ok".into()),
                Err(err) => state.poll_error(err, req),
            }
        }
        _ => {
            state.refuse(PollingRefused::BadMethod, req, "a polling request must be GET or POST");
            handshake_error(HandshakeError::BadRequest)
        }
    }
}

/// tungstenite's defaults keep 128 KiB per connection; Socket.IO frames are small.
///
/// The read buffer is allocated at this size for the connection's life: 512 bytes hold a pong,
/// an event or an ack in one read; a larger message grows it for its own frame (and takes one
/// read per 512 bytes). 1024 cost every idle connection another 512 bytes.
///
/// The write buffer is what coalesces the frames one wake-up of the session task sends into one
/// write: with 0 every frame was its own syscall and the outbox's batching bought nothing. 8 KiB
/// measured +30 % deliveries per server CPU-second and a p99 of 0.3 s instead of 2.2 s at 200k
/// deliveries/s offered to 2 nodes (loadtest fan-out capacity). The cost: the buffer keeps the
/// capacity of the largest batch a connection was sent, at most 8 KiB plus one frame, while it
/// lives; an idle connection's holds one small frame, as before.
fn configure(upgrade: WebSocketUpgrade, transport: &TransportConfig) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(512)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(transport.max_queue_bytes.max(64 * 1024))
        .max_message_size(transport.max_payload)
        .max_frame_size(transport.max_payload)
}
