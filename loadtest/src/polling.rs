//! One simulated browser on HTTP long-polling, as socket.io-client with default options: the
//! handshake `GET`, `POST 40`, `GET` for the CONNECT answer, then a long-poll always pending
//! (pongs posted back), and on demand the upgrade to WebSocket with that `GET` still in flight.
//!
//! A minimal HTTP/1.1 client with keep-alive: one connection for `GET`s and one for `POST`s, as
//! a browser keeps them; responses carry a Content-Length (both engine.io and wsgate send one).

use crate::client::{tcp, ConnectError, Ws};
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// One keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    stream: BufReader<TcpStream>,
    host: String,
}

impl HttpConn {
    pub async fn open(target: SocketAddr, source: IpAddr) -> Result<Self, ConnectError> {
        Ok(HttpConn {
            stream: BufReader::with_capacity(1024, tcp(target, source).await?),
            host: target.to_string(),
        })
    }

    /// Sends a request and reads the whole response; returns status and body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        cookie: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), ConnectError> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nAccept: */*\r\n",
            self.host
        );
        if method == "POST" {
            head.push_str(&format!(
                "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await.map_err(ConnectError::Tcp)?;
        stream.write_all(body).await.map_err(ConnectError::Tcp)?;
        let mut line = String::new();
        let mut status = 0u16;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await.map_err(ConnectError::Tcp)? == 0 {
                return Err(ConnectError::Closed);
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if status == 0 {
                status = trimmed
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or(ConnectError::Protocol("status line"))?;
            } else if let Some((name, value)) = trimmed.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(|_| ConnectError::Protocol("length"))?;
                }
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.map_err(ConnectError::Tcp)?;
        Ok((status, body))
    }
}

/// A polling session whose namespace `/` is connected.
pub struct PollingClient {
    target: SocketAddr,
    source: IpAddr,
    query: String,
    cookie: String,
    gets: HttpConn,
    posts: HttpConn,
    sid: String,
}

fn packets(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == 0x1e)
}

impl PollingClient {
    /// Handshake, `POST 40`, `GET` until the CONNECT answer; returns the client and the time it
    /// took.
    pub async fn connect(
        target: SocketAddr,
        source: IpAddr,
        path: &str,
        cookie: &str,
        timeout: Duration,
    ) -> Result<(Self, Duration), ConnectError> {
        let started = Instant::now();
        let connecting = async {
            let mut gets = HttpConn::open(target, source).await?;
            let (status, open) = gets
                .request("GET", &format!("{path}?EIO=4&transport=polling"), cookie, b"")
                .await?;
            if status != 200 {
                return Err(ConnectError::Http(status));
            }
            let open: serde_json::Value = serde_json::from_slice(open.get(1..).unwrap_or_default())
                .map_err(|_| ConnectError::Protocol("open"))?;
            let sid = open["sid"].as_str().ok_or(ConnectError::Protocol("sid"))?.to_owned();
            let mut client = PollingClient {
                target,
                source,
                query: format!("{path}?EIO=4&transport=polling&sid={sid}"),
                cookie: cookie.to_owned(),
                gets,
                posts: HttpConn::open(target, source).await?,
                sid,
            };
            client.post(b"40").await?;
            loop {
                let body = client.poll().await?;
                for packet in packets(&body) {
                    if packet.starts_with(b"40") {
                        return Ok(client);
                    }
                    if let Some(err) = packet.strip_prefix(b"44") {
                        let message = serde_json::from_slice::<serde_json::Value>(err)
                            .ok()
                            .and_then(|v| v["message"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        return Err(ConnectError::Refused(message));
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(client)) => Ok((client, started.elapsed())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    async fn post(&mut self, body: &[u8]) -> Result<(), ConnectError> {
        match self.posts.request("POST", &self.query, &self.cookie, body).await? {
            (200, _) => Ok(()),
            (status, _) => Err(ConnectError::Http(status)),
        }
    }

    /// One long-poll; a ping in it is answered with a pong.
    async fn poll(&mut self) -> Result<Vec<u8>, ConnectError> {
        let (status, body) = self.gets.request("GET", &self.query, &self.cookie, b"").await?;
        if status != 200 {
            return Err(ConnectError::Http(status));
        }
        if packets(&body).any(|p| p == b"2") {
            self.post(b"3").await?;
        }
        if packets(&body).any(|p| p == b"1") {
            return Err(ConnectError::Closed);
        }
        Ok(body)
    }

    /// Keeps a long-poll pending until `stop` fires, then upgrades to WebSocket with that poll
    /// still in flight, as the official client does. Returns the WebSocket and the upgrade time:
    /// from opening the WebSocket to `3probe` received and the pending poll released (after
    /// which the client sends `5`).
    pub async fn hold_then_upgrade(
        mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Ws, Duration), ConnectError> {
        loop {
            let PollingClient {
                gets,
                posts,
                query,
                cookie,
                target,
                source,
                sid,
            } = &mut self;
            let pending = gets.request("GET", query, cookie, b"");
            tokio::pin!(pending);
            tokio::select! {
                answered = &mut pending => {
                    let (status, body) = answered?;
                    if status != 200 || packets(&body).any(|p| p == b"1") {
                        return Err(ConnectError::Closed);
                    }
                    if packets(&body).any(|p| p == b"2") {
                        match posts.request("POST", query, cookie, b"3").await? {
                            (200, _) => {}
                            (status, _) => return Err(ConnectError::Http(status)),
                        }
                    }
                }
                _ = stop.changed() => {
                    let started = Instant::now();
                    let mut ws = websocket(*target, *source, query, sid, cookie).await?;
                    ws.send(Message::text("2probe")).await.map_err(|_| ConnectError::Closed)?;
                    loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(t))) if t.as_str() == "3probe" => break,
                            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
                            _ => return Err(ConnectError::Protocol("no 3probe")),
                        }
                    }
                    let released = tokio::time::timeout(Duration::from_secs(5), &mut pending).await;
                    if !matches!(released, Ok(Ok((200, _)))) {
                        return Err(ConnectError::Protocol("pending poll not released"));
                    }
                    let took = started.elapsed();
                    ws.send(Message::text("5")).await.map_err(|_| ConnectError::Closed)?;
                    return Ok((ws, took));
                }
            }
        }
    }
}

async fn websocket(
    target: SocketAddr,
    source: IpAddr,
    polling_query: &str,
    sid: &str,
    cookie: &str,
) -> Result<Ws, ConnectError> {
    let path = polling_query.split('?').next().unwrap_or("/socket.io/");
    let query = format!("EIO=4&transport=websocket&sid={sid}");
    crate::client::websocket(target, source, path, &query, cookie).await
}
