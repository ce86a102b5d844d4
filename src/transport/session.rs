//! One Engine.IO session, whatever carries it: heartbeat, connect deadline, Engine.IO control
//! packets, and the switch from polling to WebSocket.

use super::outbox::Frames;
use super::polling::{PollingCarrier, PollingStep};
use super::{CloseReason, Engine, Frame, Outbox, SessionHandle};
use crate::protocol::engineio::{self, EnginePacket, PayloadPacket};
use axum::extract::ws::{Utf8Bytes, WebSocket};
use bytes::Bytes;
use std::pin::Pin;
use std::sync::Arc;
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
    pub(super) held: Option<super::polling::Held>,
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
    pub(super) fn new(engine: &Arc<Engine>, sid: Arc<str>, carrier: Carrier) -> Self {
        let outbox = Arc::new(Outbox::new(engine.config.max_queue_bytes));
        let polling = match &carrier {
            Carrier::Polling(polling) => Some(polling.shared.clone()),
            Carrier::WebSocket(_) => None,
        };
        engine.register(
            &sid,
            SessionHandle {
                outbox: outbox.clone(),
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
            held: None,
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
                PollingStep::Upgraded(ws, held) => {
                    tracing::debug!(engine_sid = %self.sid, "transport upgraded to websocket");
                    self.carrier = Carrier::WebSocket(*ws);
                    self.held = Some(held);
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

    pub(super) fn config(&self) -> &super::TransportConfig {
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

impl Drop for EngineSession {
    fn drop(&mut self) {
        self.engine.unregister(&self.sid);
    }
}
