//! Connection state recovery as the gateway sees it: what a reconnecting client's `{pid, offset}`
//! can give back (its socket id, rooms and the events it missed), and which closes leave a
//! socket recoverable. The cluster adapter that keeps the records and the event log (the Redis
//! Streams adapter) plugs in through [`Recovery`]; the gateway decides who may recover (the
//! handshake is authenticated like any other, and the record must be the same user's).

use super::namespace::Namespace;
use super::socket::{Room, Socket};
use crate::metrics::Recovery as Outcome;
use crate::protocol::socketio::Packet;
use crate::protocol::streams::StreamId;
use crate::transport::CloseReason;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a recovery record and the event log give back.
#[derive(Debug)]
pub struct Restored {
    pub sid: String,
    pub pid: String,
    /// Every room the socket was in (its own id included), with the joins and leaves peers
    /// applied to it while it was away.
    pub rooms: Vec<String>,
    /// `socket.data` as it was (`{"user": …}` for a socket wsgate authenticated).
    pub data: serde_json::Value,
    /// The events it missed, in order, each `[event, …args, offset]`.
    pub replay: Vec<Vec<rmpv::Value>>,
    /// The last entry the replay looked at.
    pub until: StreamId,
}

/// Connection state recovery, provided by the cluster adapter.
pub trait Recovery: Send + Sync {
    /// Takes the record `pid` left (it is one-shot, as in Node) and reads the events of `nsp`
    /// after `offset`; `Err` says why the client gets a fresh socket instead.
    fn restore<'a>(&'a self, nsp: &'a str, pid: &'a str, offset: &'a str) -> BoxFuture<'a, Result<Restored, Outcome>>;

    /// Puts a restored socket back: the replay, then `connect` (the CONNECT reply), are queued
    /// to it, then it joins `rooms`, in the adapter's delivery order, so no event is missed or
    /// delivered twice between the replay and live delivery.
    fn resume<'a>(
        &'a self,
        nsp: &'a Arc<Namespace>,
        socket: Arc<Socket>,
        rooms: Vec<Room>,
        restored: Restored,
        connect: Packet,
    ) -> BoxFuture<'a, ()>;

    /// A socket with a pid closed: its record is written for the recovery window when the close
    /// is one a client recovers from, deleted otherwise.
    fn closed(&self, socket: &Socket, recoverable: bool);
}

/// Whether a client may recover after its connection ended this way, as Node's
/// `RECOVERABLE_DISCONNECT_REASONS` (transport close or error, ping timeout, shutdown); a parse
/// error or a server's disconnect (a logout among them) is final. A slow consumer recovers too:
/// what it could not take is replayed, bounded.
pub fn recoverable(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::ClientClose
            | CloseReason::TransportClose
            | CloseReason::TransportError
            | CloseReason::PingTimeout
            | CloseReason::SlowConsumer
            | CloseReason::ShuttingDown
    )
}

/// The `{pid, offset}` a reconnecting client puts in its CONNECT payload, when both are strings
/// (Node's condition).
pub fn requested(auth: Option<&serde_json::Value>) -> Option<(&str, &str)> {
    let auth = auth?;
    Some((auth.get("pid")?.as_str()?, auth.get("offset")?.as_str()?))
}
