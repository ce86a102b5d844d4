//! The sharded adapter protocol (`createShardedAdapter`, Redis 7+): SPUBLISH/SSUBSCRIBE on
//! `<prefix>#<nsp>#` and, in the dynamic subscription modes, one channel per room with members
//! on this node; `{type, data, uid, nsp}` messages; answers on the requester's own channel.
//!
//! Owns this protocol's channels, which rooms get channels of their own, and the mapping of
//! its messages onto the adapter core; the bytes are [`crate::protocol::sharded`]'s.

use super::core::{remote_socket, Command, Core, Local, Operation};
use super::driver::Subscriber;
use crate::protocol::adapter::{Broadcast, Selector};
use crate::protocol::sharded::{self, encode, Encoding, Message, ShardedChannels, SubscriptionMode};
use serde_json::Value;

/// The channels this node subscribes to for `local`: the base channel and its own response
/// channel, exactly once each (Node counts servers by the base channel's subscribers), and in
/// the dynamic modes the channel of every room with members here.
pub(super) async fn subscribe(
    subscriber: &mut Subscriber,
    channels: &ShardedChannels,
    mode: SubscriptionMode,
    local: &Local,
) -> redis::RedisResult<()> {
    subscriber.subscribe(&channels.base).await?;
    subscriber.subscribe(&channels.response_for(&local.uid)).await?;
    if mode != SubscriptionMode::Static {
        for room in local.nsp.watched_rooms(mode.subscribes(true)) {
            subscriber.subscribe(&channels.room(&room)).await?;
        }
    }
    Ok(())
}

/// Where this node's own broadcast (or the emitter's, with uid `emitter`) is published.
pub(super) fn broadcast(
    channels: &ShardedChannels,
    mode: SubscriptionMode,
    message: &Broadcast,
    uid: &str,
) -> (String, Vec<u8>) {
    (
        channels.for_broadcast(mode, &message.selector.rooms),
        encode::broadcast(message, uid, None).bytes(),
    )
}

/// A request to every node, on the base channel.
pub(super) fn command(
    channels: &ShardedChannels,
    uid: &str,
    nsp: &str,
    selector: &Selector,
    command: &Command<'_>,
) -> (String, Vec<u8>) {
    (channels.base.clone(), outgoing(uid, nsp, selector, command).bytes())
}

/// The message of a request to every node.
pub(super) fn outgoing(uid: &str, nsp: &str, selector: &Selector, command: &Command<'_>) -> sharded::Outgoing {
    match command {
        Command::Join(rooms) => encode::sockets_join(uid, nsp, selector, rooms, true),
        Command::Leave(rooms) => encode::sockets_join(uid, nsp, selector, rooms, false),
        Command::Disconnect { close } => encode::disconnect_sockets(uid, nsp, selector, *close),
        Command::ServerSideEmit(data) => encode::server_side_emit(uid, nsp, data),
    }
}

/// Whether this node is meant to be subscribed to shard channel `channel` now.
pub(super) fn wants(channels: &ShardedChannels, mode: SubscriptionMode, local: &Local, channel: &str) -> bool {
    if channel == channels.base {
        return true;
    }
    match channels.suffix_of(channel) {
        Some(suffix) if suffix == local.uid => true,
        Some(room) => mode != SubscriptionMode::Static && local.nsp.has_members(room),
        None => false,
    }
}

/// Handles a message on `channel` if it is one of `local`'s; returns whether it was. Answers
/// go out in `encoding` (the Redis Streams adapter's pub/sub reads only msgpack).
pub(super) async fn on_message(
    core: &Core,
    channels: &ShardedChannels,
    local: &Local,
    channel: &str,
    payload: &[u8],
    encoding: Encoding,
) -> bool {
    if channel == channels.base {
        on_sharded(core, channels, local, None, payload, encoding).await;
        return true;
    }
    if let Some(suffix) = channels.suffix_of(channel) {
        // Responses to this node: it sends no requests, so none are awaited.
        if suffix != local.uid {
            on_sharded(core, channels, local, Some(suffix), payload, encoding).await;
        }
        return true;
    }
    false
}

/// A message from the base channel, or from `room`'s channel.
async fn on_sharded(
    core: &Core,
    channels: &ShardedChannels,
    local: &Local,
    room: Option<&str>,
    payload: &[u8],
    encoding: Encoding,
) {
    // A room channel for a room nobody here is in any more: nothing to decode.
    if room.is_some_and(|room| !local.nsp.has_members(room)) {
        return;
    }
    let envelope = match sharded::decode(payload) {
        Ok(envelope) => envelope,
        Err(err) => {
            let channel = room.map_or_else(|| channels.base.clone(), |r| channels.room(r));
            return core.dropped(&channel, &err);
        }
    };
    // As socket.io-adapter: our own messages, and messages without our namespace, are not for
    // us (Node drops those without `nsp` too).
    let Some(sender) = envelope.uid.filter(|uid| *uid != local.uid) else {
        return;
    };
    if envelope.nsp.as_deref() != Some(&*local.nsp.name) {
        return;
    }
    on_peer_message(core, local, channels.response_for(&sender), envelope.message, encoding).await;
}

/// What a peer's message does here; answers go to `reply_to` in `encoding`. Shared with the
/// Redis Streams adapter, whose messages are the same (only their carriers differ).
pub(super) async fn on_peer_message(
    core: &Core,
    local: &Local,
    reply_to: String,
    message: Message,
    encoding: Encoding,
) {
    core.handled(message.label());
    let nsp = &local.nsp;
    match message {
        Message::Broadcast {
            broadcast,
            request_id: None,
        } => core.deliver(nsp, &broadcast).await,
        Message::Broadcast {
            broadcast,
            request_id: Some(request_id),
        } => {
            let (uid, name, id) = (local.uid.clone(), nsp.name.clone(), request_id.clone());
            core.broadcast_with_ack(
                nsp,
                broadcast,
                reply_to,
                |count| encode::client_count(&local.uid, &nsp.name, &request_id, count).encode(encoding),
                move |first| encode::broadcast_ack(&uid, &name, &id, first).encode(encoding),
            );
        }
        Message::SocketsJoin { selector, rooms } => core.apply(nsp, &selector, Operation::Join(&rooms)).await,
        Message::SocketsLeave { selector, rooms } => core.apply(nsp, &selector, Operation::Leave(&rooms)).await,
        Message::DisconnectSockets { selector, close } => {
            core.apply(nsp, &selector, Operation::Disconnect { close }).await
        }
        Message::FetchSockets { selector, request_id } => {
            let (shared, uid, name) = (nsp.clone(), local.uid.clone(), nsp.name.clone());
            let build = move || {
                let sockets = shared.select(&selector.rooms, &selector.except);
                let sockets = sockets.iter().map(|s| remote_socket(s)).collect();
                encode::fetch_sockets_response(&uid, &name, &request_id, sockets).encode(encoding)
            };
            core.respond_later(build, &reply_to);
        }
        Message::ServerSideEmit { request_id, .. } => {
            // No server-side handlers run here; an ack request is answered without a value, so
            // the Node caller gets every server's answer instead of waiting for its timeout.
            if let Some(id) = request_id {
                let bytes = encode::server_side_emit_response(&local.uid, &nsp.name, &id, Value::Null).encode(encoding);
                core.respond(&reply_to, bytes);
            }
        }
        Message::Ignored(_) => {}
    }
}
