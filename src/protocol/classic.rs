//! The classic adapter's wire format (`createAdapter` of `@socket.io/redis-adapter` 8.x, and
//! `@socket.io/redis-emitter` 5.x): channel names, requests and responses. Broadcast messages
//! and the decoding helpers are shared with the other protocols in [`super::adapter`].
//!
//! Pure: bytes in, typed values out, and back; anything unexpected is an [`AdapterError`].

use super::adapter::{
    decode_json_or_msgpack, encode_msgpack, flags, get, room_name, rooms, selector, str_field, AdapterError, Broadcast,
    Selector,
};
use crate::metrics::AdapterMessage;
use rmpv::Value as Mp;
use serde_json::Value as Json;

/// Channel names of one namespace under a key prefix (`socket.io` by default).
#[derive(Debug, Clone)]
pub struct Channels {
    /// `<prefix>#<nsp>#`: broadcasts to everyone or to several rooms.
    pub broadcast: String,
    /// `<prefix>-request#<nsp>#`
    pub request: String,
    /// `<prefix>-response#<nsp>#`
    pub response: String,
}

impl Channels {
    pub fn new(prefix: &str, nsp: &str) -> Self {
        Channels {
            broadcast: format!("{prefix}#{nsp}#"),
            request: format!("{prefix}-request#{nsp}#"),
            response: format!("{prefix}-response#{nsp}#"),
        }
    }

    /// `<prefix>#<nsp>#*`: every broadcast channel of the namespace.
    pub fn broadcast_pattern(&self) -> String {
        format!("{}*", self.broadcast)
    }

    /// `<prefix>-response#<nsp>#<uid>#`: responses addressed to one node.
    pub fn response_for(&self, uid: &str) -> String {
        format!("{}{uid}#", self.response)
    }

    /// Where a broadcast to `rooms` is published: the room's own channel (with its trailing `#`)
    /// for exactly one room, else the namespace channel.
    pub fn for_rooms(&self, rooms: &[String]) -> String {
        match rooms {
            [room] => format!("{}{room}#", self.broadcast),
            _ => self.broadcast.clone(),
        }
    }

    /// The room a broadcast channel names: `Some("")` for the namespace channel, `None` for a
    /// channel of another namespace. Like Node, the last character is dropped blindly.
    pub fn room_of<'c>(&self, channel: &'c str) -> Option<&'c str> {
        let rest = channel.strip_prefix(self.broadcast.as_str())?;
        Some(rest.get(..rest.len().saturating_sub(1)).unwrap_or(""))
    }
}

/// Request types of the classic adapter (8.x codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    Sockets = 0,
    AllRooms = 1,
    RemoteJoin = 2,
    RemoteLeave = 3,
    RemoteDisconnect = 4,
    RemoteFetch = 5,
    ServerSideEmit = 6,
    Broadcast = 7,
    BroadcastClientCount = 8,
    BroadcastAck = 9,
}

impl RequestType {
    fn from_code(code: i64) -> Option<Self> {
        use RequestType::*;
        Some(match code {
            0 => Sockets,
            1 => AllRooms,
            2 => RemoteJoin,
            3 => RemoteLeave,
            4 => RemoteDisconnect,
            5 => RemoteFetch,
            6 => ServerSideEmit,
            7 => Broadcast,
            8 => BroadcastClientCount,
            9 => BroadcastAck,
            _ => return None,
        })
    }

    /// The `wsgate_adapter_messages_total` label it is counted under.
    pub fn label(self) -> AdapterMessage {
        match self {
            RequestType::Sockets => AdapterMessage::Sockets,
            RequestType::AllRooms => AdapterMessage::AllRooms,
            RequestType::RemoteJoin => AdapterMessage::RemoteJoin,
            RequestType::RemoteLeave => AdapterMessage::RemoteLeave,
            RequestType::RemoteDisconnect => AdapterMessage::RemoteDisconnect,
            RequestType::RemoteFetch => AdapterMessage::RemoteFetch,
            RequestType::ServerSideEmit => AdapterMessage::ServerSideEmit,
            RequestType::Broadcast => AdapterMessage::Broadcast,
            RequestType::BroadcastClientCount => AdapterMessage::BroadcastClientCount,
            RequestType::BroadcastAck => AdapterMessage::BroadcastAck,
        }
    }
}

/// A message on a request channel. Fields a type does not use are empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub kind: RequestType,
    pub uid: Option<String>,
    pub request_id: Option<String>,
    /// `opts` (current form); `None` for the legacy per-socket form.
    pub selector: Option<Selector>,
    /// Rooms to join or leave (REMOTE_JOIN/LEAVE), or the rooms of a SOCKETS request.
    pub rooms: Vec<String>,
    pub close: bool,
    /// Legacy per-socket form: `sid` and `room`.
    pub sid: Option<String>,
    pub room: Option<String>,
    /// SERVER_SIDE_EMIT arguments.
    pub data: Vec<Mp>,
    /// BROADCAST (with acks): the broadcast itself.
    pub broadcast: Option<Broadcast>,
}

impl Request {
    /// Requests are JSON when the first byte is `{`, msgpack otherwise (as Node decides).
    pub fn decode(bytes: &[u8]) -> Result<Self, AdapterError> {
        let value = decode_json_or_msgpack(bytes)?;
        let map = value.as_map().ok_or(AdapterError::Shape("request is not a map"))?;
        let code = get(map, "type")
            .and_then(Mp::as_i64)
            .ok_or(AdapterError::Shape("request has no type"))?;
        let kind = RequestType::from_code(code).ok_or(AdapterError::UnknownType(code))?;
        let broadcast = match (kind, get(map, "packet").and_then(Mp::as_map)) {
            (RequestType::Broadcast, Some(packet)) => {
                let data = get(packet, "data").and_then(Mp::as_array).filter(|d| !d.is_empty());
                let data = data.ok_or(AdapterError::Shape("broadcast packet has no data"))?.clone();
                Some(Broadcast {
                    uid: str_field(map, "uid"),
                    nsp: str_field(packet, "nsp").unwrap_or_else(|| "/".into()),
                    data,
                    selector: selector(get(map, "opts")),
                    flags: flags(get(map, "opts")),
                })
            }
            (RequestType::Broadcast, None) => return Err(AdapterError::Shape("broadcast request has no packet")),
            _ => None,
        };
        Ok(Request {
            kind,
            uid: str_field(map, "uid"),
            request_id: get(map, "requestId").and_then(room_name),
            selector: get(map, "opts").filter(|o| o.is_map()).map(|o| selector(Some(o))),
            rooms: rooms(get(map, "rooms")),
            close: get(map, "close").and_then(Mp::as_bool).unwrap_or(false),
            sid: str_field(map, "sid"),
            room: get(map, "room").and_then(room_name),
            data: get(map, "data").and_then(Mp::as_array).cloned().unwrap_or_default(),
            broadcast,
        })
    }
}

/// Requests and responses a node publishes, encoded as Node encodes them.
pub mod encode {
    use super::*;
    use crate::protocol::adapter::to_client_args;
    use serde_json::json;

    fn selector_json(s: &Selector) -> Json {
        json!({ "rooms": s.rooms, "except": s.except })
    }

    /// REMOTE_JOIN (`socketsJoin`), as the emitter sends it (no uid).
    pub fn sockets_join(selector: &Selector, rooms: &[String]) -> Vec<u8> {
        json!({ "type": 2, "opts": selector_json(selector), "rooms": rooms })
            .to_string()
            .into_bytes()
    }

    /// REMOTE_LEAVE (`socketsLeave`).
    pub fn sockets_leave(selector: &Selector, rooms: &[String]) -> Vec<u8> {
        json!({ "type": 3, "opts": selector_json(selector), "rooms": rooms })
            .to_string()
            .into_bytes()
    }

    /// REMOTE_DISCONNECT (`disconnectSockets(close)`).
    pub fn disconnect_sockets(selector: &Selector, close: bool) -> Vec<u8> {
        json!({ "type": 4, "opts": selector_json(selector), "close": close })
            .to_string()
            .into_bytes()
    }

    /// SERVER_SIDE_EMIT without ack. JSON, so binary arguments do not survive (as in Node).
    pub fn server_side_emit(uid: &str, data: &[Mp]) -> Vec<u8> {
        let (args, _) = to_client_args(data);
        json!({ "uid": uid, "type": 6, "data": args }).to_string().into_bytes()
    }

    /// Answer to SOCKETS.
    pub fn sockets_response(request_id: &str, socket_ids: &[String]) -> Vec<u8> {
        json!({ "requestId": request_id, "sockets": socket_ids })
            .to_string()
            .into_bytes()
    }

    /// Answer to ALL_ROOMS.
    pub fn all_rooms_response(request_id: &str, rooms: &[String]) -> Vec<u8> {
        json!({ "requestId": request_id, "rooms": rooms })
            .to_string()
            .into_bytes()
    }

    /// Answer to REMOTE_FETCH: `sockets` are `{id, handshake, rooms, data}` objects.
    pub fn fetch_response(request_id: &str, sockets: Vec<Json>) -> Vec<u8> {
        json!({ "requestId": request_id, "sockets": sockets })
            .to_string()
            .into_bytes()
    }

    /// Answer to a legacy per-socket REMOTE_JOIN/LEAVE/DISCONNECT.
    pub fn done_response(request_id: &str) -> Vec<u8> {
        json!({ "requestId": request_id }).to_string().into_bytes()
    }

    /// Answer to SERVER_SIDE_EMIT with an ack.
    pub fn server_side_emit_response(request_id: &str, data: Json) -> Vec<u8> {
        json!({ "type": 6, "requestId": request_id, "data": data })
            .to_string()
            .into_bytes()
    }

    /// BROADCAST_CLIENT_COUNT (JSON, sent even for 0).
    pub fn client_count(request_id: &str, count: usize) -> Vec<u8> {
        json!({ "type": 8, "requestId": request_id, "clientCount": count })
            .to_string()
            .into_bytes()
    }

    /// BROADCAST_ACK (msgpack): `packet` is the first argument of the client's ack.
    pub fn broadcast_ack(request_id: &str, packet: Mp) -> Vec<u8> {
        encode_msgpack(&Mp::Map(vec![
            (Mp::from("type"), Mp::from(9)),
            (Mp::from("requestId"), Mp::from(request_id)),
            (Mp::from("packet"), packet),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::adapter::tests::hex;
    use crate::protocol::adapter::to_client_args;

    #[test]
    fn requests_decode_from_json_and_msgpack() {
        let r = Request::decode(br#"{"uid":"i52Bv0","type":2,"opts":{"rooms":[],"except":[]},"rooms":["x"]}"#).unwrap();
        assert_eq!(
            (r.kind, r.rooms.as_slice()),
            (RequestType::RemoteJoin, &["x".to_string()][..])
        );
        assert_eq!(r.selector, Some(Selector::default()));
        let r = Request::decode(br#"{"type":4,"opts":{"rooms":["room1",5],"except":[]},"close":true}"#).unwrap();
        assert!(r.close);
        assert_eq!(r.selector.unwrap().rooms, vec!["room1", "5"]);
        let r = Request::decode(br#"{"uid":"i52Bv0","requestId":"uiVdY1","type":6,"data":["ping-server",3]}"#).unwrap();
        assert_eq!((r.request_id.as_deref(), r.data.len()), (Some("uiVdY1"), 2));

        // Observed BROADCAST with ack: io.timeout(1000).emit("ack-ev", 7, cb)
        let bytes = hex("85 a3 756964 a6 693532427630 a9 7265717565737449 64 a6 6f49626e445a a4 74797065 07 a6 7061636b6574 83 a4 74797065 02 a4 64617461 92 a6 61636b2d6576 07 a3 6e7370 a1 2f a4 6f707473 83 a5 726f6f6d73 90 a6 657863657074 90 a5 666c616773 81 a7 74696d656f7574 cd 03e8");
        let r = Request::decode(&bytes).unwrap();
        assert_eq!(
            (r.kind, r.request_id.as_deref()),
            (RequestType::Broadcast, Some("oIbnDZ"))
        );
        let b = r.broadcast.unwrap();
        assert_eq!(b.timeout_ms(), Some(1000));
        assert_eq!(to_client_args(&b.data).0, vec![Json::from("ack-ev"), Json::from(7)]);
    }

    #[test]
    fn room_channels() {
        let c = Channels::new("socket.io", "/");
        assert_eq!(c.for_rooms(&["room1".into()]), "socket.io#/#room1#");
        assert_eq!(c.for_rooms(&["a".into(), "b".into()]), "socket.io#/#");
        assert_eq!(c.room_of("socket.io#/#room1#"), Some("room1"));
        assert_eq!(c.room_of("socket.io#/#"), Some(""));
        assert_eq!(c.room_of("socket.io#/admin#"), None);
        assert_eq!(c.broadcast_pattern(), "socket.io#/#*");
        assert_eq!(c.response_for("AbC123"), "socket.io-response#/#AbC123#");
        assert_eq!(Channels::new("k", "/admin").request, "k-request#/admin#");
    }
}
