//! Clients as a browser's would speak: a minimal Engine.IO/Socket.IO client over a real
//! WebSocket, and plain HTTP/1.1 requests over fresh TCP connections.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// A raw Engine.IO client over a WebSocket.
pub struct Client {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// Answer server pings automatically.
    pub auto_pong: bool,
}

pub enum Received {
    Text(String),
    Binary(Vec<u8>),
    /// The server closed the connection (close frame code, if any).
    Closed(Option<u16>),
}

impl Client {
    /// Opens `/socket.io/?EIO=4&transport=websocket` with extra headers; returns the client and
    /// the open packet, or the HTTP status and body of a refused handshake.
    pub async fn open(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<(Client, String), (u16, String)> {
        Self::open_path(addr, "/socket.io/?EIO=4&transport=websocket", headers).await
    }

    /// [`Client::open`] from client address `source`.
    pub async fn open_from(
        source: std::net::IpAddr,
        addr: SocketAddr,
        headers: &[(&str, &str)],
    ) -> Result<(Client, String), (u16, String)> {
        let tcp = tcp_from(source, addr).await;
        let mut request = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")
            .into_client_request()
            .unwrap();
        for (k, v) in headers {
            request.headers_mut().append(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await {
            Ok((ws, _)) => {
                let mut client = Client { ws, auto_pong: true };
                let open = client.text().await;
                Ok((client, open))
            }
            Err(tungstenite::Error::Http(resp)) => Err((
                resp.status().as_u16(),
                resp.body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            )),
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    pub async fn open_path(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Client, String), (u16, String)> {
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        for (k, v) in headers {
            request.headers_mut().append(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => {
                let mut client = Client { ws, auto_pong: true };
                let open = client.text().await;
                assert!(open.starts_with("0{"), "open packet first, got {open:?}");
                Ok((client, open))
            }
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((resp.status().as_u16(), body))
            }
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// Opens a connection with a session cookie and connects namespace `/`; returns the socket id.
    pub async fn connect_as(addr: SocketAddr, cookie: &str) -> (Client, String) {
        let (mut client, _) = Client::open(addr, &[("cookie", cookie)]).await.expect("upgrade");
        client.send("40").await;
        let reply = client.text().await;
        let sid = reply
            .strip_prefix("40")
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .and_then(|v| v["sid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("expected 40{{\"sid\":…}}, got {reply:?}"));
        (client, sid)
    }

    /// Opens a connection with a session cookie and sends CONNECT for `/`; returns the client
    /// and the server's answer (`40{…}` or `44{…}`).
    pub async fn connect_answer(addr: SocketAddr, cookie: &str) -> (Client, String) {
        let (mut client, _) = Client::open(addr, &[("cookie", cookie)]).await.expect("upgrade");
        client.send("40").await;
        let answer = client.text().await;
        (client, answer)
    }

    /// The next ack packet (`43<id>[…]`), as its id and first argument, skipping anything else.
    pub async fn next_ack(&mut self) -> (u64, serde_json::Value) {
        loop {
            let text = self.text().await;
            let Some(rest) = text.strip_prefix("43") else { continue };
            let digits = rest.find('[').unwrap_or(rest.len());
            if let Ok(n) = rest[..digits].parse::<u64>() {
                return (
                    n,
                    serde_json::from_str::<serde_json::Value>(&rest[digits..]).unwrap()[0].clone(),
                );
            }
        }
    }

    /// The first argument of the ack of packet `id`, skipping anything else meanwhile.
    pub async fn ack_of(&mut self, id: u64) -> serde_json::Value {
        loop {
            let (n, ack) = self.next_ack().await;
            if n == id {
                return ack;
            }
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws.send(Message::binary(data.to_vec())).await.unwrap();
    }

    /// The next frame within 5 s, answering pings when `auto_pong`.
    pub async fn recv(&mut self) -> Received {
        self.recv_within(Duration::from_secs(5)).await
    }

    /// The next frame within `within`, answering pings when `auto_pong`.
    pub async fn recv_within(&mut self, within: Duration) -> Received {
        let until = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(until, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no frame within {within:?}"));
            match next {
                None | Some(Err(_)) => return Received::Closed(None),
                Some(Ok(Message::Close(frame))) => return Received::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(Message::Text(t))) if t.as_str() == "2" && self.auto_pong => {
                    let _ = self.ws.send(Message::text("3")).await;
                }
                Some(Ok(Message::Text(t))) => return Received::Text(t.as_str().to_owned()),
                Some(Ok(Message::Binary(b))) => return Received::Binary(b.to_vec()),
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn text(&mut self) -> String {
        self.text_within(Duration::from_secs(5)).await
    }

    /// The next text frame within `within`.
    pub async fn text_within(&mut self, within: Duration) -> String {
        match self.recv_within(within).await {
            Received::Text(t) => t,
            Received::Binary(b) => panic!("expected text, got binary {b:?}"),
            Received::Closed(code) => panic!("expected text, connection closed ({code:?})"),
        }
    }

    /// Stays connected for `duration`, answering pings; fails on any other frame.
    pub async fn idle(&mut self, duration: Duration) {
        let until = tokio::time::Instant::now() + duration;
        loop {
            let next = tokio::time::timeout_at(until, self.ws.next()).await;
            match next {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                    let _ = self.ws.send(Message::text("3")).await;
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("unexpected {other:?} while idle"),
            }
        }
    }

    /// Waits for the server to close the connection, failing on any other frame but pings.
    pub async fn closed(&mut self) -> Option<u16> {
        match self.recv().await {
            Received::Closed(code) => code,
            Received::Text(t) => panic!("expected close, got {t:?}"),
            Received::Binary(b) => panic!("expected close, got binary {b:?}"),
        }
    }
}

/// A plain HTTP/1.1 request; returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let response = http_request(addr, method, path, headers, b"").await;
    (response.status, response.text())
}

/// An HTTP response as a client sees it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with a body over a fresh TCP connection.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    http_request_from("127.0.0.1".parse().unwrap(), addr, method, path, headers, body).await
}

/// A TCP connection to `addr` from `source` (any 127.0.0.0/8 address: a client elsewhere).
pub async fn tcp_from(source: std::net::IpAddr, addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// [`http_request`] from client address `source`.
pub async fn http_request_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = tcp_from(source, addr).await;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")) {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut raw_req = req.into_bytes();
    raw_req.extend_from_slice(body);
    stream.write_all(&raw_req).await.unwrap();
    // Read the head, then exactly Content-Length bytes: the server may keep the connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
        if let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    while raw.len() < head_end + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the body");
        raw.extend_from_slice(&buf[..n]);
    }
    HttpResponse {
        status,
        headers,
        body: raw[head_end..head_end + length].to_vec(),
    }
}
