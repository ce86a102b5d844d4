//! The outbound queue of one Engine.IO session, bounded in bytes, whatever transport drains it.
//!
//! Anyone may push (the session's own task, a broadcast on another task, a cluster request);
//! only the session task drains it. An empty outbox allocates nothing, which matters at
//! hundreds of thousands of idle connections, and neither does queuing one frame: the queue
//! holds its first frame inline, and the session task swaps a spilled queue with its own spare
//! buffer when it drains, so a busy connection reuses the same two buffers. A broadcast to N
//! sockets therefore costs N reference-count increments and no allocation per recipient.
//!
//! The byte limit is a hard cap far above one message, not a burst limit: a client reading
//! normally keeps up with any burst its transport can carry, and one that stops reading is
//! caught by time (the transport's slow-consumer timeout) long before. Only a client whose queue
//! still passes the cap is closed; a single message larger than the cap is dropped for that
//! client alone and counted in `wsgate_oversized_drops_total`.

use super::close::CloseReason;
use crate::metrics::Metrics;
use crate::protocol::engineio;
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use parking_lot::Mutex;
use smallvec::SmallVec;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::Notify;

/// One WebSocket frame. Cloning is cheap (reference-counted), so a broadcast encodes once.
#[derive(Debug, Clone)]
pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// The frames of one Engine.IO `message` carrying `text` (a packet of the layer above, opaque
/// here), then its binary attachments, each a frame of its own.
pub fn message_frames(text: &str, attachments: &[Bytes]) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + attachments.len());
    frames.push(Frame::Text(engineio::message(text).into()));
    frames.extend(attachments.iter().cloned().map(Frame::Binary));
    frames
}

/// Queued frames: one is held inline (a broadcast reaching an idle client), more spill to the
/// heap.
pub type Frames = SmallVec<[Frame; 1]>;

/// A spare buffer that grew past this many frames (a burst) is released after the write
/// rather than kept for the connection's lifetime.
const KEEP_SPARE_FRAMES: usize = 64;

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
    /// Where a message too large for the queue is counted.
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct State {
    frames: Frames,
    bytes: usize,
    closing: Option<CloseReason>,
}

impl Outbox {
    pub fn new(max_bytes: usize, metrics: Arc<Metrics>) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            max_bytes,
            metrics,
        }
    }

    /// Queues frames that must arrive together (a packet and its attachments). Returns false,
    /// queuing nothing, when the connection is closing or the message alone is larger than the
    /// cap; a push that takes the queue over the cap closes the connection as a slow consumer.
    pub fn push(&self, frames: &[Frame]) -> bool {
        let size: usize = frames.iter().map(Frame::len).sum();
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return false;
        }
        if size > self.max_bytes {
            self.metrics.oversized_drops.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if state.bytes + size > self.max_bytes {
            state.closing = Some(CloseReason::SlowConsumer);
            state.frames.clear();
            state.bytes = 0;
            drop(state);
            self.wake.notify_one();
            return false;
        }
        state.bytes += size;
        state.frames.extend(frames.iter().cloned());
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

    /// Bytes queued and not yet handed to the transport.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.state.lock().frames.is_empty()
    }

    /// Everything queued so far, and the close request if there is one.
    pub(crate) fn drain(&self) -> (Frames, Option<CloseReason>) {
        let mut state = self.state.lock();
        state.bytes = 0;
        (std::mem::take(&mut state.frames), state.closing)
    }

    /// Moves everything queued into `spare` (which must be empty) by swapping buffers, so the
    /// queue keeps `spare`'s capacity and nothing is allocated; returns the close request.
    pub(super) fn drain_into(&self, spare: &mut Frames) -> Option<CloseReason> {
        debug_assert!(spare.is_empty());
        let mut state = self.state.lock();
        state.bytes = 0;
        std::mem::swap(&mut state.frames, spare);
        state.closing
    }

    /// Empties a spare buffer after its frames were written, releasing it if a burst made it
    /// large.
    pub(super) fn recycle(spare: &mut Frames) {
        if spare.capacity() > KEEP_SPARE_FRAMES {
            *spare = Frames::new();
        } else {
            spare.clear();
        }
    }

    pub(super) async fn wait(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_over_the_cap_is_dropped_not_fatal() {
        let metrics = Arc::new(Metrics::default());
        let outbox = Outbox::new(10, metrics.clone());
        assert!(!outbox.push(&[Frame::Text("12345678901".into())]));
        assert_eq!(metrics.oversized_drops.load(Ordering::Relaxed), 1);
        assert!(!outbox.is_closing(), "the client stays connected");
        assert!(outbox.push(&[Frame::Text("1234567890".into())]));
    }

    #[test]
    fn over_the_byte_limit_the_connection_closes_as_slow() {
        let outbox = Outbox::new(10, Arc::default());
        assert!(outbox.push(&[Frame::Text("12345".into())]));
        assert!(outbox.push(&[Frame::Binary(Bytes::from_static(b"12345"))]));
        assert!(!outbox.push(&[Frame::Text("x".into())]));
        let (frames, closing) = outbox.drain();
        assert!(frames.is_empty(), "a slow consumer's backlog is dropped");
        assert_eq!(closing, Some(CloseReason::SlowConsumer));
        assert!(!outbox.push(&[Frame::Text("x".into())]));
    }

    #[test]
    fn close_keeps_queued_frames_and_first_reason() {
        let outbox = Outbox::new(100, Arc::default());
        assert!(outbox.push(&[Frame::Text("41".into())]));
        outbox.close(CloseReason::ServerDisconnect);
        outbox.close(CloseReason::ShuttingDown);
        let (frames, closing) = outbox.drain();
        assert_eq!(frames.len(), 1);
        assert_eq!(closing, Some(CloseReason::ServerDisconnect));
    }

    #[test]
    fn draining_swaps_buffers_so_a_busy_queue_reuses_them() {
        let outbox = Outbox::new(1 << 20, Arc::default());
        let mut spare = Frames::new();
        for _ in 0..3 {
            assert!(outbox.push(&[Frame::Text("42".into()), Frame::Text("43".into())]));
        }
        assert_eq!(outbox.drain_into(&mut spare), None);
        assert_eq!(spare.len(), 6);
        assert!(spare.spilled());
        let capacity = spare.capacity();
        Outbox::recycle(&mut spare);
        // The next burst lands in the queue's old buffer; the one after that in `spare`'s.
        for _ in 0..3 {
            assert!(outbox.push(&[Frame::Text("42".into()), Frame::Text("43".into())]));
        }
        outbox.drain_into(&mut spare);
        Outbox::recycle(&mut spare);
        for _ in 0..3 {
            assert!(outbox.push(&[Frame::Text("42".into()), Frame::Text("43".into())]));
        }
        assert_eq!(outbox.state.lock().frames.capacity(), capacity, "no new allocation");
    }
}
