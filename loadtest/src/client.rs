//! One simulated browser: a WebSocket to `/socket.io/` with a session cookie, the Engine.IO open
//! packet, a namespace CONNECT, then pongs to pings and timestamps of received events.

use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::http::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Why a handshake failed, as reported in results.
pub fn failure_reason(err: &ConnectError) -> String {
    match err {
        ConnectError::Tcp(e) => format!("tcp_{:?}", e.kind()).to_lowercase(),
        ConnectError::Http(status) => format!("http_{status}"),
        ConnectError::Refused(message) => format!("connect_error:{message}"),
        ConnectError::Timeout => "timeout".into(),
        ConnectError::Protocol(what) => format!("protocol:{what}"),
        ConnectError::Closed => "closed".into(),
    }
}

#[derive(Debug)]
pub enum ConnectError {
    Tcp(std::io::Error),
    Http(u16),
    Refused(String),
    Timeout,
    Protocol(&'static str),
    Closed,
}

/// The source address for connection `n`: 127.0.0.2 … 127.0.0.254 in turn, so one machine can
/// open far more than the ~28k ephemeral ports one address pair allows.
pub fn source_ip(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % 253) as u8))
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: the load generator holds tens of thousands of sockets per process too.
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// Connects and joins namespace `/`; returns the socket and the handshake latency (TCP connect
/// to the CONNECT answer).
pub async fn connect(
    target: SocketAddr,
    source: IpAddr,
    path: &str,
    cookie: &str,
    timeout: Duration,
) -> Result<(Ws, Duration), ConnectError> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, connect_inner(target, source, path, cookie)).await {
        Ok(Ok(ws)) => Ok((ws, started.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// A TCP connection to `target` from `source`, without Nagle.
pub async fn tcp(target: SocketAddr, source: IpAddr) -> Result<TcpStream, ConnectError> {
    let socket = TcpSocket::new_v4().map_err(ConnectError::Tcp)?;
    socket.bind(SocketAddr::new(source, 0)).map_err(ConnectError::Tcp)?;
    let tcp = socket.connect(target).await.map_err(ConnectError::Tcp)?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The WebSocket handshake to `{path}?{query}`, with the browser's cookie.
pub async fn websocket(
    target: SocketAddr,
    source: IpAddr,
    path: &str,
    query: &str,
    cookie: &str,
) -> Result<Ws, ConnectError> {
    let tcp = tcp(target, source).await?;
    let request = Request::builder()
        .uri(format!("ws://{target}{path}?{query}"))
        .header("Host", target.to_string())
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", generate_key())
        .header("Cookie", cookie)
        .body(())
        .map_err(|_| ConnectError::Protocol("request"))?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config()))
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(resp) => ConnectError::Http(resp.status().as_u16()),
            tungstenite::Error::Io(io) => ConnectError::Tcp(io),
            _ => ConnectError::Protocol("websocket handshake"),
        })?;
    Ok(ws)
}

async fn connect_inner(target: SocketAddr, source: IpAddr, path: &str, cookie: &str) -> Result<Ws, ConnectError> {
    let mut ws = websocket(target, source, path, "EIO=4&transport=websocket", cookie).await?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with("0{") {
        return Err(ConnectError::Protocol("no open packet"));
    }
    ws.send(Message::text("40")).await.map_err(|_| ConnectError::Closed)?;
    loop {
        let reply = next_text(&mut ws).await?;
        if reply.starts_with("40") {
            return Ok(ws);
        }
        if let Some(err) = reply.strip_prefix("44") {
            let message = serde_json::from_str::<serde_json::Value>(err)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(ConnectError::Refused(message));
        }
        if reply == "2" {
            ws.send(Message::text("3")).await.map_err(|_| ConnectError::Closed)?;
        }
    }
}

async fn next_text(ws: &mut Ws) -> Result<String, ConnectError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(ConnectError::Closed),
            Some(Ok(_)) => {}
        }
    }
}

/// What a held connection saw.
pub enum Event {
    /// An event whose first argument carries `"t"`: nanoseconds since the epoch when published.
    Timestamped {
        latency_us: u64,
    },
    Other,
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Holds a connected socket: answers pings, reports events, until the server closes it or
/// `stop` fires. Returns true if the server closed it.
pub async fn hold(mut ws: Ws, mut stop: tokio::sync::watch::Receiver<bool>, mut on_event: impl FnMut(Event)) -> bool {
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return false;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    if t == "2" {
                        if ws.send(Message::text("3")).await.is_err() {
                            return true;
                        }
                    } else if let Some(payload) = t.strip_prefix("42") {
                        on_event(parse_event(payload));
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
    }
}

fn parse_event(payload: &str) -> Event {
    // `["bench",{"t":<ns>,...}]`: find the number after "t": without a full parse.
    let Some(pos) = payload.find("\"t\":") else {
        return Event::Other;
    };
    let digits: String = payload[pos + 4..].chars().take_while(|c| c.is_ascii_digit()).collect();
    match digits.parse::<u64>() {
        Ok(sent) => Event::Timestamped {
            latency_us: now_ns().saturating_sub(sent) / 1000,
        },
        Err(_) => Event::Other,
    }
}

/// Sends `["chat", {…}]` with an ack request `per_second` times a second until `stop`, answering
/// pings; reports each ack: `Some(latency_us)` when stored (`{"ok":true,…}`), `None` when
/// refused. Returns true if the server closed the socket.
pub async fn chat(
    mut ws: Ws,
    mut stop: tokio::sync::watch::Receiver<bool>,
    per_second: f64,
    mut on_ack: impl FnMut(Option<u32>),
) -> bool {
    let period = Duration::from_secs_f64(1.0 / per_second.max(0.001));
    // A random phase, so a thousand clients do not all send in the same millisecond.
    let start = tokio::time::Instant::now() + period.mul_f64(rand::random::<f64>());
    let mut tick = tokio::time::interval_at(start, period);
    let mut sent: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
    let mut next = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return false;
            }
            _ = tick.tick() => {
                next += 1;
                sent.insert(next, Instant::now());
                let event = format!(r#"42{next}["chat",{{"room":"bench","text":"hello from the load generator"}}]"#);
                if ws.send(Message::text(event)).await.is_err() {
                    return true;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    if t == "2" {
                        if ws.send(Message::text("3")).await.is_err() {
                            return true;
                        }
                    } else if let Some(rest) = t.strip_prefix("43") {
                        let digits = rest.find('[').unwrap_or(rest.len());
                        if let Some(at) = rest[..digits].parse::<u64>().ok().and_then(|id| sent.remove(&id)) {
                            let stored = rest.contains(r#""ok":true"#);
                            on_ack(stored.then(|| at.elapsed().as_micros().min(u32::MAX as u128) as u32));
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
    }
}
