//! The sharded Redis adapter's wire format: what `createShardedAdapter` of
//! `@socket.io/redis-adapter` (8.2+, SPUBLISH/SSUBSCRIBE) and socket.io-adapter's
//! `ClusterAdapter` put on shard channels. Pure: no I/O.
//!
//! Every message is an envelope `{type, data, uid, nsp}` (keys in that order), `JSON.stringify`d,
//! except messages whose `data` holds binary, which are notepack msgpack of the same object; a
//! receiver tells them apart by the first byte (`{`). The types are socket.io-adapter's
//! `MessageType`, not the classic adapter's request codes.

use super::adapter::{
    decode_json_or_msgpack, encode_msgpack, flags, from_client_value, get, room_name, rooms, selector, to_client_args,
    AdapterError, Broadcast, Selector,
};
use crate::metrics::AdapterMessage;
use rmpv::Value as Mp;
use serde_json::{json, Value as Json};

/// Where a namespace's messages go: `<prefix>#<nsp>#` for everything, `<prefix>#<nsp>#<uid>#`
/// for responses to node `uid`, `<prefix>#<nsp>#<room>#` for one room (dynamic modes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedChannels {
    pub base: String,
}

impl ShardedChannels {
    pub fn new(prefix: &str, nsp: &str) -> Self {
        ShardedChannels {
            base: format!("{prefix}#{nsp}#"),
        }
    }

    pub fn response_for(&self, uid: &str) -> String {
        format!("{}{uid}#", self.base)
    }

    pub fn room(&self, room: &str) -> String {
        format!("{}{room}#", self.base)
    }

    /// The channel a broadcast without ack to `rooms` goes on: the room's own channel when
    /// `mode` gives it one ([`SubscriptionMode::broadcast_room`]), else the base channel.
    pub fn for_broadcast(&self, mode: SubscriptionMode, rooms: &[String]) -> String {
        match mode.broadcast_room(rooms, false) {
            Some(room) => self.room(room),
            None => self.base.clone(),
        }
    }

    /// The room (or node uid) a channel of this namespace names; `None` for the base channel
    /// and for channels of other namespaces.
    pub fn suffix_of<'c>(&self, channel: &'c str) -> Option<&'c str> {
        channel
            .strip_prefix(self.base.as_str())?
            .strip_suffix('#')
            .filter(|s| !s.is_empty())
    }
}

/// Which rooms get channels of their own (`subscriptionMode`; every node must use the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionMode {
    /// Rooms other than sockets' own rooms (Node's default).
    #[default]
    Dynamic,
    /// Every room, sockets' own rooms included (8.3.0+).
    DynamicPrivate,
    /// None: everything goes through the base channel.
    Static,
}

/// Node's test for "this room is a socket id": a string of 20 UTF-16 code units.
pub fn looks_like_socket_id(room: &str) -> bool {
    room.encode_utf16().count() == 20
}

impl SubscriptionMode {
    /// Whether this node subscribes to `room`'s channel while it has members here.
    /// `own_socket_room`: the room is a local socket's own id.
    pub fn subscribes(self, own_socket_room: bool) -> bool {
        match self {
            SubscriptionMode::Dynamic => !own_socket_room,
            SubscriptionMode::DynamicPrivate => true,
            SubscriptionMode::Static => false,
        }
    }

    /// The room whose channel a BROADCAST goes on (`None`: the base channel), by Node's rule:
    /// only without an ack, to exactly one room, and in `dynamic` mode not to a room that looks
    /// like a socket id.
    pub fn broadcast_room(self, rooms: &[String], with_ack: bool) -> Option<&str> {
        let [room] = rooms else { return None };
        let room = room.as_str();
        match self {
            _ if with_ack => None,
            SubscriptionMode::Dynamic if !looks_like_socket_id(room) => Some(room),
            SubscriptionMode::DynamicPrivate => Some(room),
            _ => None,
        }
    }
}

/// socket.io-adapter's `MessageType`.
pub mod kind {
    pub const INITIAL_HEARTBEAT: i64 = 1;
    pub const HEARTBEAT: i64 = 2;
    pub const BROADCAST: i64 = 3;
    pub const SOCKETS_JOIN: i64 = 4;
    pub const SOCKETS_LEAVE: i64 = 5;
    pub const DISCONNECT_SOCKETS: i64 = 6;
    pub const FETCH_SOCKETS: i64 = 7;
    pub const FETCH_SOCKETS_RESPONSE: i64 = 8;
    pub const SERVER_SIDE_EMIT: i64 = 9;
    pub const SERVER_SIDE_EMIT_RESPONSE: i64 = 10;
    pub const BROADCAST_CLIENT_COUNT: i64 = 11;
    pub const BROADCAST_ACK: i64 = 12;
    pub const ADAPTER_CLOSE: i64 = 13;
}

/// A decoded message, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `uid` and `nsp` of the broadcast are the envelope's.
    Broadcast {
        broadcast: Broadcast,
        request_id: Option<String>,
    },
    SocketsJoin {
        selector: Selector,
        rooms: Vec<String>,
    },
    SocketsLeave {
        selector: Selector,
        rooms: Vec<String>,
    },
    DisconnectSockets {
        selector: Selector,
        close: bool,
    },
    FetchSockets {
        selector: Selector,
        request_id: String,
    },
    ServerSideEmit {
        request_id: Option<String>,
        packet: Vec<Mp>,
    },
    /// Responses, heartbeats and ADAPTER_CLOSE: this node sends no requests and counts servers
    /// by subscribers, so it reads none of them.
    Ignored(i64),
}

impl Message {
    /// The `wsgate_adapter_messages_total` label it is counted under.
    pub fn label(&self) -> AdapterMessage {
        match self {
            Message::Broadcast { request_id: None, .. } => AdapterMessage::Broadcast,
            Message::Broadcast { .. } => AdapterMessage::BroadcastWithAck,
            Message::SocketsJoin { .. } => AdapterMessage::SocketsJoin,
            Message::SocketsLeave { .. } => AdapterMessage::SocketsLeave,
            Message::DisconnectSockets { .. } => AdapterMessage::DisconnectSockets,
            Message::FetchSockets { .. } => AdapterMessage::FetchSockets,
            Message::ServerSideEmit { .. } => AdapterMessage::ServerSideEmit,
            Message::Ignored(_) => AdapterMessage::Response,
        }
    }
}

/// A message with its sender and namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub uid: Option<String>,
    pub nsp: Option<String>,
    pub message: Message,
}

/// A string (or number) field, as Node would read it.
fn text(value: Option<&Mp>) -> Option<String> {
    value.and_then(room_name)
}

/// Decodes what a shard channel carried, bounded as the classic adapter's messages are.
pub fn decode(bytes: &[u8]) -> Result<Envelope, AdapterError> {
    let value = decode_json_or_msgpack(bytes)?;
    let map = value.as_map().ok_or(AdapterError::Shape("message is not a map"))?;
    let code = get(map, "type")
        .and_then(Mp::as_i64)
        .ok_or(AdapterError::Shape("message has no type"))?;
    let data = get(map, "data").and_then(Mp::as_map).map(Vec::as_slice).unwrap_or(&[]);
    let uid = text(get(map, "uid"));
    let nsp = text(get(map, "nsp"));
    let message = message(code, data, uid.as_deref(), nsp.as_deref())?;
    Ok(Envelope { uid, nsp, message })
}

/// The message of type `code` with `data`, from sender `uid` in namespace `nsp`: what every
/// carrier of socket.io-adapter's `ClusterAdapter` messages (shard channels, Redis Streams
/// entries) decodes to.
pub fn message(code: i64, data: &[(Mp, Mp)], uid: Option<&str>, nsp: Option<&str>) -> Result<Message, AdapterError> {
    let request_id = || text(get(data, "requestId"));
    Ok(match code {
        kind::BROADCAST => {
            let packet = get(data, "packet")
                .and_then(Mp::as_map)
                .ok_or(AdapterError::Shape("broadcast without packet"))?;
            match get(packet, "type").and_then(Mp::as_i64) {
                Some(2 | 5) => {}
                _ => return Err(AdapterError::Shape("packet type is not EVENT")),
            }
            let args = get(packet, "data")
                .and_then(Mp::as_array)
                .filter(|d| !d.is_empty())
                .ok_or(AdapterError::Shape("packet data is not a non-empty array"))?
                .clone();
            Message::Broadcast {
                broadcast: Broadcast {
                    uid: uid.map(str::to_owned),
                    nsp: nsp.unwrap_or_default().to_owned(),
                    data: args,
                    selector: selector(get(data, "opts")),
                    flags: flags(get(data, "opts")),
                },
                request_id: request_id(),
            }
        }
        kind::SOCKETS_JOIN | kind::SOCKETS_LEAVE => {
            let selector = selector(get(data, "opts"));
            let rooms = rooms(get(data, "rooms"));
            if code == kind::SOCKETS_JOIN {
                Message::SocketsJoin { selector, rooms }
            } else {
                Message::SocketsLeave { selector, rooms }
            }
        }
        kind::DISCONNECT_SOCKETS => Message::DisconnectSockets {
            selector: selector(get(data, "opts")),
            close: get(data, "close").and_then(Mp::as_bool).unwrap_or(false),
        },
        kind::FETCH_SOCKETS => Message::FetchSockets {
            selector: selector(get(data, "opts")),
            request_id: request_id().ok_or(AdapterError::Shape("fetchSockets without requestId"))?,
        },
        kind::SERVER_SIDE_EMIT => Message::ServerSideEmit {
            request_id: request_id(),
            packet: get(data, "packet").and_then(Mp::as_array).cloned().unwrap_or_default(),
        },
        kind::INITIAL_HEARTBEAT..=kind::ADAPTER_CLOSE => Message::Ignored(code),
        other => return Err(AdapterError::UnknownType(other)),
    })
}

/// A message on its way out: its type, `data`, sender and namespace, before it is put in
/// bytes the way its carrier wants ([`Outgoing::bytes`], [`Outgoing::msgpack`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub code: i64,
    pub data: Mp,
    pub uid: String,
    pub nsp: String,
}

/// How a carrier puts an [`Outgoing`] message in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The sharded adapter: JSON unless `data` holds binary.
    JsonUnlessBinary,
    /// The Redis Streams adapter's pub/sub: always msgpack.
    Msgpack,
}

impl Outgoing {
    fn new(code: i64, data: Mp, uid: &str, nsp: &str) -> Self {
        Outgoing {
            code,
            data,
            uid: uid.into(),
            nsp: nsp.into(),
        }
    }

    /// Whether `data` holds binary anywhere (Node then sends msgpack).
    pub fn has_binary(&self) -> bool {
        fn binary(value: &Mp) -> bool {
            match value {
                Mp::Binary(_) => true,
                Mp::Array(items) => items.iter().any(binary),
                Mp::Map(pairs) => pairs.iter().any(|(k, v)| binary(k) || binary(v)),
                _ => false,
            }
        }
        binary(&self.data)
    }

    /// `data` as `JSON.stringify` writes it (binary only as placeholders: check
    /// [`Outgoing::has_binary`] first).
    pub fn data_json(&self) -> Json {
        let (json, _) = to_client_args(std::slice::from_ref(&self.data));
        json.into_iter().next().unwrap_or(Json::Null)
    }

    /// `{type, data, uid, nsp}`: JSON, or msgpack when `data` holds binary (only then, as Node).
    pub fn bytes(&self) -> Vec<u8> {
        if self.has_binary() {
            return self.msgpack();
        }
        json!({ "type": self.code, "data": self.data_json(), "uid": self.uid, "nsp": self.nsp })
            .to_string()
            .into_bytes()
    }

    /// `{type, data, uid, nsp}` in msgpack.
    pub fn msgpack(&self) -> Vec<u8> {
        encode_msgpack(&Mp::Map(vec![
            (Mp::from("type"), Mp::from(self.code)),
            (Mp::from("data"), self.data.clone()),
            (Mp::from("uid"), Mp::from(self.uid.as_str())),
            (Mp::from("nsp"), Mp::from(self.nsp.as_str())),
        ]))
    }

    /// The bytes `encoding` asks for.
    pub fn encode(&self, encoding: Encoding) -> Vec<u8> {
        match encoding {
            Encoding::JsonUnlessBinary => self.bytes(),
            Encoding::Msgpack => self.msgpack(),
        }
    }
}

/// Encoders: the messages a Node node sends for the same call.
pub mod encode {
    use super::*;

    fn list(rooms: &[String]) -> Mp {
        Mp::Array(rooms.iter().map(|r| Mp::from(r.as_str())).collect())
    }

    /// `encodeOptions`: `{rooms, except, flags}`.
    fn opts(selector: &Selector, flags: &[(Mp, Mp)]) -> Mp {
        Mp::Map(vec![
            (Mp::from("rooms"), list(&selector.rooms)),
            (Mp::from("except"), list(&selector.except)),
            (Mp::from("flags"), Mp::Map(flags.to_vec())),
        ])
    }

    fn map(pairs: Vec<(&str, Mp)>) -> Mp {
        Mp::Map(pairs.into_iter().map(|(k, v)| (Mp::from(k), v)).collect())
    }

    /// BROADCAST: `{packet: {type: 2, data}, [requestId], opts}`.
    pub fn broadcast(message: &Broadcast, uid: &str, request_id: Option<&str>) -> Outgoing {
        let packet = map(vec![("type", Mp::from(2)), ("data", Mp::Array(message.data.clone()))]);
        let mut data = vec![("packet", packet)];
        if let Some(id) = request_id {
            data.push(("requestId", Mp::from(id)));
        }
        data.push(("opts", opts(&message.selector, &message.flags)));
        Outgoing::new(kind::BROADCAST, map(data), uid, &message.nsp)
    }

    /// SOCKETS_JOIN (`join`) or SOCKETS_LEAVE: `{opts, rooms}`.
    pub fn sockets_join(uid: &str, nsp: &str, selector: &Selector, rooms: &[String], join: bool) -> Outgoing {
        let data = map(vec![("opts", opts(selector, &[])), ("rooms", list(rooms))]);
        let code = if join { kind::SOCKETS_JOIN } else { kind::SOCKETS_LEAVE };
        Outgoing::new(code, data, uid, nsp)
    }

    /// DISCONNECT_SOCKETS: `{opts, close}`.
    pub fn disconnect_sockets(uid: &str, nsp: &str, selector: &Selector, close: bool) -> Outgoing {
        let data = map(vec![("opts", opts(selector, &[])), ("close", Mp::from(close))]);
        Outgoing::new(kind::DISCONNECT_SOCKETS, data, uid, nsp)
    }

    /// SERVER_SIDE_EMIT without ack: `{packet: [event, ...args]}`.
    pub fn server_side_emit(uid: &str, nsp: &str, packet: &[Mp]) -> Outgoing {
        let data = map(vec![("packet", Mp::Array(packet.to_vec()))]);
        Outgoing::new(kind::SERVER_SIDE_EMIT, data, uid, nsp)
    }

    /// FETCH_SOCKETS_RESPONSE: `{requestId, sockets}`.
    pub fn fetch_sockets_response(uid: &str, nsp: &str, request_id: &str, sockets: Vec<Json>) -> Outgoing {
        let sockets = Mp::Array(sockets.iter().map(|s| from_client_value(s, &[])).collect());
        let data = map(vec![("requestId", Mp::from(request_id)), ("sockets", sockets)]);
        Outgoing::new(kind::FETCH_SOCKETS_RESPONSE, data, uid, nsp)
    }

    /// SERVER_SIDE_EMIT_RESPONSE: `{requestId, packet}` (the handler's answer).
    pub fn server_side_emit_response(uid: &str, nsp: &str, request_id: &str, packet: Json) -> Outgoing {
        let data = map(vec![
            ("requestId", Mp::from(request_id)),
            ("packet", from_client_value(&packet, &[])),
        ]);
        Outgoing::new(kind::SERVER_SIDE_EMIT_RESPONSE, data, uid, nsp)
    }

    /// BROADCAST_CLIENT_COUNT: `{requestId, clientCount}`.
    pub fn client_count(uid: &str, nsp: &str, request_id: &str, count: usize) -> Outgoing {
        let data = map(vec![
            ("requestId", Mp::from(request_id)),
            ("clientCount", Mp::from(count as u64)),
        ]);
        Outgoing::new(kind::BROADCAST_CLIENT_COUNT, data, uid, nsp)
    }

    /// BROADCAST_ACK: `{requestId, packet}`, `packet` the first argument of the client's ack.
    pub fn broadcast_ack(uid: &str, nsp: &str, request_id: &str, packet: Mp) -> Outgoing {
        let data = map(vec![("requestId", Mp::from(request_id)), ("packet", packet)]);
        Outgoing::new(kind::BROADCAST_ACK, data, uid, nsp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::adapter::tests::hex;

    #[test]
    fn channels_follow_node() {
        let c = ShardedChannels::new("socket.io", "/");
        assert_eq!(c.base, "socket.io#/#");
        assert_eq!(c.response_for("5982ec74e7d413ef"), "socket.io#/#5982ec74e7d413ef#");
        assert_eq!(c.room("room1"), "socket.io#/#room1#");
        assert_eq!(c.suffix_of("socket.io#/#room1#"), Some("room1"));
        assert_eq!(c.suffix_of("socket.io#/#"), None);
        assert_eq!(c.suffix_of("socket.io#/admin#r#"), None);
        // A room named with '#' is still one room.
        assert_eq!(c.suffix_of("socket.io#/#a#b#"), Some("a#b"));
    }

    #[test]
    fn publish_rule_is_nodes() {
        let one = |r: &str| vec![r.to_owned()];
        let sid = "abcdefghijklmnopqrst"; // 20 characters: taken for a socket id
        use SubscriptionMode::*;
        assert_eq!(Dynamic.broadcast_room(&one("room1"), false), Some("room1"));
        assert_eq!(Dynamic.broadcast_room(&one(sid), false), None);
        assert_eq!(DynamicPrivate.broadcast_room(&one(sid), false), Some(sid));
        assert_eq!(Static.broadcast_room(&one("room1"), false), None);
        assert_eq!(
            Dynamic.broadcast_room(&one("room1"), true),
            None,
            "acks count every server"
        );
        assert_eq!(Dynamic.broadcast_room(&["a".into(), "b".into()], false), None);
        assert_eq!(Dynamic.broadcast_room(&[], false), None);
        // JS counts UTF-16 units: "é" is one, "😀" is two.
        assert!(looks_like_socket_id(&"é".repeat(20)));
        assert!(looks_like_socket_id(&"😀".repeat(10)));
        assert!(!looks_like_socket_id(&"😀".repeat(20)));
        assert!(Dynamic.subscribes(false) && !Dynamic.subscribes(true));
        assert!(DynamicPrivate.subscribes(true) && !Static.subscribes(false));
    }

    #[test]
    fn broadcast_bytes_match_node() {
        // Observed from Node 8.3.0: io.emit("hello", 1).
        let node = br#"{"type":3,"data":{"packet":{"type":2,"data":["hello",1]},"opts":{"rooms":[],"except":[],"flags":{}}},"uid":"5982ec74e7d413ef","nsp":"/"}"#;
        let envelope = decode(node).unwrap();
        assert_eq!(envelope.uid.as_deref(), Some("5982ec74e7d413ef"));
        let Message::Broadcast {
            broadcast,
            request_id: None,
        } = &envelope.message
        else {
            panic!("{envelope:?}")
        };
        assert_eq!(broadcast.data, vec![Mp::from("hello"), Mp::from(1)]);
        assert_eq!(
            encode::broadcast(broadcast, "5982ec74e7d413ef", None).bytes(),
            node.to_vec()
        );

        // Observed: io.to("room1").emit("r", Buffer [1, 2]) on socket.io#/#room1#: msgpack.
        let bin = hex(
            "84 a474797065 03 a464617461 82 a67061636b6574 82 a474797065 02 a464617461 92 a172 c4020102
             a46f707473 83 a5726f6f6d73 91 a5726f6f6d31 a6657863657074 90 a5666c616773 80
             a3756964 b0 35393832656337346537643431336566 a36e7370 a12f",
        );
        let envelope = decode(&bin).unwrap();
        let Message::Broadcast { broadcast, .. } = &envelope.message else {
            panic!()
        };
        assert_eq!(broadcast.selector.rooms, vec!["room1".to_owned()]);
        assert_eq!(broadcast.data[1], Mp::Binary(vec![1, 2]));
        assert_eq!(encode::broadcast(broadcast, "5982ec74e7d413ef", None).bytes(), bin);
    }

    #[test]
    fn requests_and_responses() {
        let fetch = br#"{"type":7,"data":{"opts":{"rooms":["r"],"except":[],"flags":{}},"requestId":"2bd40a316fc7ca05"},"uid":"f35b182a6664941a","nsp":"/"}"#;
        let envelope = decode(fetch).unwrap();
        assert_eq!(
            envelope.message,
            Message::FetchSockets {
                selector: Selector {
                    rooms: vec!["r".into()],
                    except: vec![]
                },
                request_id: "2bd40a316fc7ca05".into()
            }
        );
        assert_eq!(
            encode::client_count("f35b182a6664941a", "/", "2bd40a316fc7ca05", 1).bytes(),
            br#"{"type":11,"data":{"requestId":"2bd40a316fc7ca05","clientCount":1},"uid":"f35b182a6664941a","nsp":"/"}"#.to_vec()
        );
        let join = encode::sockets_join("u", "/", &Selector::default(), &["r2".into()], true).bytes();
        assert_eq!(
            join,
            br#"{"type":4,"data":{"opts":{"rooms":[],"except":[],"flags":{}},"rooms":["r2"]},"uid":"u","nsp":"/"}"#
                .to_vec()
        );
        assert_eq!(
            decode(&join).unwrap().message,
            Message::SocketsJoin {
                selector: Selector::default(),
                rooms: vec!["r2".into()]
            }
        );
        // An ack carrying binary goes as msgpack.
        let ack = encode::broadcast_ack("u", "/", "id", Mp::Binary(vec![9])).bytes();
        assert_eq!(ack[0], 0x84);
        assert_eq!(decode(&ack).unwrap().message, Message::Ignored(kind::BROADCAST_ACK));
        for garbage in [
            &b""[..],
            b"{",
            b"\xc1",
            b"[1,2]",
            br#"{"type":99}"#,
            br#"{"type":3,"data":{}}"#,
        ] {
            assert!(decode(garbage).is_err(), "{garbage:?}");
        }
    }
}
