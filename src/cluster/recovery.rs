//! Connection state recovery on the Redis Streams adapter, in the Node adapter's format
//! (`sio:session:<pid>`, base64 msgpack `{sid, pid, rooms, data}`), so a client moves between
//! Node and wsgate nodes either way; and beyond Node:
//!
//! - *crash-safe*: a socket's record is written soon after it connects and whenever its rooms
//!   change, and rewritten while it lives (batched, by one task), so a node killed with SIGKILL
//!   leaves its sockets recoverable; a close the client recovers from writes it for exactly the
//!   window, a final one deletes it;
//! - *bounded*: the replay reads in batches and gives up past `max_replay` events;
//! - *exactly once*: the restored socket joins its rooms on the delivery task, where the stream
//!   position is known (see [`super::Cluster`]'s resume): entries the replay missed are fetched
//!   there, entries it already has are not delivered again.
//!
//! Owns the records and the replay; the gateway decides who may recover.

use super::streams::{pairs, range};
use crate::gateway::{BoxFuture, Gateway, Namespace, Recovery, Restored, Room, Socket};
use crate::metrics::{Recovery as Outcome, RecoveryRecord};
use crate::protocol::adapter::{from_client_value, to_client_args};
use crate::protocol::sharded::Message;
use crate::protocol::socketio::Packet;
use crate::protocol::streams::{self, SessionRecord, StreamId};
use crate::redis_connection::RedisConnection;
use rmpv::Value as Mp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Connection state recovery settings (`--recovery-window`, `--recovery-max-replay`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySettings {
    /// How long after a disconnect a client may recover (Node's `maxDisconnectionDuration`).
    pub window: Duration,
    /// Most events one recovery replays; past it the client gets a fresh socket.
    pub max_replay: usize,
    /// Record key prefix (the Node adapter's `sessionKeyPrefix`).
    pub key_prefix: String,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        RecoverySettings {
            window: Duration::from_secs(120),
            max_replay: 10_000,
            key_prefix: "sio:session:".into(),
        }
    }
}

impl RecoverySettings {
    /// How often live sockets' records are rewritten: twice per window (at most every minute),
    /// so a record always outlives a crash by at least the window.
    fn refresh_every(&self) -> Duration {
        (self.window / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// Entries read per XRANGE while replaying (the adapter's `readCount` is 100).
const REPLAY_BATCH: usize = 500;
/// Record writes and deletes waiting for the writer; past it they are dropped and counted.
pub(super) const RECORD_QUEUE: usize = 100_000;
/// Records written per round trip.
const WRITE_BATCH: usize = 500;
/// How often records of sockets whose rooms changed are written.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// A restored socket to put back on the delivery task.
pub(super) struct Resume {
    pub nsp: Arc<Namespace>,
    pub socket: Arc<Socket>,
    pub rooms: Vec<Room>,
    pub restored: Restored,
    pub connect: Packet,
    pub done: oneshot::Sender<()>,
}

/// The [`Recovery`] the Redis Streams adapter gives the gateway.
pub(super) struct StreamsRecovery {
    pub settings: RecoverySettings,
    pub conn: RedisConnection,
    /// Each served namespace's stream key.
    pub keys: HashMap<String, String>,
    pub resumes: mpsc::Sender<Resume>,
    pub records: mpsc::Sender<(String, Option<Vec<u8>>)>,
    pub gateway: Arc<Gateway>,
}

impl Recovery for StreamsRecovery {
    fn restore<'a>(&'a self, nsp: &'a str, pid: &'a str, offset: &'a str) -> BoxFuture<'a, Result<Restored, Outcome>> {
        Box::pin(self.restore_now(nsp, pid, offset))
    }

    fn resume<'a>(
        &'a self,
        nsp: &'a Arc<Namespace>,
        socket: Arc<Socket>,
        rooms: Vec<Room>,
        restored: Restored,
        connect: Packet,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (done, resumed) = oneshot::channel();
            let resume = Resume {
                nsp: nsp.clone(),
                socket,
                rooms,
                restored,
                connect,
                done,
            };
            if self.resumes.send(resume).await.is_ok() {
                let _ = resumed.await;
            }
        })
    }

    fn closed(&self, socket: &Socket, recoverable: bool) {
        let Some(pid) = &socket.pid else { return };
        // The same socket id restored here meanwhile (a reconnect before this close was seen):
        // its record is the new socket's now.
        let replaced = self
            .gateway
            .namespace(&socket.nsp)
            .and_then(|nsp| nsp.socket(&socket.id))
            .is_some_and(|live| !std::ptr::eq(Arc::as_ptr(&live), socket));
        if replaced {
            return;
        }
        let rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
        let record = recoverable.then(|| record_of(socket, pid, &rooms).encode());
        let key = format!("{}{pid}", self.settings.key_prefix);
        if self.records.try_send((key, record)).is_err() {
            self.gateway.metrics.inc(RecoveryRecord::QueueFull);
        }
    }
}

impl StreamsRecovery {
    /// Node's restore (one-shot GETDEL of the record, the offset must still be in the stream),
    /// then the missed events of `nsp` in batches, at most `max_replay`.
    async fn restore_now(&self, nsp: &str, pid: &str, offset: &str) -> Result<Restored, Outcome> {
        // Node checks the offset before touching Redis.
        let offset = StreamId::parse(offset).ok_or(Outcome::BadOffset)?;
        let key = self.keys.get(nsp).ok_or(Outcome::Unavailable)?;
        let mut conn = self.conn.clone();
        let record_key = format!("{}{pid}", self.settings.key_prefix);
        let mut getdel = conn.clone();
        let mut take = redis::cmd("GETDEL");
        take.arg(&record_key);
        let mut exact = redis::cmd("XRANGE");
        exact.arg(key).arg(offset.to_string()).arg(offset.to_string());
        // In parallel, as Node: the record is taken whether or not the offset is still there.
        let (record, exact) = tokio::join!(
            take.query_async::<Option<Vec<u8>>>(&mut getdel),
            exact.query_async::<Vec<(String, Vec<Vec<u8>>)>>(&mut conn)
        );
        let unavailable = |err: redis::RedisError| {
            tracing::warn!(error = %err, "recovery: Redis did not answer; a fresh socket instead");
            Outcome::Unavailable
        };
        let record = record.map_err(unavailable)?.ok_or(Outcome::Expired)?;
        let record = SessionRecord::decode(&record).map_err(|err| {
            tracing::warn!(error = %err, key = %record_key, "recovery: unreadable session record");
            Outcome::Expired
        })?;
        if exact.map_err(unavailable)?.is_empty() {
            return Err(Outcome::Trimmed);
        }
        let mut rooms = record.rooms.clone();
        let mut replay = Vec::new();
        let mut until = offset;
        loop {
            let batch = range(&mut conn, key, until, None, REPLAY_BATCH)
                .await
                .map_err(unavailable)?;
            let Some((last, _)) = batch.last() else { break };
            let last = *last;
            for (id, fields) in &batch {
                if let Some(event) = replayed(fields, *id, nsp, &mut rooms) {
                    replay.push(event);
                }
            }
            if replay.len() > self.settings.max_replay {
                return Err(Outcome::TooMany);
            }
            until = last;
            if batch.len() < REPLAY_BATCH {
                break;
            }
        }
        Ok(Restored {
            sid: record.sid,
            pid: record.pid,
            rooms,
            data: crate::protocol::adapter::to_client_args(std::slice::from_ref(&record.data))
                .0
                .into_iter()
                .next()
                .unwrap_or_default(),
            replay,
            until,
        })
    }
}

/// What a stream entry gives a socket of `nsp` in `rooms` on replay: a broadcast it was
/// selected by (as Node filters: any of its rooms, none of the excepted ones), as
/// `[event, …args, offset]`; a peer's join or leave that selected it changes `rooms` (beyond
/// Node, which keeps the rooms of the disconnect).
pub(super) fn replayed(fields: &[Vec<u8>], id: StreamId, nsp: &str, rooms: &mut Vec<String>) -> Option<Vec<Mp>> {
    let envelope = streams::decode_entry(pairs(fields)).ok()??;
    if envelope.nsp.as_deref() != Some(nsp) {
        return None;
    }
    let selected = |selector: &crate::protocol::adapter::Selector, rooms: &[String]| {
        (selector.rooms.is_empty() || selector.rooms.iter().any(|r| rooms.contains(r)))
            && !selector.except.iter().any(|r| rooms.contains(r))
    };
    match envelope.message {
        Message::Broadcast {
            mut broadcast,
            request_id: None,
        } if selected(&broadcast.selector, rooms) => {
            broadcast.data.push(Mp::from(id.to_string()));
            Some(broadcast.data)
        }
        Message::SocketsJoin {
            selector,
            rooms: joined,
        } if selected(&selector, rooms) => {
            for room in joined {
                if !rooms.contains(&room) {
                    rooms.push(room);
                }
            }
            None
        }
        Message::SocketsLeave { selector, rooms: left } if selected(&selector, rooms) => {
            rooms.retain(|room| !left.contains(room));
            None
        }
        _ => None,
    }
}

/// The client packet of a replayed event.
pub(super) fn replay_packet(nsp: &str, event: &[Mp]) -> Packet {
    let (args, attachments) = to_client_args(event);
    Packet::event(nsp, args, attachments)
}

fn record_of(socket: &Socket, pid: &str, rooms: &[String]) -> SessionRecord {
    SessionRecord {
        sid: socket.id.to_string(),
        pid: pid.to_owned(),
        rooms: rooms.to_vec(),
        data: from_client_value(&socket.data(), &[]),
    }
}

/// Writes records for the life of the node: closes as they come (in order), sockets whose rooms
/// changed every [`WRITE_EVERY`], and every live socket's again every refresh period.
pub(super) async fn write_records(
    gateway: Arc<Gateway>,
    conn: RedisConnection,
    settings: RecoverySettings,
    mut closes: mpsc::Receiver<(String, Option<Vec<u8>>)>,
    stop: tokio_util::sync::CancellationToken,
) {
    let refresh = settings.refresh_every();
    let live_ttl = settings.window + refresh;
    let mut tick = tokio::time::interval(WRITE_EVERY);
    let mut last_refresh = tokio::time::Instant::now();
    loop {
        let mut batch: Vec<(String, Option<Vec<u8>>, Duration)> = Vec::new();
        tokio::select! {
            close = closes.recv() => match close {
                Some((key, record)) => batch.push((key, record, settings.window)),
                None => return,
            },
            // The node stops after its sockets closed (a drain): their records go out first.
            () = stop.cancelled() => {
                let mut last = Vec::new();
                while let Ok((key, record)) = closes.try_recv() {
                    last.push((key, record, settings.window));
                }
                for chunk in last.chunks(WRITE_BATCH) {
                    write(&gateway, &conn, chunk).await;
                }
                return;
            }
            _ = tick.tick() => {
                let everyone = last_refresh.elapsed() >= refresh;
                if everyone {
                    last_refresh = tokio::time::Instant::now();
                }
                for nsp in gateway.namespaces() {
                    for socket in nsp.select(&[] as &[&str], &[] as &[&str]) {
                        let Some(pid) = &socket.pid else { continue };
                        if socket.take_record_dirty() || everyone {
                            let rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
                            let key = format!("{}{pid}", settings.key_prefix);
                            batch.push((key, Some(record_of(&socket, pid, &rooms).encode()), live_ttl));
                        }
                    }
                }
            }
        }
        while batch.len() < WRITE_BATCH {
            match closes.try_recv() {
                Ok((key, record)) => batch.push((key, record, settings.window)),
                Err(_) => break,
            }
        }
        for chunk in batch.chunks(WRITE_BATCH) {
            write(&gateway, &conn, chunk).await;
        }
    }
}

async fn write(gateway: &Gateway, conn: &RedisConnection, batch: &[(String, Option<Vec<u8>>, Duration)]) {
    let commands = batch.iter().map(|(key, record, ttl)| {
        let command = match record {
            Some(bytes) => {
                let mut set = redis::cmd("SET");
                set.arg(key).arg(bytes.as_slice()).arg("PX").arg(ttl.as_millis() as u64);
                set
            }
            None => {
                let mut del = redis::cmd("DEL");
                del.arg(key);
                del
            }
        };
        let mut conn = conn.clone();
        async move {
            let written = command.query_async::<redis::Value>(&mut conn).await;
            (record.is_some(), written)
        }
    });
    // Sent together: a multiplexed connection pipelines them, a cluster connection spreads them
    // over the masters owning their keys.
    for (is_write, result) in futures_util::future::join_all(commands).await {
        let label = match (is_write, result) {
            (_, Err(err)) => {
                tracing::warn!(error = %err, "recovery record not written; sockets of this node may not recover");
                RecoveryRecord::Failed
            }
            (true, Ok(_)) => RecoveryRecord::Written,
            (false, Ok(_)) => RecoveryRecord::Deleted,
        };
        gateway.metrics.inc(label);
    }
}
