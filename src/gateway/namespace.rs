//! Sockets and rooms of one namespace.
//!
//! A socket and its room memberships change together under the socket's own lock, so a join
//! racing a disconnect can never leave a room pointing at a socket that is gone: after
//! [`Namespace::remove`] returns, nothing of the socket remains in any map.

use super::socket::{frames, AckHandler, Room, Socket};
use crate::protocol::socketio::Packet;
use crate::transport::{CloseReason, Frame};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The namespaces a node serves (`/` always), by name.
#[derive(Debug)]
pub struct Namespaces {
    by_name: HashMap<String, Arc<Namespace>>,
}

impl Namespaces {
    /// `/` and `names`.
    pub fn new(names: &[String]) -> Self {
        let mut by_name: HashMap<_, _> = names.iter().map(|n| (n.clone(), Arc::new(Namespace::new(n)))).collect();
        by_name
            .entry("/".into())
            .or_insert_with(|| Arc::new(Namespace::new("/")));
        Namespaces { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.by_name.values()
    }

    /// Disconnects one socket from its namespace: the client gets a DISCONNECT packet, and
    /// with `close_connection` its whole engine connection is closed.
    pub fn disconnect(&self, socket: &Socket, close_connection: bool) {
        let Some(nsp) = self.get(&socket.nsp) else {
            return;
        };
        if nsp.remove(socket) {
            socket.send(&Packet::disconnect(&socket.nsp));
        }
        if close_connection {
            socket.outbox().close(CloseReason::ServerDisconnect);
        }
    }
}

/// A room appearing on or disappearing from this node (its first member joined, its last left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    Created(Room),
    Deleted(Room),
}

#[derive(Debug)]
struct RoomWatch {
    events: tokio::sync::mpsc::UnboundedSender<RoomEvent>,
    /// Sockets' own-id rooms too.
    own_rooms: bool,
}

/// The sockets and rooms of one namespace on this node.
#[derive(Debug)]
pub struct Namespace {
    pub name: Arc<str>,
    sockets: DashMap<Arc<str>, Arc<Socket>>,
    rooms: DashMap<Room, Members>,
    /// Ids of server-to-client acks; shared by the namespace as in Node, so one broadcast can use
    /// one id for every socket.
    next_ack_id: AtomicU64,
    /// Who is told when rooms appear and disappear (an adapter subscribed per room).
    room_watch: std::sync::OnceLock<RoomWatch>,
}

impl Namespace {
    pub fn new(name: &str) -> Self {
        Namespace {
            name: name.into(),
            sockets: DashMap::new(),
            rooms: DashMap::new(),
            next_ack_id: AtomicU64::new(0),
            room_watch: std::sync::OnceLock::new(),
        }
    }

    /// Rooms appearing and disappearing from now on, in order per room (each event is sent
    /// under the room's lock); with `own_rooms`, sockets' own-id rooms too. One watcher per
    /// namespace: `None` if there is one already.
    pub fn watch_rooms(&self, own_rooms: bool) -> Option<tokio::sync::mpsc::UnboundedReceiver<RoomEvent>> {
        let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
        self.room_watch.set(RoomWatch { events, own_rooms }).ok()?;
        Some(receiver)
    }

    fn room_event(&self, event: impl FnOnce() -> RoomEvent, own_room: bool) {
        if let Some(watch) = self.room_watch.get() {
            if !own_room || watch.own_rooms {
                let _ = watch.events.send(event());
            }
        }
    }

    /// Rooms a room watcher subscribes to now (after a reconnect): every room with a member
    /// here, sockets' own rooms only with `own_rooms`.
    pub fn watched_rooms(&self, own_rooms: bool) -> Vec<Room> {
        if own_rooms {
            self.all_rooms()
        } else {
            self.rooms.iter().map(|e| e.key().clone()).collect()
        }
    }

    /// Registers a socket and puts it in its own room plus `rooms`.
    pub fn add(&self, socket: &Arc<Socket>, rooms: impl IntoIterator<Item = Room>) {
        self.sockets.insert(socket.id.clone(), socket.clone());
        self.join(socket, socket.id.clone());
        for room in rooms {
            self.join(socket, room);
        }
    }

    /// Adds the socket to `room`. No effect on a socket that is gone.
    pub fn join(&self, socket: &Arc<Socket>, room: Room) {
        let mut rooms = socket.rooms.lock();
        let Some(rooms) = rooms.as_mut() else { return };
        if !rooms.insert(room.clone()) {
            return;
        }
        socket.rooms_changed();
        // A socket's own-id room is answered from the socket map: no entry of its own.
        if room == socket.id {
            self.room_event(|| RoomEvent::Created(room), true);
            return;
        }
        match self.rooms.entry(room) {
            dashmap::Entry::Occupied(mut members) => members.get_mut().insert(socket),
            dashmap::Entry::Vacant(entry) => {
                let room = entry.key().clone();
                let _members = entry.insert(Members::One(socket.clone()));
                self.room_event(|| RoomEvent::Created(room), false);
            }
        }
    }

    pub fn leave(&self, socket: &Socket, room: &str) {
        let mut rooms = socket.rooms.lock();
        let Some(rooms) = rooms.as_mut() else { return };
        if !rooms.remove(room) {
            return;
        }
        socket.rooms_changed();
        if room != &*socket.id {
            self.remove_member(room, &socket.id);
        } else {
            self.room_event(|| RoomEvent::Deleted(socket.id.clone()), true);
        }
    }

    fn remove_member(&self, room: &str, id: &str) {
        if let dashmap::Entry::Occupied(mut members) = self.rooms.entry(room.into()) {
            if members.get_mut().remove(id) {
                self.room_event(|| RoomEvent::Deleted(members.key().clone()), false);
                members.remove();
            }
        }
    }

    /// Takes the socket out of every room and the namespace. Returns false if it was already
    /// gone (so callers can act exactly once).
    pub fn remove(&self, socket: &Socket) -> bool {
        let mut guard = socket.rooms.lock();
        let Some(rooms) = guard.take() else {
            return false;
        };
        for room in rooms.iter() {
            if *room != socket.id {
                self.remove_member(room, &socket.id);
            } else {
                self.room_event(|| RoomEvent::Deleted(room.clone()), true);
            }
        }
        drop(guard);
        self.sockets.remove(&socket.id);
        true
    }

    pub fn socket(&self, id: &str) -> Option<Arc<Socket>> {
        self.sockets.get(id).map(|s| s.clone())
    }

    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Every room on this node, socket-id rooms included.
    pub fn all_rooms(&self) -> Vec<Room> {
        let own_rooms = self
            .sockets
            .iter()
            .filter(|e| e.value().in_room(e.key()))
            .map(|e| e.key().clone());
        self.rooms.iter().map(|e| e.key().clone()).chain(own_rooms).collect()
    }

    /// Whether any socket of this node is in `room` (without listing them).
    pub fn has_members(&self, room: &str) -> bool {
        self.rooms.contains_key(room) || self.sockets.get(room).is_some_and(|s| s.in_room(room))
    }

    /// How many sockets are in `room` here.
    pub fn member_count(&self, room: &str) -> usize {
        match self.rooms.get(room) {
            Some(members) => members.len(),
            None => usize::from(self.sockets.get(room).is_some_and(|s| s.in_room(room))),
        }
    }

    /// Calls `visit` with each socket in `room`, under the room's lock (so `visit` must not
    /// touch this namespace's maps).
    fn visit_members(&self, room: &str, visit: &mut impl FnMut(&Arc<Socket>)) {
        if let Some(members) = self.rooms.get(room) {
            match &*members {
                Members::One(socket) => visit(socket),
                Members::Many(sockets) => sockets.values().for_each(visit),
            }
            return;
        }
        // A socket id names the room of that one socket (unless it left it).
        if let Some(socket) = self.sockets.get(room) {
            if socket.in_room(room) {
                visit(socket.value());
            }
        }
    }

    pub fn members(&self, room: &str) -> Vec<Arc<Socket>> {
        let mut members = Vec::new();
        self.visit_members(room, &mut |s| members.push(s.clone()));
        members
    }

    /// Calls `visit` once with each socket in any of `rooms` (every socket when `rooms` is
    /// empty) and in none of `except`, under the namespace's locks (so `visit` must not touch
    /// this namespace's maps). The common selections (one room, or everyone, without
    /// exceptions) are walked in place: nothing is collected or allocated.
    fn visit_selected(
        &self,
        rooms: &[impl AsRef<str>],
        except: &[impl AsRef<str>],
        mut visit: impl FnMut(&Arc<Socket>),
    ) {
        let mut excluded = PtrSet::default();
        for room in except {
            self.visit_members(room.as_ref(), &mut |s| {
                excluded.insert(Arc::as_ptr(s));
            });
        }
        let mut keep = |s: &Arc<Socket>| {
            if excluded.is_empty() || !excluded.contains(&Arc::as_ptr(s)) {
                visit(s)
            }
        };
        match rooms {
            [] => self.sockets.iter().for_each(|e| keep(e.value())),
            [room] => self.visit_members(room.as_ref(), &mut keep),
            rooms => {
                let mut seen = PtrSet::default();
                for room in rooms {
                    self.visit_members(room.as_ref(), &mut |s| {
                        if seen.insert(Arc::as_ptr(s)) {
                            keep(s)
                        }
                    });
                }
            }
        }
    }

    /// Sockets in any of `rooms` (all sockets when `rooms` is empty) and in none of `except`.
    pub fn select(&self, rooms: &[impl AsRef<str>], except: &[impl AsRef<str>]) -> Vec<Arc<Socket>> {
        let mut selected = Vec::new();
        self.visit_selected(rooms, except, |s| selected.push(s.clone()));
        selected
    }

    /// About how many sockets a selection reaches (an upper bound), without walking it.
    fn selection_bound(&self, rooms: &[impl AsRef<str>]) -> usize {
        if rooms.is_empty() {
            return self.sockets.len();
        }
        rooms.iter().map(|room| self.member_count(room.as_ref())).sum()
    }

    /// Sends `packet` to the selected sockets, encoding it once. Returns how many got it.
    pub fn broadcast(&self, rooms: &[impl AsRef<str>], except: &[impl AsRef<str>], packet: &Packet) -> usize {
        let frames = frames(packet);
        let mut count = 0;
        self.visit_selected(rooms, except, |s| count += usize::from(s.outbox.push(&frames)));
        count
    }

    /// [`Namespace::broadcast`] for the cluster's delivery task: a selection of at least
    /// [`SPREAD_AT`] sockets is split over the runtime's workers, and the call returns once
    /// every part is queued, so broadcasts that follow still reach each socket after it.
    pub async fn broadcast_spread(
        &self,
        rooms: &[impl AsRef<str>],
        except: &[impl AsRef<str>],
        packet: &Packet,
    ) -> usize {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        if workers < 2 || self.selection_bound(rooms) < SPREAD_AT {
            return self.broadcast(rooms, except, packet);
        }
        let targets: Arc<[Arc<Socket>]> = self.select(rooms, except).into();
        let frames: Arc<[Frame]> = frames(packet).into();
        let push_all = |part: &[Arc<Socket>], frames: &[Frame]| part.iter().filter(|s| s.outbox.push(frames)).count();
        let part = targets.len().div_ceil(workers);
        let others: Vec<_> = (1..workers)
            .map(|i| {
                let (targets, frames) = (targets.clone(), frames.clone());
                tokio::spawn(async move {
                    let range = (i * part).min(targets.len())..((i + 1) * part).min(targets.len());
                    push_all(&targets[range], &frames)
                })
            })
            .collect();
        let mut count = push_all(&targets[..part.min(targets.len())], &frames);
        for other in others {
            count += other.await.unwrap_or(0);
        }
        count
    }

    /// Broadcasts `packet` asking every receiver for an ack (one id for all, encoded once);
    /// every socket's ack goes to `handler`. Returns how many sockets got the packet.
    pub fn broadcast_with_ack(
        &self,
        rooms: &[impl AsRef<str>],
        except: &[impl AsRef<str>],
        mut packet: Packet,
        timeout: Duration,
        handler: AckHandler,
    ) -> usize {
        let id = self.next_ack_id.fetch_add(1, Ordering::Relaxed);
        packet.id = Some(id);
        let frames = frames(&packet);
        let mut count = 0;
        self.visit_selected(rooms, except, |socket| {
            if !socket.expect_ack(id, timeout, handler.clone()) {
                return;
            }
            if socket.outbox.push(&frames) {
                count += 1;
            } else {
                socket.take_ack(id);
            }
        });
        count
    }
}

/// The sockets of one room here. Most rooms have one member on a node (a user's own room, a
/// session's room), and a map per room would cost each connection a few hundred bytes more.
#[derive(Debug)]
enum Members {
    One(Arc<Socket>),
    Many(HashMap<Arc<str>, Arc<Socket>>),
}

impl Members {
    fn len(&self) -> usize {
        match self {
            Members::One(_) => 1,
            Members::Many(sockets) => sockets.len(),
        }
    }

    fn insert(&mut self, socket: &Arc<Socket>) {
        match self {
            Members::One(only) if only.id == socket.id => {}
            Members::One(only) => {
                let only = only.clone();
                *self = Members::Many(HashMap::from([
                    (only.id.clone(), only),
                    (socket.id.clone(), socket.clone()),
                ]));
            }
            Members::Many(sockets) => {
                sockets.insert(socket.id.clone(), socket.clone());
            }
        }
    }

    /// Removes socket `id`; true when the room is now empty.
    fn remove(&mut self, id: &str) -> bool {
        match self {
            Members::One(only) => &*only.id == id,
            Members::Many(sockets) => {
                sockets.remove(id);
                if sockets.len() == 1 {
                    if let Some(only) = sockets.values().next().cloned() {
                        *self = Members::One(only);
                    }
                }
                false
            }
        }
    }
}

/// Below this many recipients a broadcast is queued on the calling task: splitting it would
/// cost more than it saves (queuing one frame is a lock, a reference count and a wake-up).
pub const SPREAD_AT: usize = 4096;

/// A set of sockets by address: selections are deduplicated by identity, and hashing a pointer
/// is one multiplication where hashing the id string would be a SipHash of it.
type PtrSet = std::collections::HashSet<*const Socket, std::hash::BuildHasherDefault<PtrHasher>>;

#[derive(Default)]
struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // A multiply mixes low bits upwards; folding the high half back down gives the low
        // bits (the bucket index) entropy too, although aligned addresses end in zeros.
        let x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Outbox;
    use serde_json::json;

    fn socket(nsp: &Namespace, id: &str) -> Arc<Socket> {
        let s = Socket::new(
            nsp.name.clone(),
            id.into(),
            Arc::new(Outbox::new(1 << 20, Arc::default())),
            None,
            Arc::default(),
            None,
            None,
        );
        nsp.add(&s, ["all".into()]);
        s
    }

    #[test]
    fn rooms_follow_joins_leaves_and_removal() {
        let nsp = Namespace::new("/");
        let a = socket(&nsp, "a");
        let b = socket(&nsp, "b");
        nsp.join(&a, "x".into());
        assert_eq!(nsp.select(&["x"], &[] as &[&str]).len(), 1);
        assert_eq!(nsp.select(&["all", "x"], &[] as &[&str]).len(), 2, "no duplicates");
        assert_eq!(nsp.select(&[] as &[&str], &["x"]).len(), 1);
        assert_eq!(nsp.select(&["all"], &["b"]).len(), 1, "socket ids are rooms");
        nsp.leave(&a, "x");
        assert!(nsp.members("x").is_empty());
        assert!(nsp.remove(&a));
        assert!(!nsp.remove(&a), "second removal is a no-op");
        nsp.join(&a, "late".into());
        assert!(nsp.members("late").is_empty(), "a removed socket cannot rejoin");
        assert!(nsp.remove(&b));
        assert_eq!((nsp.socket_count(), nsp.room_count()), (0, 0), "no trace left");
    }

    /// A room large enough to be split over the workers: every member gets every broadcast,
    /// once, in the order they were sent, with joins and leaves going on meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_room_split_over_workers_keeps_order_and_loses_nothing() {
        let nsp = Arc::new(Namespace::new("/"));
        let members: Vec<_> = (0..SPREAD_AT + 500).map(|i| socket(&nsp, &format!("s{i}"))).collect();
        let churn = {
            let nsp = nsp.clone();
            tokio::spawn(async move {
                for i in 0..2000 {
                    let s = socket(&nsp, &format!("late{i}"));
                    nsp.remove(&s);
                    tokio::task::yield_now().await;
                }
            })
        };
        for n in 0..50 {
            let packet = Packet::event("/", vec![json!("n"), json!(n)], vec![]);
            let reached = nsp.broadcast_spread(&["all"], &[] as &[&str], &packet).await;
            assert!(reached >= members.len(), "broadcast {n} reached {reached}");
        }
        churn.await.unwrap();
        for s in &members {
            let (frames, _) = s.outbox.drain();
            let got: Vec<String> = frames
                .iter()
                .map(|f| match f {
                    Frame::Text(t) => t.as_str().to_owned(),
                    Frame::Binary(_) => unreachable!(),
                })
                .collect();
            let want: Vec<String> = (0..50).map(|n| format!("42[\"n\",{n}]")).collect();
            assert_eq!(got, want, "socket {}", s.id);
        }
    }

    #[test]
    fn selections_visit_each_socket_once_without_the_excepted() {
        let nsp = Namespace::new("/");
        let sockets: Vec<_> = (0..100).map(|i| socket(&nsp, &format!("s{i}"))).collect();
        for (i, s) in sockets.iter().enumerate() {
            nsp.join(s, format!("r{}", i % 3).into());
        }
        assert_eq!(nsp.select(&["r0", "r1", "all"], &["r2"]).len(), 67);
        assert_eq!(nsp.select(&["r0", "r0"], &[] as &[&str]).len(), 34);
        assert_eq!(nsp.select(&[] as &[&str], &["r1", "s0"]).len(), 66);
        assert_eq!(nsp.select(&["s5"], &[] as &[&str]).len(), 1);
    }
}
