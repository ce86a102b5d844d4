//! The Redis Streams adapter's wire format (`@socket.io/redis-streams-adapter` 0.3, and its
//! emitter), and the connection-state-recovery session records it keeps. Pure: no I/O.
//!
//! Broadcasts, joins, leaves and disconnects are stream entries with the fields `uid`, `nsp`,
//! `type` (decimal) and `data` (`JSON.stringify`, or base64 of msgpack when it holds binary);
//! requests and responses go on pub/sub as msgpack `{type, data, uid, nsp}` (the sharded
//! adapter's messages, [`super::sharded`]). A namespace's stream key is chosen by Java's
//! `String.hashCode`, negative indexes included, exactly as Node computes it.

use super::adapter::{decode_json_or_msgpack, encode_msgpack, get, room_name, AdapterError};
use super::sharded::{self, Envelope, Outgoing};
use base64::Engine as _;
use rmpv::Value as Mp;
use std::fmt;

/// Java's `String.hashCode` over UTF-16 code units, as the adapter's `hashCode`.
pub fn hash_code(text: &str) -> i32 {
    text.encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// The stream a namespace's entries are appended to: `name` with one stream, else
/// `name-<hashCode(nsp) % count>`, where JavaScript's `%` keeps the sign: a namespace can map to
/// `name--3`, which no Node reader reads (see [`is_read_by_node`]).
pub fn stream_key(name: &str, count: u32, nsp: &str) -> String {
    if count <= 1 {
        return name.to_owned();
    }
    format!("{name}-{}", stream_index(count, nsp))
}

fn stream_index(count: u32, nsp: &str) -> i64 {
    i64::from(hash_code(nsp)) % i64::from(count)
}

/// Whether Node nodes read the stream `nsp` is appended to (they read `name-0 … name-(count-1)`
/// only).
pub fn is_read_by_node(count: u32, nsp: &str) -> bool {
    count <= 1 || stream_index(count, nsp) >= 0
}

/// The streams Node nodes read: `name`, or `name-0 … name-(count-1)`.
pub fn read_keys(name: &str, count: u32) -> Vec<String> {
    if count <= 1 {
        return vec![name.to_owned()];
    }
    (0..count).map(|i| format!("{name}-{i}")).collect()
}

/// A stream entry id, `<ms>-<seq>`: the offset a client holds under recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// Parses an id as Node accepts an offset: `^[0-9]+-[0-9]+$` (and within u64).
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The id right after this one (`XRANGE` from here excludes this one).
    pub fn next(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Decodes a stream entry's fields (names looked up, order free). Entries without `nsp` are
/// not the adapter's: `Ok(None)`, as Node skips them.
pub fn decode_entry<'f>(
    fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
) -> Result<Option<Envelope>, AdapterError> {
    let (mut uid, mut nsp, mut code, mut data) = (None, None, None, None);
    for (name, value) in fields {
        match name {
            b"uid" => uid = Some(value),
            b"nsp" => nsp = Some(value),
            b"type" => code = Some(value),
            b"data" => data = Some(value),
            _ => {}
        }
    }
    let Some(nsp) = nsp else { return Ok(None) };
    let text = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_owned).ok();
    let nsp = text(nsp).ok_or(AdapterError::Shape("nsp is not text"))?;
    let uid = uid.and_then(text);
    let code: i64 = code
        .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
        .ok_or(AdapterError::Shape("entry has no numeric type"))?;
    let data = match data {
        None => Mp::Map(Vec::new()),
        Some(bytes) => decode_data(bytes)?,
    };
    let map = data.as_map().map(Vec::as_slice).unwrap_or(&[]);
    let message = sharded::message(code, map, uid.as_deref(), Some(&nsp))?;
    Ok(Some(Envelope {
        uid,
        nsp: Some(nsp),
        message,
    }))
}

/// An entry's `data`: JSON when it starts with `{`, else base64 of msgpack.
fn decode_data(bytes: &[u8]) -> Result<Mp, AdapterError> {
    if bytes.first() == Some(&b'{') {
        return decode_json_or_msgpack(bytes);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(bytes)
        .map_err(|_| AdapterError::NotMsgpack)?;
    decode_json_or_msgpack(&raw).and_then(|value| match raw.first() {
        // Base64 of JSON is not something Node writes.
        Some(b'{') => Err(AdapterError::NotMsgpack),
        _ => Ok(value),
    })
}

/// The fields of the entry a message is appended as: `uid`, `nsp`, `type`, `data`, in that
/// order; `data` is base64 msgpack when it holds binary, JSON otherwise.
pub fn entry_fields(message: &Outgoing) -> [(&'static str, Vec<u8>); 4] {
    let data = if message.has_binary() {
        base64::engine::general_purpose::STANDARD
            .encode(encode_msgpack(&message.data))
            .into_bytes()
    } else {
        message.data_json().to_string().into_bytes()
    };
    [
        ("uid", message.uid.clone().into_bytes()),
        ("nsp", message.nsp.clone().into_bytes()),
        ("type", message.code.to_string().into_bytes()),
        ("data", data),
    ]
}

/// A socket's recovery record (`sio:session:<pid>`): `{sid, pid, rooms, data}`, stored as base64
/// of msgpack, the rooms including the socket's own id.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub sid: String,
    pub pid: String,
    pub rooms: Vec<String>,
    /// `socket.data`, as msgpack.
    pub data: Mp,
}

/// Most bytes of a session record read back (a record is written by nodes of the cluster; this
/// bounds what a corrupted or hostile key can make a restore allocate).
pub const MAX_SESSION_RECORD_BYTES: usize = 1 << 20;

impl SessionRecord {
    pub fn encode(&self) -> Vec<u8> {
        let rooms = Mp::Array(self.rooms.iter().map(|r| Mp::from(r.as_str())).collect());
        let value = Mp::Map(vec![
            (Mp::from("sid"), Mp::from(self.sid.as_str())),
            (Mp::from("pid"), Mp::from(self.pid.as_str())),
            (Mp::from("rooms"), rooms),
            (Mp::from("data"), self.data.clone()),
        ]);
        base64::engine::general_purpose::STANDARD
            .encode(encode_msgpack(&value))
            .into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<SessionRecord, AdapterError> {
        if bytes.len() > MAX_SESSION_RECORD_BYTES {
            return Err(AdapterError::TooLarge(bytes.len()));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(bytes)
            .map_err(|_| AdapterError::NotMsgpack)?;
        if raw.first() == Some(&b'{') {
            return Err(AdapterError::NotMsgpack);
        }
        let value = decode_json_or_msgpack(&raw)?;
        let map = value.as_map().ok_or(AdapterError::Shape("session is not a map"))?;
        let text = |key| {
            get(map, key)
                .and_then(Mp::as_str)
                .map(str::to_owned)
                .ok_or(AdapterError::Shape("session without sid or pid"))
        };
        let rooms = get(map, "rooms")
            .and_then(Mp::as_array)
            .map(|rooms| rooms.iter().filter_map(room_name).collect())
            .unwrap_or_default();
        Ok(SessionRecord {
            sid: text("sid")?,
            pid: text("pid")?,
            rooms,
            data: get(map, "data").cloned().unwrap_or(Mp::Map(Vec::new())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::adapter::Selector;
    use crate::protocol::sharded::{encode, Message};

    #[test]
    fn stream_keys_are_nodes() {
        // Observed from Node (reference §2).
        assert_eq!(hash_code("/"), 47);
        assert_eq!(hash_code("/chat"), 46457863);
        assert_eq!(hash_code("/admin"), 1438238848);
        assert_eq!(hash_code("/notifications"), -1014064871);
        assert_eq!(hash_code("/dashboard"), -1694060731);
        assert_eq!(stream_key("socket.io", 1, "/chat"), "socket.io");
        assert_eq!(stream_key("socket.io", 4, "/notifications"), "socket.io--3");
        assert_eq!(stream_key("socket.io", 4, "/"), "socket.io-3");
        assert!(!is_read_by_node(4, "/notifications"));
        assert!(is_read_by_node(4, "/chat") && is_read_by_node(1, "/notifications"));
        assert_eq!(read_keys("s", 2), vec!["s-0".to_owned(), "s-1".to_owned()]);
        // UTF-16 code units, not bytes or chars.
        assert_eq!(hash_code("😀"), 0xD83D * 31 + 0xDE00);
    }

    #[test]
    fn offsets_parse_as_node_checks_them() {
        let id = StreamId::parse("1795305408689-0").unwrap();
        assert_eq!(
            id,
            StreamId {
                ms: 1795305408689,
                seq: 0
            }
        );
        assert_eq!(id.to_string(), "1795305408689-0");
        assert_eq!(id.next().to_string(), "1795305408689-1");
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-1-1",
            " 1-1",
            "1-+1",
            "99999999999999999999-0",
        ] {
            assert_eq!(StreamId::parse(bad), None, "{bad:?}");
        }
        assert!(StreamId::parse("2-0").unwrap() > StreamId::parse("1-9").unwrap());
    }

    fn fields(pairs: &[(&'static str, Vec<u8>)]) -> Vec<(&'static [u8], Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.as_bytes(), v.clone())).collect()
    }

    #[test]
    fn entries_match_node() {
        // Observed: io.emit("hello", 1, {a: "x"}).
        let data = br#"{"packet":{"type":2,"data":["hello",1,{"a":"x"}]},"opts":{"rooms":[],"except":[],"flags":{}}}"#;
        let node: Vec<(&[u8], &[u8])> = vec![
            (b"uid", b"68dbc654bd1e0b88"),
            (b"nsp", b"/"),
            (b"type", b"3"),
            (b"data", data),
        ];
        let envelope = decode_entry(node.iter().copied()).unwrap().unwrap();
        let Message::Broadcast {
            broadcast,
            request_id: None,
        } = &envelope.message
        else {
            panic!("{envelope:?}")
        };
        assert_eq!(broadcast.data[0], Mp::from("hello"));
        let ours = entry_fields(&encode::broadcast(broadcast, "68dbc654bd1e0b88", None));
        assert_eq!(ours[3].1, data.to_vec());
        assert_eq!(ours[2].1, b"3".to_vec());

        // Observed: io.to("room1").emit("bin", Buffer [1, 2, 3]): base64 msgpack.
        let b64 = b"gqZwYWNrZXSCpHR5cGUCpGRhdGGSo2JpbsQDAQIDpG9wdHODpXJvb21zkaVyb29tMaZleGNlcHSQpWZsYWdzgA==";
        let node: Vec<(&[u8], &[u8])> = vec![(b"uid", b"u"), (b"nsp", b"/"), (b"type", b"3"), (b"data", b64)];
        let envelope = decode_entry(node.iter().copied()).unwrap().unwrap();
        let Message::Broadcast { broadcast, .. } = &envelope.message else {
            panic!()
        };
        assert_eq!(broadcast.selector.rooms, vec!["room1".to_owned()]);
        assert_eq!(broadcast.data[1], Mp::Binary(vec![1, 2, 3]));
        assert_eq!(
            entry_fields(&encode::broadcast(broadcast, "u", None))[3].1,
            b64.to_vec()
        );

        // A 0.2 heartbeat has no data; an entry without nsp is not the adapter's.
        let beat: Vec<(&[u8], &[u8])> = vec![(b"uid", b"u"), (b"nsp", b"/"), (b"type", b"1")];
        assert_eq!(
            decode_entry(beat.iter().copied()).unwrap().unwrap().message,
            Message::Ignored(1)
        );
        let foreign: Vec<(&[u8], &[u8])> = vec![(b"uid", b"u"), (b"type", b"3")];
        assert_eq!(decode_entry(foreign.iter().copied()).unwrap(), None);

        let join = encode::sockets_join("emitter", "/chat", &Selector::default(), &["r".into()], true);
        let owned = fields(&entry_fields(&join));
        let back = decode_entry(owned.iter().map(|(k, v)| (*k, v.as_slice())))
            .unwrap()
            .unwrap();
        assert_eq!(back.uid.as_deref(), Some("emitter"));
        assert_eq!(back.nsp.as_deref(), Some("/chat"));
        assert!(matches!(back.message, Message::SocketsJoin { .. }));

        for bad in [&b"3x"[..], b""] {
            let entry: Vec<(&[u8], &[u8])> = vec![(b"nsp", b"/"), (b"type", bad)];
            assert!(decode_entry(entry.iter().copied()).is_err());
        }
        for bad in [&b"{"[..], b"!!notbase64", b"eyJhIjoxfQ=="] {
            let entry: Vec<(&[u8], &[u8])> = vec![(b"nsp", b"/"), (b"type", b"3"), (b"data", bad)];
            assert!(decode_entry(entry.iter().copied()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_records_match_node() {
        // Observed: SET sio:session:A0ZlVsupFbnG3ZsuAAAB <base64> (rooms: sid, room1; data {}).
        let record = SessionRecord {
            sid: "M8Q7XfbGQdCazJ12AAAA".into(),
            pid: "A0ZlVsupFbnG3ZsuAAAB".into(),
            rooms: vec!["M8Q7XfbGQdCazJ12AAAA".into(), "room1".into()],
            data: Mp::Map(vec![]),
        };
        let bytes = record.encode();
        assert!(bytes.starts_with(b"hKNzaWS0TThRN1hm"));
        let raw = base64::engine::general_purpose::STANDARD.decode(&bytes).unwrap();
        assert!(raw.ends_with(b"\xa4data\x80"), "{raw:x?}");
        assert_eq!(SessionRecord::decode(&bytes).unwrap(), record);
        assert!(SessionRecord::decode(b"not base64!").is_err());
        assert!(SessionRecord::decode(b"gA==").is_err(), "{{}} has no sid");
    }
}
