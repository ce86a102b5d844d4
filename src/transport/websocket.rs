//! The WebSocket side of an Engine.IO session: one task, one `select!` over the socket, the
//! outbox and a single timer (next ping, pong deadline or connect deadline, whichever is first).

use super::{CloseReason, Frame, Outbox};
use crate::protocol::engineio::{self, EnginePacket, OpenPacket};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Heartbeat and size limits of every connection.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest message accepted from a client, in bytes (`maxPayload`).
    pub max_payload: usize,
    /// Most bytes queued for one client before it is closed as a slow consumer.
    pub max_queue_bytes: usize,
    /// An engine connection that connects no namespace in this time is closed.
    pub connect_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            max_queue_bytes: 1 << 20,
            connect_timeout: Duration::from_millis(45_000),
        }
    }
}

/// A `message` packet from the client.
#[derive(Debug)]
pub enum Inbound {
    /// A text `4…` frame; [`Inbound::text`] is the part after the `4`.
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Inbound {
    pub fn text(&self) -> Option<&str> {
        match self {
            Inbound::Text(t) => t.as_str().get(1..),
            Inbound::Binary(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Heartbeat {
    PingAt(Instant),
    PongBy(Instant),
}

/// One open Engine.IO session.
pub struct EngineConnection {
    ws: WebSocket,
    outbox: Arc<Outbox>,
    config: Arc<TransportConfig>,
    heartbeat: Heartbeat,
    connect_deadline: Option<Instant>,
}

impl EngineConnection {
    /// Sends the open packet for session `sid`.
    pub async fn open(mut ws: WebSocket, sid: &str, config: Arc<TransportConfig>) -> Result<Self, CloseReason> {
        let open = OpenPacket {
            sid,
            ping_interval_ms: config.ping_interval.as_millis() as u64,
            ping_timeout_ms: config.ping_timeout.as_millis() as u64,
            max_payload: config.max_payload,
        };
        ws.send(Message::Text(open.encode().into()))
            .await
            .map_err(|_| CloseReason::TransportError)?;
        let now = Instant::now();
        Ok(EngineConnection {
            ws,
            outbox: Arc::new(Outbox::new(config.max_queue_bytes)),
            heartbeat: Heartbeat::PingAt(now + config.ping_interval),
            connect_deadline: Some(now + config.connect_timeout),
            config,
        })
    }

    /// The queue through which anything reaches this client.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// A namespace is connected: the connect timeout no longer applies.
    pub fn namespace_connected(&mut self) {
        self.connect_deadline = None;
    }

    /// Serves the connection until the client sends a message, and returns it. Pings, pongs and
    /// outbound frames are handled meanwhile. `Err` means the connection is over; call
    /// [`EngineConnection::close`] with the reason.
    pub async fn next(&mut self) -> Result<Inbound, CloseReason> {
        loop {
            self.flush_outbox().await?;
            let (deadline, on_deadline) = self.next_deadline();
            tokio::select! {
                biased;
                () = self.outbox.wait() => continue,
                msg = self.ws.recv() => {
                    let msg = match msg {
                        None => return Err(CloseReason::TransportClose),
                        Some(Err(err)) => return Err(read_error(err)),
                        Some(Ok(msg)) => msg,
                    };
                    match msg {
                        Message::Text(text) => match engineio::decode_text(&text) {
                            Ok(EnginePacket::Message(_)) => return Ok(Inbound::Text(text)),
                            Ok(EnginePacket::Pong(_)) => self.on_pong(),
                            Ok(EnginePacket::Close) => return Err(CloseReason::ClientClose),
                            // A v4 client never pings; engine.io treats it as a protocol error.
                            Ok(EnginePacket::Ping(_)) => return Err(CloseReason::ParseError),
                            Ok(EnginePacket::Open | EnginePacket::Upgrade | EnginePacket::Noop) => {}
                            Err(_) => return Err(CloseReason::ParseError),
                        },
                        Message::Binary(data) => return Ok(Inbound::Binary(data)),
                        Message::Close(_) => return Err(CloseReason::ClientClose),
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                () = tokio::time::sleep_until(deadline) => on_deadline(self)?,
            }
        }
    }

    fn on_pong(&mut self) {
        if let Heartbeat::PongBy(_) = self.heartbeat {
            self.heartbeat = Heartbeat::PingAt(Instant::now() + self.config.ping_interval);
        }
    }

    #[allow(clippy::type_complexity)]
    fn next_deadline(&self) -> (Instant, fn(&mut Self) -> Result<(), CloseReason>) {
        let heartbeat: (Instant, fn(&mut Self) -> Result<(), CloseReason>) = match self.heartbeat {
            Heartbeat::PingAt(at) => (at, |conn| {
                conn.outbox.push([Frame::Text(Utf8Bytes::from_static(engineio::PING))]);
                conn.heartbeat = Heartbeat::PongBy(Instant::now() + conn.config.ping_timeout);
                Ok(())
            }),
            Heartbeat::PongBy(by) => (by, |_| Err(CloseReason::PingTimeout)),
        };
        match self.connect_deadline {
            Some(at) if at < heartbeat.0 => (at, |_| Err(CloseReason::ConnectTimeout)),
            _ => heartbeat,
        }
    }

    /// Writes everything queued in one batch. A client that cannot take it within the ping
    /// timeout is not reading: it is closed rather than allowed to stall this task.
    async fn flush_outbox(&mut self) -> Result<(), CloseReason> {
        let (frames, closing) = self.outbox.drain();
        if !frames.is_empty() {
            let write = async {
                for frame in frames {
                    self.ws.feed(to_message(frame)).await?;
                }
                self.ws.flush().await
            };
            match tokio::time::timeout(self.config.ping_timeout, write).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(CloseReason::TransportError),
                Err(_) => return Err(CloseReason::SlowConsumer),
            }
        }
        match closing {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// Sends what is still queued (unless the client is the problem), then a close frame.
    pub async fn close(mut self, reason: CloseReason) {
        self.outbox.close(reason);
        let polite = !matches!(
            reason,
            CloseReason::TransportClose | CloseReason::TransportError | CloseReason::SlowConsumer
        );
        if polite {
            let (frames, _) = self.outbox.drain();
            let bye = async {
                for frame in frames {
                    self.ws.feed(to_message(frame)).await?;
                }
                let close = CloseFrame {
                    code: reason.ws_code(),
                    reason: Utf8Bytes::from_static(""),
                };
                self.ws.send(Message::Close(Some(close))).await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
        }
    }
}

fn to_message(frame: Frame) -> Message {
    match frame {
        Frame::Text(text) => Message::Text(text),
        Frame::Binary(data) => Message::Binary(data),
    }
}

fn read_error(err: axum::Error) -> CloseReason {
    match err.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => CloseReason::PayloadTooLarge,
        Some(tungstenite::Error::Protocol(_)) => CloseReason::ParseError,
        Some(tungstenite::Error::Utf8(_)) => CloseReason::ParseError,
        Some(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => CloseReason::TransportClose,
        _ => CloseReason::TransportError,
    }
}
