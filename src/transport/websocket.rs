//! The WebSocket carrier: one Engine.IO packet per frame, served by the session's task with one
//! `select!` over the socket, the outbox and the session's timer (next ping, pong deadline or
//! connect deadline, whichever is first). Everything queued when the task wakes goes out in one
//! write (tungstenite's 8 KiB write buffer; see `http::configure`): coalescing costs no
//! latency, since nothing waits for more frames to arrive.

use super::session::{Carrier, EngineSession};
use super::{CloseReason, Engine, Frame, Held, Inbound, Outbox};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt as _;
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    /// Registers a session on a freshly upgraded WebSocket under `sid`, with its open packet
    /// (no upgrades: the session already has the best transport) queued first. `held` lives as
    /// long as the session. Synchronous, so the task serving the session holds only the
    /// session's own state (an async open step nested before it made every task 1.3 KiB larger).
    pub fn open_websocket(self: &Arc<Self>, ws: WebSocket, sid: Arc<str>, held: Option<Held>) -> EngineSession {
        let open = self.open_packet(&sid, false);
        let mut session = EngineSession::new(self, sid, Carrier::WebSocket(ws));
        session.outbox.push(&[Frame::Text(open.into())]);
        session.held = held;
        session
    }
}

impl EngineSession {
    pub(super) async fn next_from_websocket(&mut self) -> Result<Inbound, CloseReason> {
        loop {
            self.flush_to_websocket().await?;
            let on_deadline = self.arm_timer();
            let EngineSession {
                carrier: Carrier::WebSocket(ws),
                outbox,
                timer,
                ..
            } = self
            else {
                return Err(CloseReason::TransportError);
            };
            // The client's frames first, then the timer, then the queue: under a sustained
            // broadcast flood the queue is always ready, and polling it first would leave pongs,
            // client events and close frames unread until the ping timeout. Outbound frames
            // cannot starve in turn: every call starts by writing what is queued.
            tokio::select! {
                biased;
                msg = ws.recv() => {
                    let msg = match msg {
                        None => return Err(CloseReason::TransportClose),
                        Some(Err(err)) => return Err(read_error(err)),
                        Some(Ok(msg)) => msg,
                    };
                    match msg {
                        Message::Text(text) => {
                            if let Some(message) = self.on_text(text)? {
                                return Ok(message);
                            }
                        }
                        Message::Binary(data) => return Ok(Inbound::Binary(data)),
                        Message::Close(_) => return Err(CloseReason::ClientClose),
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                () = timer.as_mut() => on_deadline(self)?,
                () = outbox.wait() => {}
            }
        }
    }

    /// Delivers what is queued now, on a WebSocket; a polling session's queue waits for its
    /// next `GET`.
    pub async fn flush(&mut self) -> Result<(), CloseReason> {
        match self.carrier {
            Carrier::WebSocket(_) => self.flush_to_websocket().await,
            Carrier::Polling(_) => Ok(()),
        }
    }

    /// Writes everything queued in one batch. A client that cannot take it within the
    /// slow-consumer timeout is not reading: it is closed rather than allowed to stall this task.
    /// The deadline is set on the session's timer only when the socket cannot take the batch at
    /// once (rare): a write that completes costs no timer registration.
    async fn flush_to_websocket(&mut self) -> Result<(), CloseReason> {
        let closing = self.outbox.drain_into(&mut self.spare);
        if !self.spare.is_empty() {
            let timeout = self.config().slow_consumer_timeout;
            let EngineSession {
                carrier: Carrier::WebSocket(ws),
                spare,
                timer,
                ..
            } = self
            else {
                return Err(CloseReason::TransportError);
            };
            let written = {
                let mut write = std::pin::pin!(write_all(ws, spare.drain(..)));
                match futures_util::poll!(write.as_mut()) {
                    std::task::Poll::Ready(written) => written,
                    std::task::Poll::Pending => {
                        timer.as_mut().reset(tokio::time::Instant::now() + timeout);
                        tokio::select! {
                            biased;
                            written = write => written,
                            () = timer.as_mut() => return Err(CloseReason::SlowConsumer),
                        }
                    }
                }
            };
            written.map_err(|_| CloseReason::TransportError)?;
            Outbox::recycle(spare);
        }
        match closing {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// Sends what is still queued (unless the client is the problem), then a close frame (a
    /// slow consumer gets only the close frame, if it still fits).
    pub(super) async fn close_websocket(&mut self, reason: CloseReason) {
        if matches!(reason, CloseReason::TransportClose | CloseReason::TransportError) {
            return;
        }
        let (frames, _) = self.outbox().drain();
        let frames = if reason == CloseReason::SlowConsumer {
            tracing::info!(engine_sid = %self.sid(), "slow consumer: its writes stayed blocked past --slow-consumer-timeout or its queue passed --max-queue-bytes; closing it (code 1008)");
            Default::default()
        } else {
            frames
        };
        let EngineSession {
            carrier: Carrier::WebSocket(ws),
            timer,
            ..
        } = self
        else {
            return;
        };
        let bye = async {
            write_all(ws, frames).await?;
            let close = CloseFrame {
                code: reason.ws_code(),
                reason: Utf8Bytes::from_static(""),
            };
            ws.send(Message::Close(Some(close))).await
        };
        // The session's own timer bounds the goodbye: a second `Sleep` here would make every
        // connection's task larger for a step it takes once.
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = bye => {}
            () = timer.as_mut() => {}
        }
    }
}

async fn write_all(ws: &mut WebSocket, frames: impl IntoIterator<Item = Frame>) -> Result<(), axum::Error> {
    for frame in frames {
        ws.feed(to_message(frame)).await?;
    }
    ws.flush().await
}

/// Closes a WebSocket that will carry no session (e.g. a second upgrade of the same session).
pub(super) async fn refuse(mut ws: WebSocket) {
    let close = CloseFrame {
        code: 1000,
        reason: Utf8Bytes::from_static(""),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(close)))).await;
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
