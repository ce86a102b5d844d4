//! One Engine.IO session, whatever carries it: heartbeat, connect deadline, Engine.IO control
//! packets, and the switch from polling to WebSocket.

use super::close::CloseReason;
use super::config::TransportConfig;
use super::engine::{Engine, SessionHandle};
use super::outbox::{Frame, Frames, Outbox};
use super::permit::ConnectionPermit;
use super::polling::{PollingCarrier, PollingStep};
use super::websocket::{read_error, write_all};
use crate::protocol::engineio::{self, EnginePacket, PayloadPacket};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A `message` packet from the client.
#[derive(Debug)]
pub enum Inbound {
    /// A text `4…` packet; [`Inbound::text`] is the part after the `4`.
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

/// What a session does when its timer fires: send a ping, or end with the reason.
pub(super) type OnDeadline = fn(&mut EngineSession) -> Result<(), CloseReason>;

/// What carries the session now. Not boxed: nearly every session ends up on a WebSocket, and the
/// session lives inside its task's future either way.
#[allow(clippy::large_enum_variant)]
pub(super) enum Carrier {
    WebSocket(WebSocket),
    Polling(PollingCarrier),
}

/// One open Engine.IO session. Served by exactly one task, which calls [`EngineSession::next`]
/// until it fails and then [`EngineSession::close`].
pub struct EngineSession {
    sid: Arc<str>,
    engine: Arc<Engine>,
    pub(super) outbox: Arc<Outbox>,
    /// The buffer the outbox's frames are swapped into for writing (see [`Outbox::drain_into`]).
    pub(super) spare: Frames,
    pub(super) carrier: Carrier,
    /// Kept for as long as the session lives (its connection's place under the connection cap).
    pub(super) permit: Option<ConnectionPermit>,
    heartbeat: Heartbeat,
    connect_deadline: Option<Instant>,
    /// When the next message must have arrived (the gateway waiting for a binary packet's
    /// attachments), if it must.
    message_deadline: Option<Instant>,
    /// The one timer of the session, set to the next deadline. Kept rather than created per
    /// wait: a session woken for every broadcast would otherwise register and cancel a timer
    /// each time.
    pub(super) timer: Pin<Box<Sleep>>,
}

impl EngineSession {
    /// A session carried by `carrier`, registered under `sid` until it is dropped.
    pub(super) fn new(engine: &Arc<Engine>, sid: Arc<str>, binding: u64, carrier: Carrier) -> Self {
        let outbox = Arc::new(Outbox::new(engine.config.max_queue_bytes, engine.metrics.clone()));
        let polling = match &carrier {
            Carrier::Polling(polling) => Some(polling.shared.clone()),
            Carrier::WebSocket(_) => None,
        };
        engine.register(
            &sid,
            SessionHandle {
                outbox: outbox.clone(),
                binding,
                polling,
            },
        );
        let now = Instant::now();
        let first_ping = now + engine.config.ping_interval;
        EngineSession {
            sid,
            engine: engine.clone(),
            outbox,
            spare: Frames::new(),
            carrier,
            permit: None,
            heartbeat: Heartbeat::PingAt(first_ping),
            connect_deadline: Some(now + engine.config.connect_timeout),
            message_deadline: None,
            timer: Box::pin(tokio::time::sleep_until(first_ping)),
        }
    }

    pub fn sid(&self) -> &Arc<str> {
        &self.sid
    }

    /// The queue through which anything reaches this client.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The session must connect a namespace within `within` from now, if that is sooner than
    /// its connect timeout.
    pub fn shorten_connect_deadline(&mut self, within: std::time::Duration) {
        let sooner = Instant::now() + within;
        if let Some(at) = &mut self.connect_deadline {
            *at = (*at).min(sooner);
        }
    }

    /// The session has `--connect-timeout` from now to connect a namespace (a refused CONNECT
    /// leaves it open that long, as Node does).
    pub fn reset_connect_deadline(&mut self) {
        self.connect_deadline = Some(Instant::now() + self.engine.config.connect_timeout);
    }

    /// A namespace is connected: the connect timeout no longer applies.
    pub fn namespace_connected(&mut self) {
        self.connect_deadline = None;
    }

    /// The next message must arrive by `at` (or, with `None`, whenever): past it [`Self::next`]
    /// fails with [`CloseReason::ParseError`]. On the session's own timer, so waiting for a
    /// message with a deadline needs no second timer in the caller's task.
    pub fn set_message_deadline(&mut self, at: Option<Instant>) {
        self.message_deadline = at;
    }

    /// Serves the session until the client sends a message, and returns it. Pings, pongs,
    /// outbound packets and a transport upgrade are handled meanwhile. `Err` means the session
    /// is over; call [`EngineSession::close`] with the reason.
    pub async fn next(&mut self) -> Result<Inbound, CloseReason> {
        loop {
            let step = match &mut self.carrier {
                Carrier::WebSocket(_) => return self.next_from_websocket().await,
                Carrier::Polling(polling) => polling.step(&self.outbox)?,
            };
            match step {
                PollingStep::Packet(PayloadPacket::Binary(data)) => return Ok(Inbound::Binary(data)),
                PollingStep::Packet(PayloadPacket::Text(text)) => {
                    // The payload was checked to be UTF-8 as a whole.
                    let text = Utf8Bytes::try_from(text).map_err(|_| CloseReason::ParseError)?;
                    if let Some(message) = self.on_text(text)? {
                        return Ok(message);
                    }
                }
                PollingStep::Upgraded(ws, permit) => {
                    tracing::debug!(engine_sid = %self.sid, "transport upgraded to websocket");
                    self.carrier = Carrier::WebSocket(*ws);
                    self.permit = permit;
                }
                PollingStep::Wait(shared) => {
                    let on_deadline = self.arm_timer();
                    tokio::select! {
                        () = self.outbox.wait() => {}
                        () = shared.woken() => {}
                        () = self.timer.as_mut() => on_deadline(self)?,
                    }
                }
            }
        }
    }

    /// An Engine.IO text packet from the client: a message is returned, control packets are
    /// handled here.
    pub(super) fn on_text(&mut self, text: Utf8Bytes) -> Result<Option<Inbound>, CloseReason> {
        match engineio::decode_text(&text) {
            Ok(EnginePacket::Message(_)) => Ok(Some(Inbound::Text(text))),
            Ok(EnginePacket::Pong(_)) => {
                if let Heartbeat::PongBy(_) = self.heartbeat {
                    self.heartbeat = Heartbeat::PingAt(Instant::now() + self.engine.config.ping_interval);
                }
                Ok(None)
            }
            Ok(EnginePacket::Close) => Err(CloseReason::ClientClose),
            // A v4 client never pings; engine.io treats it as a protocol error.
            Ok(EnginePacket::Ping(_)) => Err(CloseReason::ParseError),
            Ok(EnginePacket::Open | EnginePacket::Upgrade | EnginePacket::Noop) => Ok(None),
            Err(_) => Err(CloseReason::ParseError),
        }
    }

    /// Sets the session's timer to the next deadline; returns what to do when it fires.
    pub(super) fn arm_timer(&mut self) -> OnDeadline {
        let (deadline, on_deadline) = self.next_deadline();
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        on_deadline
    }

    /// The next timer to fire (ping, pong deadline or connect deadline) and what it does.
    fn next_deadline(&self) -> (Instant, OnDeadline) {
        let heartbeat: (Instant, OnDeadline) = match self.heartbeat {
            Heartbeat::PingAt(at) => (at, |session| {
                session
                    .outbox
                    .push(&[Frame::Text(Utf8Bytes::from_static(engineio::PING))]);
                session.heartbeat = Heartbeat::PongBy(Instant::now() + session.engine.config.ping_timeout);
                Ok(())
            }),
            Heartbeat::PongBy(by) => (by, |_| Err(CloseReason::PingTimeout)),
        };
        let next: (Instant, OnDeadline) = match self.connect_deadline {
            Some(at) if at < heartbeat.0 => (at, |_| Err(CloseReason::ConnectTimeout)),
            _ => heartbeat,
        };
        match self.message_deadline {
            Some(at) if at < next.0 => (at, |_| Err(CloseReason::ParseError)),
            _ => next,
        }
    }

    pub(super) fn config(&self) -> &TransportConfig {
        &self.engine.config
    }

    /// Ends the session: what is still queued is delivered when the client is still listening,
    /// then the transport is closed (a close frame, or a close packet to a polling client).
    pub async fn close(&mut self, reason: CloseReason) {
        self.outbox.close(reason);
        match &mut self.carrier {
            Carrier::WebSocket(_) => self.close_websocket(reason).await,
            Carrier::Polling(polling) => polling.close(&self.outbox, reason, &self.engine.config).await,
        }
    }
}

impl Engine {
    /// Registers a session on a freshly upgraded WebSocket under `sid`, with its open packet
    /// (no upgrades: the session already has the best transport) queued first. `permit` lives as
    /// long as the session; `binding` is what later requests of the session must match (see
    /// [`SessionHandle`]). Synchronous, so the task serving the session holds only the session's
    /// own state (an async open step nested before it made every task 1.3 KiB larger).
    pub fn open_websocket(
        self: &Arc<Self>,
        ws: WebSocket,
        sid: Arc<str>,
        binding: u64,
        permit: Option<ConnectionPermit>,
    ) -> EngineSession {
        let open = self.open_packet(&sid, false);
        let mut session = EngineSession::new(self, sid, binding, Carrier::WebSocket(ws));
        session.outbox.push(&[Frame::Text(open.into())]);
        session.permit = permit;
        session
    }

    /// Opens a session for a polling handshake and registers it under `sid`; returns it and the
    /// open packet that is the handshake's response body.
    pub fn open_polling(
        self: &Arc<Self>,
        sid: Arc<str>,
        binding: u64,
        upgrade_to_websocket: bool,
    ) -> (EngineSession, String) {
        let open = self.open_packet(&sid, upgrade_to_websocket);
        let carrier = PollingCarrier::new();
        (EngineSession::new(self, sid, binding, Carrier::Polling(carrier)), open)
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

impl Drop for EngineSession {
    fn drop(&mut self) {
        self.engine.unregister(&self.sid);
    }
}
