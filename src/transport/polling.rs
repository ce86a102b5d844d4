//! The HTTP long-polling carrier, as engine.io 6 behaves, and the upgrade to WebSocket.
//!
//! A polling session has no connection of its own: HTTP requests hand their work to the
//! session's task through a [`PollingSession`] and wait for the answer. A `GET` waits until
//! there is something to send (packets, a ping, a noop during an upgrade, the close packet); a
//! `POST` hands over its body and is answered once every packet in it has been handled, so a
//! client can never have more than one body (at most `maxPayload`) queued. At most one `GET`
//! and one `POST` may be pending at once: a second one closes the session, as in engine.io.
//!
//! The outbox stays the session's one queue across an upgrade: polling drains it until the
//! client sends `5` over the probed WebSocket, the WebSocket drains it after, so no packet is
//! lost or sent twice.

use super::close::CloseReason;
use super::config::TransportConfig;
use super::outbox::{Frame, Frames, Outbox};
use super::permit::ConnectionPermit;
use super::websocket;
use crate::protocol::engineio::{encode_payload, PayloadPacket, PayloadPart, PayloadReader};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

const NOOP: &str = "6";
const CLOSE: &str = "1";

/// Why a polling request is refused. Each maps to one engine.io error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// The session moved to WebSocket; engine.io answers `Bad request` (transport mismatch).
    #[error("the session has been upgraded to websocket")]
    Upgraded,
    /// The session ended while or before the request was handled.
    #[error("the session is closed")]
    Closed,
    /// A second `GET` or `POST` while one is pending: the session is closed.
    #[error("a second concurrent {0} for the same session (the session is closed)")]
    Overlap(&'static str),
    /// The body is not a valid payload: the session is closed.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

/// Why a WebSocket opened with a polling session's id did not take the session over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// The session is not on polling (already upgrading, upgraded, or closing).
    #[error("the session is not on polling (a second upgrade, or it is closing)")]
    NotPolling,
    /// No `2probe` … `5` within the upgrade timeout.
    #[error("the client did not finish the upgrade within --upgrade-timeout")]
    Timeout,
    /// The WebSocket sent something else, or closed, before `5`.
    #[error("the client abandoned the upgrade")]
    Aborted,
}

impl From<UpgradeError> for crate::metrics::Upgrade {
    fn from(err: UpgradeError) -> Self {
        match err {
            UpgradeError::NotPolling => crate::metrics::Upgrade::NotPolling,
            UpgradeError::Timeout => crate::metrics::Upgrade::Timeout,
            UpgradeError::Aborted => crate::metrics::Upgrade::Aborted,
        }
    }
}

impl From<&PollError> for crate::metrics::PollingRefused {
    fn from(err: &PollError) -> Self {
        use crate::metrics::PollingRefused as R;
        match err {
            PollError::Upgraded => R::TransportMismatch,
            PollError::Closed => R::SessionClosed,
            PollError::Overlap("GET") => R::OverlappingGet,
            PollError::Overlap(_) => R::OverlappingPost,
            PollError::Malformed(_) => R::MalformedPayload,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Polling,
    /// A WebSocket for this session is open; waiting for `2probe`.
    Probing,
    /// `3probe` was sent; waiting for `5`. Pending `GET`s are answered at once so the client can
    /// pause polling.
    Upgrading,
    Upgraded,
    /// The session ends; a last `GET` may still collect the close packet.
    Closing,
    Closed,
}

struct Post {
    reader: PayloadReader,
    done: oneshot::Sender<Result<(), CloseReason>>,
}

/// What the HTTP side hands to the session task, under one lock.
#[derive(Default)]
struct Slots {
    phase: Phase,
    /// The pending `GET`, answered by the session task.
    get: Option<oneshot::Sender<String>>,
    /// A `POST` body not yet taken by the session task.
    post: Option<Post>,
    /// A `POST` is waiting for its body to be handled.
    post_busy: bool,
    /// The HTTP side decided the session must end (a request that breaks the rules).
    failure: Option<CloseReason>,
    /// The probed WebSocket, once the client sent `5`, with what must live as long as it.
    websocket: Option<(Box<WebSocket>, Option<ConnectionPermit>)>,
}

impl Slots {
    fn refuse_if_gone(&self) -> Result<(), PollError> {
        match self.phase {
            Phase::Upgraded => Err(PollError::Upgraded),
            Phase::Closed => Err(PollError::Closed),
            _ => Ok(()),
        }
    }
}

/// The part of a polling session that its HTTP requests share with the session's task.
#[derive(Default)]
pub struct PollingSession {
    slots: Mutex<Slots>,
    /// Wakes the session task; it is the only waiter.
    wake: Notify,
}

impl PollingSession {
    pub fn is_upgraded(&self) -> bool {
        self.slots.lock().phase == Phase::Upgraded
    }

    /// A `GET`: waits until the session has something to send and returns the payload.
    pub async fn get(&self) -> Result<String, PollError> {
        let answer = {
            let mut slots = self.slots.lock();
            slots.refuse_if_gone()?;
            if slots.get.is_some() {
                slots.failure.get_or_insert(CloseReason::TransportError);
                drop(slots);
                self.wake.notify_one();
                return Err(PollError::Overlap("GET"));
            }
            let (tx, rx) = oneshot::channel();
            slots.get = Some(tx);
            rx
        };
        self.wake.notify_one();
        // The session answers every GET it holds, at the latest with its close packet.
        answer.await.map_err(|_| PollError::Closed)
    }

    /// A `POST`: hands the body to the session and returns once all of it has been handled.
    pub async fn post(&self, body: Bytes) -> Result<(), PollError> {
        let reader = match PayloadReader::new(body) {
            Ok(reader) => reader,
            Err(err) => {
                self.fail(CloseReason::ParseError);
                return Err(PollError::Malformed(err.to_string()));
            }
        };
        let handled = {
            let mut slots = self.slots.lock();
            slots.refuse_if_gone()?;
            if slots.phase == Phase::Closing {
                return Err(PollError::Closed);
            }
            if slots.post_busy {
                slots.failure.get_or_insert(CloseReason::TransportError);
                drop(slots);
                self.wake.notify_one();
                return Err(PollError::Overlap("POST"));
            }
            let (done, handled) = oneshot::channel();
            slots.post = Some(Post { reader, done });
            slots.post_busy = true;
            handled
        };
        self.wake.notify_one();
        match handled.await {
            Ok(Ok(())) | Ok(Err(CloseReason::ClientClose)) => Ok(()),
            Ok(Err(CloseReason::ParseError)) => Err(PollError::Malformed("not an Engine.IO packet".into())),
            Ok(Err(_)) | Err(_) => Err(PollError::Closed),
        }
    }

    /// Ends the session because a request broke the rules (too large, wrong content type).
    pub fn fail(&self, reason: CloseReason) {
        self.slots.lock().failure.get_or_insert(reason);
        self.wake.notify_one();
    }

    /// Serves a WebSocket opened with this session's id: `2probe` → `3probe`, then `5` moves the
    /// session onto it. Anything else, or no `5` within `timeout`, closes that WebSocket and the
    /// session stays on polling. Returns why the upgrade did not happen.
    pub async fn upgrade(
        self: Arc<Self>,
        mut ws: WebSocket,
        timeout: Duration,
        permit: Option<ConnectionPermit>,
    ) -> Result<(), UpgradeError> {
        let probing = {
            let mut slots = self.slots.lock();
            let probing = slots.phase == Phase::Polling;
            if probing {
                slots.phase = Phase::Probing;
            }
            probing
        };
        if !probing {
            websocket::refuse(ws).await;
            return Err(UpgradeError::NotPolling);
        }
        let probed = tokio::time::timeout(timeout, async {
            expect_text(&mut ws, "2probe").await?;
            ws.send(Message::Text(Utf8Bytes::from_static("3probe"))).await.ok()?;
            let upgrading = {
                let mut slots = self.slots.lock();
                let upgrading = slots.phase == Phase::Probing;
                if upgrading {
                    slots.phase = Phase::Upgrading;
                }
                upgrading
            };
            if !upgrading {
                return None;
            }
            self.wake.notify_one();
            expect_text(&mut ws, "5").await
        })
        .await;
        let failed = {
            let mut slots = self.slots.lock();
            match probed {
                Ok(Some(())) if slots.phase == Phase::Upgrading => {
                    slots.websocket = Some((Box::new(ws), permit));
                    None
                }
                _ => {
                    if matches!(slots.phase, Phase::Probing | Phase::Upgrading) {
                        slots.phase = Phase::Polling;
                    }
                    Some((
                        ws,
                        if probed.is_err() {
                            UpgradeError::Timeout
                        } else {
                            UpgradeError::Aborted
                        },
                    ))
                }
            }
        };
        match failed {
            None => {
                self.wake.notify_one();
                Ok(())
            }
            Some((ws, outcome)) => {
                websocket::refuse(ws).await;
                Err(outcome)
            }
        }
    }

    pub(super) async fn woken(&self) {
        self.wake.notified().await
    }
}

/// The next text frame must be `want` (WebSocket pings and pongs aside).
async fn expect_text(ws: &mut WebSocket, want: &str) -> Option<()> {
    loop {
        match ws.recv().await? {
            Ok(Message::Text(text)) if text.as_str() == want => return Some(()),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            _ => return None,
        }
    }
}

/// The session task's side of a polling session.
pub(super) struct PollingCarrier {
    pub(super) shared: Arc<PollingSession>,
    /// The `POST` body being handled, packet by packet.
    post: Option<Post>,
}

impl PollingCarrier {
    pub(super) fn new() -> Self {
        PollingCarrier {
            shared: Arc::default(),
            post: None,
        }
    }
}

/// What the session task does next.
pub(super) enum PollingStep {
    Packet(PayloadPacket),
    Upgraded(Box<WebSocket>, Option<ConnectionPermit>),
    /// Nothing to do until the session is woken (or a timer fires).
    Wait(Arc<PollingSession>),
}

impl PollingCarrier {
    /// Takes the next thing to act on, without waiting: a packet of the current `POST`, the
    /// upgraded WebSocket, or a `GET` answered with what is queued.
    pub(super) fn step(&mut self, outbox: &Outbox) -> Result<PollingStep, CloseReason> {
        if let Some(reason) = outbox.closing() {
            return Err(reason);
        }
        loop {
            if let Some(post) = &mut self.post {
                match post.reader.next_packet() {
                    Some(Ok(packet)) => return Ok(PollingStep::Packet(packet)),
                    Some(Err(_)) => return Err(CloseReason::ParseError),
                    None => self.finish_post(Ok(())),
                }
            }
            let mut slots = self.shared.slots.lock();
            if let Some(reason) = slots.failure {
                return Err(reason);
            }
            if let Some((ws, held)) = slots.websocket.take() {
                slots.phase = Phase::Upgraded;
                if let Some(get) = slots.get.take() {
                    let _ = get.send(NOOP.into());
                }
                return Ok(PollingStep::Upgraded(ws, held));
            }
            if let Some(post) = slots.post.take() {
                self.post = Some(post);
                continue;
            }
            let flush = !outbox.is_empty() || slots.phase == Phase::Upgrading;
            if let Some(get) = slots.get.take_if(|get| flush || get.is_closed()) {
                if get.is_closed() {
                    // engine.io: "poll connection closed prematurely".
                    return Err(CloseReason::TransportClose);
                }
                let (frames, _) = outbox.drain();
                let _ = get.send(payload(&frames, None));
            }
            return Ok(PollingStep::Wait(self.shared.clone()));
        }
    }

    fn finish_post(&mut self, outcome: Result<(), CloseReason>) {
        if let Some(post) = self.post.take() {
            self.shared.slots.lock().post_busy = false;
            let _ = post.done.send(outcome);
        }
    }

    /// Ends the session: a pending `GET` gets the close packet (`6` when the client itself
    /// closed, as engine.io). When the server ended the session, the client is still listening:
    /// what is queued (a CONNECT_ERROR, a DISCONNECT) goes with it, waiting for the next `GET` if
    /// none is pending.
    pub(super) async fn close(&mut self, outbox: &Outbox, reason: CloseReason, config: &TransportConfig) {
        {
            let mut slots = self.shared.slots.lock();
            slots.phase = Phase::Closing;
            slots.websocket = None;
            slots.post = None;
        }
        // A body that was read to its end was handled, whatever ends the session now.
        self.finish_post(if reason == CloseReason::ParseError {
            Err(reason)
        } else {
            Ok(())
        });
        let wait = match reason {
            CloseReason::ServerDisconnect | CloseReason::ConnectTimeout => Some(config.ping_timeout),
            CloseReason::ShuttingDown => Some(Duration::from_secs(1)),
            _ => None,
        };
        if let Some(get) = self.take_get(wait.unwrap_or_default()).await {
            let frames = if wait.is_some() {
                outbox.drain().0
            } else {
                Frames::new()
            };
            let last = if reason == CloseReason::ClientClose {
                NOOP
            } else {
                CLOSE
            };
            let _ = get.send(payload(&frames, Some(last)));
        }
        let mut slots = self.shared.slots.lock();
        slots.phase = Phase::Closed;
        if let Some(get) = slots.get.take() {
            let _ = get.send(CLOSE.into());
        }
    }

    /// The pending `GET`, waiting up to `wait` for one to arrive.
    async fn take_get(&self, wait: Duration) -> Option<oneshot::Sender<String>> {
        let deadline = Instant::now() + wait;
        loop {
            let get = self.shared.slots.lock().get.take();
            if get.is_some() {
                return get;
            }
            tokio::time::timeout_at(deadline, self.shared.wake.notified())
                .await
                .ok()?;
        }
    }
}

/// A `GET` body: the queued frames (binary ones in base64), then `last`; a noop when empty.
fn payload(frames: &[Frame], last: Option<&str>) -> String {
    if frames.is_empty() && last.is_none() {
        return NOOP.into();
    }
    let parts = frames.iter().map(|frame| match frame {
        Frame::Text(text) => PayloadPart::Text(text.as_str()),
        Frame::Binary(data) => PayloadPart::Binary(data),
    });
    encode_payload(parts.chain(last.map(PayloadPart::Text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_body_is_the_engine_io_payload() {
        let frames: Vec<Frame> = [
            Frame::Text("2".into()),
            Frame::Text("451-[\"b\",{\"_placeholder\":true,\"num\":0}]".into()),
            Frame::Binary(Bytes::from_static(&[1, 2, 3])),
        ]
        .into();
        assert_eq!(
            payload(&frames, None),
            "2\x1e451-[\"b\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID"
        );
        assert_eq!(payload(&[], None), "6");
        assert_eq!(payload(&[], Some(CLOSE)), "1");
    }
}
