//! The outbound queue of one Engine.IO session, bounded in bytes, whatever transport drains it.
//!
//! Anyone may push (the connection's own task, a broadcast on another task, a cluster request);
//! only the connection task drains it. An empty outbox allocates nothing, which matters at
//! hundreds of thousands of idle connections. A client that stops reading fills its outbox; at
//! the limit the connection is closed as a slow consumer rather than let memory grow.

use super::CloseReason;
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use tokio::sync::Notify;

/// One WebSocket frame. Cloning is cheap (reference-counted), so a broadcast encodes once.
#[derive(Debug, Clone)]
pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Frame {
    fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    bytes: usize,
    closing: Option<CloseReason>,
}

impl Outbox {
    pub fn new(max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            max_bytes,
        }
    }

    /// Queues frames that must arrive together (a packet and its attachments). Returns false,
    /// queuing nothing, when the connection is closing; a push over the byte limit closes it as
    /// a slow consumer.
    pub fn push(&self, frames: impl IntoIterator<Item = Frame>) -> bool {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return false;
        }
        let frames: Vec<Frame> = frames.into_iter().collect();
        let size: usize = frames.iter().map(Frame::len).sum();
        if state.bytes + size > self.max_bytes {
            state.closing = Some(CloseReason::SlowConsumer);
            state.frames.clear();
            state.bytes = 0;
            drop(state);
            self.wake.notify_one();
            return false;
        }
        state.bytes += size;
        state.frames.extend(frames);
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Asks the connection to close once what is already queued has been sent.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.state.lock();
        state.closing.get_or_insert(reason);
        drop(state);
        self.wake.notify_one();
    }

    pub fn is_closing(&self) -> bool {
        self.state.lock().closing.is_some()
    }

    /// Why the connection was asked to close, if it was.
    pub fn closing(&self) -> Option<CloseReason> {
        self.state.lock().closing
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.state.lock().frames.is_empty()
    }

    /// Everything queued so far, and the close request if there is one.
    pub(super) fn drain(&self) -> (VecDeque<Frame>, Option<CloseReason>) {
        let mut state = self.state.lock();
        state.bytes = 0;
        (std::mem::take(&mut state.frames), state.closing)
    }

    pub(super) async fn wait(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_byte_limit_the_connection_closes_as_slow() {
        let outbox = Outbox::new(10);
        assert!(outbox.push([Frame::Text("12345".into())]));
        assert!(outbox.push([Frame::Binary(Bytes::from_static(b"12345"))]));
        assert!(!outbox.push([Frame::Text("x".into())]));
        let (frames, closing) = outbox.drain();
        assert!(frames.is_empty(), "a slow consumer's backlog is dropped");
        assert_eq!(closing, Some(CloseReason::SlowConsumer));
        assert!(!outbox.push([Frame::Text("x".into())]));
    }

    #[test]
    fn close_keeps_queued_frames_and_first_reason() {
        let outbox = Outbox::new(100);
        assert!(outbox.push([Frame::Text("41".into())]));
        outbox.close(CloseReason::ServerDisconnect);
        outbox.close(CloseReason::ShuttingDown);
        let (frames, closing) = outbox.drain();
        assert_eq!(frames.len(), 1);
        assert_eq!(closing, Some(CloseReason::ServerDisconnect));
    }
}
