//! The classic adapter protocol (`createAdapter` of `@socket.io/redis-adapter`, and
//! `@socket.io/redis-emitter`): PUBLISH/PSUBSCRIBE on `<prefix>#<nsp>#[room#]`, requests on
//! `<prefix>-request#<nsp>#`, responses on the shared response channel.
//!
//! Owns this protocol's channels, what this node subscribes to, and the mapping of its messages
//! onto the adapter core; the bytes are [`crate::protocol::classic`]'s. Knows nothing of other
//! protocols.

use super::core::{remote_socket, Command, Core, Local, Operation};
use super::driver::Subscriber;
use crate::metrics::AdapterMessage;
use crate::protocol::adapter::{AdapterError, Broadcast, Selector};
use crate::protocol::classic::{encode, Channels, Request, RequestType};
use serde_json::json;

/// The channels this node subscribes to for `local`: every broadcast channel of the namespace
/// (a pattern), the request channel and both response channels (Node counts servers by them).
pub(super) async fn subscribe(
    subscriber: &mut Subscriber,
    channels: &Channels,
    local: &Local,
) -> redis::RedisResult<()> {
    subscriber.psubscribe(&channels.broadcast_pattern()).await?;
    for channel in [
        &channels.request,
        &channels.response,
        &channels.response_for(&local.uid),
    ] {
        subscriber.subscribe(channel).await?;
    }
    Ok(())
}

/// Where this node's own broadcast is published, and its bytes (`from_emitter`: the field
/// order of `@socket.io/redis-emitter`).
pub(super) fn broadcast(channels: &Channels, message: &Broadcast, from_emitter: bool) -> (String, Vec<u8>) {
    (
        channels.for_rooms(&message.selector.rooms),
        message.encode(from_emitter),
    )
}

/// A request to every node, as the emitter sends it.
pub(super) fn command(channels: &Channels, uid: &str, selector: &Selector, command: &Command<'_>) -> (String, Vec<u8>) {
    let bytes = match command {
        Command::Join(rooms) => encode::sockets_join(selector, rooms),
        Command::Leave(rooms) => encode::sockets_leave(selector, rooms),
        Command::Disconnect { close } => encode::disconnect_sockets(selector, *close),
        Command::ServerSideEmit(data) => encode::server_side_emit(uid, data),
    };
    (channels.request.clone(), bytes)
}

/// Handles a message on `channel` if it is one of `local`'s; returns whether it was.
pub(super) async fn on_message(core: &Core, channels: &Channels, local: &Local, channel: &str, payload: &[u8]) -> bool {
    if let Some(room) = channels.room_of(channel) {
        on_broadcast(core, channels, local, room, payload).await;
        return true;
    }
    if channel == channels.request {
        on_request(core, channels, local, payload).await;
        return true;
    }
    // Responses: this node sends no requests of its own, so none are awaited.
    false
}

async fn on_broadcast(core: &Core, channels: &Channels, local: &Local, room: &str, payload: &[u8]) {
    // A room channel for a room nobody here is in: nothing to decode (as Node does).
    if !room.is_empty() && !local.nsp.has_members(room) {
        return;
    }
    let message = match Broadcast::decode(payload) {
        Ok(message) => message,
        Err(err) => return core.dropped(&channels.broadcast, &err),
    };
    if message.uid.as_deref() == Some(local.uid.as_str()) || message.nsp != *local.nsp.name {
        return;
    }
    core.handled(AdapterMessage::Broadcast);
    core.deliver(&local.nsp, &message).await;
}

async fn on_request(core: &Core, channels: &Channels, local: &Local, payload: &[u8]) {
    let request = match Request::decode(payload) {
        Ok(request) => request,
        Err(err) => return core.dropped(&channels.request, &err),
    };
    core.handled(request.kind.label());
    let nsp = &local.nsp;
    let response = &channels.response;
    let (shared, request_id) = (nsp.clone(), request.request_id.clone());
    let operation = match request.kind {
        RequestType::RemoteJoin => Some(Operation::Join(&request.rooms)),
        RequestType::RemoteLeave => Some(Operation::Leave(&request.rooms)),
        RequestType::RemoteDisconnect => Some(Operation::Disconnect { close: request.close }),
        _ => None,
    };
    if let Some(operation) = operation {
        match &request.selector {
            Some(selector) => core.apply(nsp, selector, operation).await,
            // The legacy per-socket form: `{sid, room, requestId}`, answered by the node
            // holding sid.
            None => {
                let (Some(socket), Some(id)) = (
                    request.sid.as_deref().and_then(|sid| nsp.socket(sid)),
                    &request.request_id,
                ) else {
                    return;
                };
                let room = request.room.clone().into_iter().collect::<Vec<_>>();
                let operation = match operation {
                    Operation::Join(_) => Operation::Join(&room),
                    Operation::Leave(_) => Operation::Leave(&room),
                    disconnect => disconnect,
                };
                core.apply_to(nsp, &socket, &operation);
                core.respond(response, encode::done_response(id));
            }
        }
        return;
    }
    match request.kind {
        RequestType::Sockets => {
            let Some(id) = request_id else { return };
            let selector = request.selector.clone().unwrap_or(Selector {
                rooms: request.rooms.clone(),
                except: vec![],
            });
            let build = move || {
                let sockets = shared.select(&selector.rooms, &selector.except);
                let ids: Vec<String> = sockets.iter().map(|s| s.id.to_string()).collect();
                encode::sockets_response(&id, &ids)
            };
            core.respond_later(build, response);
        }
        RequestType::AllRooms => {
            let Some(id) = request_id else { return };
            let build = move || {
                let rooms: Vec<String> = shared.all_rooms().iter().map(|r| r.to_string()).collect();
                encode::all_rooms_response(&id, &rooms)
            };
            core.respond_later(build, response);
        }
        RequestType::RemoteFetch => {
            let Some(id) = request_id else { return };
            let selector = request.selector.clone().unwrap_or_default();
            let build = move || {
                let sockets = shared.select(&selector.rooms, &selector.except);
                encode::fetch_response(&id, sockets.iter().map(|s| remote_socket(s)).collect())
            };
            core.respond_later(build, response);
        }
        RequestType::ServerSideEmit => {
            if request.uid.as_deref() == Some(local.uid.as_str()) {
                return;
            }
            // No server-side handlers run here; an ack request still gets its answer so the
            // Node caller does not wait for the timeout. Always the shared channel.
            if let Some(id) = &request.request_id {
                core.respond(response, encode::server_side_emit_response(id, json!([])));
            }
        }
        RequestType::Broadcast => {
            let (Some(request_id), Some(message)) = (request.request_id, request.broadcast) else {
                return core.dropped(
                    &channels.request,
                    &AdapterError::Shape("broadcast request without requestId"),
                );
            };
            if message.uid.as_deref() == Some(local.uid.as_str()) {
                return;
            }
            let id = request_id.clone();
            core.broadcast_with_ack(
                nsp,
                message,
                response.clone(),
                |count| encode::client_count(&request_id, count),
                move |first| encode::broadcast_ack(&id, first),
            );
        }
        RequestType::RemoteJoin
        | RequestType::RemoteLeave
        | RequestType::RemoteDisconnect
        | RequestType::BroadcastClientCount
        | RequestType::BroadcastAck => {}
    }
}
