//! One client connected to one namespace: its identity, rooms, outbox and the acks it owes.
//!
//! A socket's room set is changed only by its [`super::Namespace`], under the socket's own lock
//! (see there); everything else here is the socket's own.

use crate::protocol::handshake::Handshake;
use crate::protocol::socketio::Packet;
use crate::transport::{message_frames, Frame, Outbox};
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Called with the arguments of a client's ack (placeholders + attachments). Shared: one
/// broadcast asking N clients for acks registers the same handler N times.
pub type AckHandler = Arc<dyn Fn(Vec<Value>, Vec<Bytes>) + Send + Sync>;

/// Most acks one client may owe at once; a broadcast asking for more skips that client.
pub const MAX_PENDING_ACKS: usize = 256;

/// Acks a client owes, by packet id. Expired ones are purged when the map has doubled since the
/// last purge, so inserting stays O(1) amortized however many are pending.
#[derive(Default)]
struct PendingAcks {
    by_id: HashMap<u64, (Instant, AckHandler)>,
    purge_at: usize,
}

impl std::fmt::Debug for PendingAcks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingAcks({})", self.by_id.len())
    }
}

/// A room name. Every socket is also in the room named by its own id.
pub type Room = Arc<str>;

/// One client connected to one namespace.
#[derive(Debug)]
pub struct Socket {
    pub id: Arc<str>,
    pub nsp: Arc<str>,
    /// The user of an authenticated socket (`passport.user`); Node peers see it as
    /// `socket.data`, built by [`Socket::data`] when they ask.
    pub user: Option<Value>,
    pub handshake: Arc<Handshake>,
    /// The express-session id the socket was authenticated with (`None` without auth).
    pub session: Option<Arc<str>>,
    /// Its private id for connection state recovery (`None` with recovery off).
    pub pid: Option<Arc<str>>,
    /// Its rooms changed since its recovery record was last written.
    record_dirty: AtomicBool,
    pub(super) outbox: Arc<Outbox>,
    /// Rooms this socket is in (a set: a peer may join it to thousands); `None` once it is gone.
    pub(super) rooms: Mutex<Option<HashSet<Room>>>,
    /// Acks this socket's client owes the server (boxed: most sockets never owe one).
    acks: Mutex<Option<Box<PendingAcks>>>,
}

impl Socket {
    pub fn new(
        nsp: Arc<str>,
        id: Arc<str>,
        outbox: Arc<Outbox>,
        user: Option<Value>,
        handshake: Arc<Handshake>,
        session: Option<Arc<str>>,
        pid: Option<Arc<str>>,
    ) -> Arc<Self> {
        Arc::new(Socket {
            id,
            nsp,
            user,
            handshake,
            session,
            // A new socket's record is yet to be written.
            record_dirty: AtomicBool::new(pid.is_some()),
            pid,
            outbox,
            rooms: Mutex::new(Some(HashSet::new())),
            acks: Mutex::new(None),
        })
    }

    /// `socket.data` as Node peers see it: `{"user": …}` for authenticated sockets, `{}` else.
    pub fn data(&self) -> Value {
        match &self.user {
            Some(user) => serde_json::json!({ "user": user }),
            None => serde_json::json!({}),
        }
    }

    /// Marks the recovery record out of date (its rooms changed).
    pub(super) fn rooms_changed(&self) {
        if self.pid.is_some() {
            self.record_dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the recovery record is out of date; it is taken as written from now on.
    pub fn take_record_dirty(&self) -> bool {
        self.record_dirty.swap(false, Ordering::Relaxed)
    }

    pub fn is_connected(&self) -> bool {
        self.rooms.lock().is_some()
    }

    pub fn in_room(&self, room: &str) -> bool {
        self.rooms.lock().as_ref().is_some_and(|rooms| rooms.contains(room))
    }

    /// The rooms the socket is in (empty once it is gone).
    pub fn rooms(&self) -> Vec<Room> {
        self.rooms
            .lock()
            .as_ref()
            .map(|rooms| rooms.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Sends a packet to this client. False if the connection is closing.
    pub fn send(&self, packet: &Packet) -> bool {
        self.outbox.push(&frames(packet))
    }

    /// Emits `event` with `args` (binary parts as placeholders + `attachments`).
    pub fn emit(&self, event: &str, mut args: Vec<Value>, attachments: Vec<Bytes>) -> bool {
        args.insert(0, Value::from(event));
        self.send(&Packet::event(&self.nsp, args, attachments))
    }

    /// Answers the client's ack request `id`.
    pub fn ack(&self, id: u64, args: Vec<Value>, attachments: Vec<Bytes>) -> bool {
        self.send(&Packet::ack(&self.nsp, id, args, attachments))
    }

    /// Answers the client's ack request `id` with a refusal: `{"ok":false,"error":"…"}`.
    pub fn refuse(&self, id: u64, refusal: super::policy::Refusal) -> bool {
        self.ack(id, vec![refusal.ack()], Vec::new())
    }

    /// Waits up to `timeout` for the client to acknowledge packet `id`. False, registering
    /// nothing, when the client already owes [`MAX_PENDING_ACKS`] acks.
    pub fn expect_ack(&self, id: u64, timeout: Duration, handler: AckHandler) -> bool {
        let now = Instant::now();
        let mut acks = self.acks.lock();
        let acks = acks.get_or_insert_with(Default::default);
        if acks.by_id.len() >= acks.purge_at {
            acks.by_id.retain(|_, (deadline, _)| *deadline > now);
            acks.purge_at = (acks.by_id.len() * 2).max(16);
        }
        if acks.by_id.len() >= MAX_PENDING_ACKS {
            return false;
        }
        acks.by_id.insert(id, (now + timeout, handler));
        true
    }

    /// The handler waiting for ack `id`, if it has not expired.
    pub fn take_ack(&self, id: u64) -> Option<AckHandler> {
        let (deadline, handler) = self.acks.lock().as_mut()?.by_id.remove(&id)?;
        (deadline > Instant::now()).then_some(handler)
    }

    /// Acks this client owes (expired ones included until they are purged).
    pub fn pending_acks(&self) -> usize {
        self.acks.lock().as_ref().map_or(0, |acks| acks.by_id.len())
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

/// The frames of a packet on the wire: its text form, then each attachment.
pub fn frames(packet: &Packet) -> Vec<Frame> {
    message_frames(&packet.encode(), &packet.attachments)
}
