//! What every Redis adapter wire format shares: the broadcast message of
//! `@socket.io/redis-adapter` (8.x) and `@socket.io/redis-emitter` (5.x), selectors, bounds on
//! what is decoded, and the conversion between msgpack payloads and Socket.IO arguments. The
//! classic protocol's channels and requests are [`super::classic`]'s, the sharded one's
//! [`super::sharded`]'s.
//!
//! Pure: bytes in, typed values out, and back. Payloads stay `rmpv::Value` so binary, integer
//! widths and key order survive a relay; [`to_client_args`] and [`from_client_value`] convert
//! between them and Socket.IO's JSON-plus-attachments form. Everything from Redis is decoded
//! defensively: anything unexpected is an [`AdapterError`], never a panic.

use super::socketio::placeholder;
use crate::metrics::AdapterDrop;
use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{Map, Value as Json};

/// The `uid` the Node emitter publishes with.
pub const EMITTER_UID: &str = "emitter";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    #[error("not msgpack")]
    NotMsgpack,
    #[error("not JSON")]
    NotJson,
    #[error("unexpected shape: {0}")]
    Shape(&'static str),
    #[error("unknown request type {0}")]
    UnknownType(i64),
    #[error("message of {0} bytes, over the {MAX_MESSAGE_BYTES}-byte cap")]
    TooLarge(usize),
    #[error("message of more than {MAX_ELEMENTS} elements")]
    TooManyElements,
}

impl AdapterError {
    /// The `wsgate_adapter_dropped_total` label it is counted under.
    pub fn label(&self) -> AdapterDrop {
        match self {
            AdapterError::NotMsgpack => AdapterDrop::NotMsgpack,
            AdapterError::NotJson => AdapterDrop::NotJson,
            AdapterError::Shape(_) => AdapterDrop::BadShape,
            AdapterError::UnknownType(_) => AdapterDrop::UnknownType,
            AdapterError::TooLarge(_) => AdapterDrop::TooLarge,
            AdapterError::TooManyElements => AdapterDrop::TooManyElements,
        }
    }
}

/// Which sockets a broadcast or request applies to. Socket ids are rooms too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    pub rooms: Vec<String>,
    pub except: Vec<String>,
}

/// A broadcast message: `[uid, {type, data, nsp}, {rooms, except, flags}]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    pub uid: Option<String>,
    pub nsp: String,
    /// `[event, ...args]`, binary as msgpack `bin`.
    pub data: Vec<Mp>,
    pub selector: Selector,
    /// `flags` as sent (`volatile`, `compress`, `timeout`, …).
    pub flags: Vec<(Mp, Mp)>,
}

/// Deepest nesting accepted from Redis. rmpv's own limit (1024) still overflows a 2 MiB task
/// stack; real payloads are nowhere near this deep.
const MAX_DEPTH: usize = 100;

/// Largest adapter message decoded: anything a peer publishes is read by every node.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Most values (array items, map keys and values, scalars) in one message. Decoded values are
/// tens of bytes each, so this bounds what one message can expand to (~8 MB), where a 16 MB
/// array of one-byte items would otherwise become 640 MB.
pub const MAX_ELEMENTS: usize = 200_000;

/// Checks a message's size and counts its values before anything is allocated for it: msgpack
/// by walking its headers, JSON by its separators (an upper bound).
pub fn check_bounds(bytes: &[u8]) -> Result<(), AdapterError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(AdapterError::TooLarge(bytes.len()));
    }
    if bytes.first() == Some(&b'{') {
        let separators = bytes
            .iter()
            .filter(|&&b| matches!(b, b',' | b'[' | b'{' | b':'))
            .count();
        return if separators > MAX_ELEMENTS {
            Err(AdapterError::TooManyElements)
        } else {
            Ok(())
        };
    }
    msgpack_elements(bytes).map(|_| ())
}

/// Counts the values of one msgpack value without decoding it; fails on truncation or when a
/// header announces more values than bytes remain (every value takes at least one byte).
pub fn msgpack_elements(bytes: &[u8]) -> Result<usize, AdapterError> {
    let mut pos = 0usize;
    let mut pending = 1usize;
    let mut elements = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<usize, AdapterError> {
        let start = *pos;
        *pos = pos
            .checked_add(n)
            .filter(|&end| end <= bytes.len())
            .ok_or(AdapterError::NotMsgpack)?;
        Ok(start)
    };
    let be = |pos: &mut usize, n: usize| -> Result<usize, AdapterError> {
        let start = take(pos, n)?;
        Ok(bytes[start..start + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize))
    };
    while pending > 0 {
        pending -= 1;
        elements += 1;
        if elements > MAX_ELEMENTS {
            return Err(AdapterError::TooManyElements);
        }
        let marker = bytes[take(&mut pos, 1)?];
        let (skip, children) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * (marker & 0x0f) as usize),
            0x90..=0x9f => (0, (marker & 0x0f) as usize),
            0xa0..=0xbf => ((marker & 0x1f) as usize, 0),
            0xc4 | 0xd9 => (be(&mut pos, 1)?, 0),
            0xc5 | 0xda => (be(&mut pos, 2)?, 0),
            0xc6 | 0xdb => (be(&mut pos, 4)?, 0),
            0xc7 => (be(&mut pos, 1)? + 1, 0),
            0xc8 => (be(&mut pos, 2)? + 1, 0),
            0xc9 => (be(&mut pos, 4)? + 1, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, be(&mut pos, 2)?),
            0xdd => (0, be(&mut pos, 4)?),
            0xde => (0, 2 * be(&mut pos, 2)?),
            0xdf => (0, 2usize.saturating_mul(be(&mut pos, 4)?)),
            0xc1 => return Err(AdapterError::NotMsgpack),
        };
        take(&mut pos, skip)?;
        pending = pending.checked_add(children).ok_or(AdapterError::NotMsgpack)?;
        if pending > bytes.len() - pos {
            return Err(AdapterError::NotMsgpack);
        }
    }
    Ok(elements)
}

fn decode_msgpack(bytes: &[u8]) -> Result<Mp, AdapterError> {
    check_bounds(bytes)?;
    let mut reader = bytes;
    let value =
        rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH).map_err(|_| AdapterError::NotMsgpack)?;
    // notepack rejects trailing bytes, and so do we.
    if !reader.is_empty() {
        return Err(AdapterError::NotMsgpack);
    }
    Ok(value)
}

pub(super) fn encode_msgpack(value: &Mp) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

/// One of a broadcast's `flags`, by name.
pub fn flag<'v>(flags: &'v [(Mp, Mp)], name: &str) -> Option<&'v Mp> {
    get(flags, name)
}

pub(super) fn get<'v>(map: &'v [(Mp, Mp)], key: &str) -> Option<&'v Mp> {
    map.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
}

/// A room name as Node holds it: strings as they are, numbers in decimal.
pub(super) fn room_name(value: &Mp) -> Option<String> {
    match value {
        Mp::String(s) => s.as_str().map(str::to_owned),
        Mp::Integer(i) => Some(i.to_string()),
        Mp::F64(f) if f.fract() == 0.0 && f.is_finite() => Some(format!("{}", *f as i64)),
        _ => None,
    }
}

pub(super) fn rooms(value: Option<&Mp>) -> Vec<String> {
    value
        .and_then(Mp::as_array)
        .map(|items| items.iter().filter_map(room_name).collect())
        .unwrap_or_default()
}

pub(super) fn selector(value: Option<&Mp>) -> Selector {
    let map = value.and_then(Mp::as_map).map(Vec::as_slice).unwrap_or(&[]);
    Selector {
        rooms: rooms(get(map, "rooms")),
        except: rooms(get(map, "except")),
    }
}

/// The `flags` map of an `opts` map, as sent.
pub(super) fn flags(opts: Option<&Mp>) -> Vec<(Mp, Mp)> {
    let map = opts.and_then(Mp::as_map).map(Vec::as_slice).unwrap_or(&[]);
    get(map, "flags").and_then(Mp::as_map).cloned().unwrap_or_default()
}

/// A message that is JSON when its first byte is `{` and msgpack otherwise, as Node's adapters
/// decide; bounded before anything is decoded.
pub(super) fn decode_json_or_msgpack(bytes: &[u8]) -> Result<Mp, AdapterError> {
    if bytes.first() == Some(&b'{') {
        check_bounds(bytes)?;
        let json: Json = serde_json::from_slice(bytes).map_err(|_| AdapterError::NotJson)?;
        Ok(from_client_value(&json, &[]))
    } else {
        decode_msgpack(bytes)
    }
}

pub(super) fn str_field(map: &[(Mp, Mp)], key: &str) -> Option<String> {
    get(map, key).and_then(Mp::as_str).map(str::to_owned)
}

impl Broadcast {
    pub fn decode(bytes: &[u8]) -> Result<Self, AdapterError> {
        let value = decode_msgpack(bytes)?;
        let parts = value
            .as_array()
            .ok_or(AdapterError::Shape("broadcast is not an array"))?;
        let [uid, packet, opts, ..] = parts.as_slice() else {
            return Err(AdapterError::Shape("broadcast needs [uid, packet, opts]"));
        };
        let packet = packet.as_map().ok_or(AdapterError::Shape("packet is not a map"))?;
        // socket.io 2.x publishers may send type 5 (binary event): same meaning here.
        match get(packet, "type").and_then(Mp::as_i64) {
            Some(2 | 5) => {}
            _ => return Err(AdapterError::Shape("packet type is not EVENT")),
        }
        let data = get(packet, "data")
            .and_then(Mp::as_array)
            .filter(|d| !d.is_empty())
            .ok_or(AdapterError::Shape("packet data is not a non-empty array"))?
            .clone();
        Ok(Broadcast {
            uid: uid.as_str().map(str::to_owned),
            nsp: str_field(packet, "nsp").unwrap_or_else(|| "/".into()),
            data,
            selector: selector(Some(opts)),
            flags: flags(Some(opts)),
        })
    }

    /// notepack-identical bytes. The adapter writes opts as `rooms, except, flags`; the emitter
    /// as `rooms, flags, except` (`emitter_order`). Node decoders accept either.
    pub fn encode(&self, emitter_order: bool) -> Vec<u8> {
        let packet = Mp::Map(vec![
            (Mp::from("type"), Mp::from(2)),
            (Mp::from("data"), Mp::Array(self.data.clone())),
            (Mp::from("nsp"), Mp::from(self.nsp.as_str())),
        ]);
        let list = |rooms: &[String]| Mp::Array(rooms.iter().map(|r| Mp::from(r.as_str())).collect());
        let rooms = (Mp::from("rooms"), list(&self.selector.rooms));
        let except = (Mp::from("except"), list(&self.selector.except));
        let flags = (Mp::from("flags"), Mp::Map(self.flags.clone()));
        let opts = if emitter_order {
            vec![rooms, flags, except]
        } else {
            vec![rooms, except, flags]
        };
        let uid = self.uid.as_deref().map_or(Mp::Nil, Mp::from);
        encode_msgpack(&Mp::Array(vec![uid, packet, Mp::Map(opts)]))
    }

    /// `flags.timeout` in milliseconds, if set.
    pub fn timeout_ms(&self) -> Option<u64> {
        get(&self.flags, "timeout").and_then(Mp::as_u64)
    }
}

/// msgpack values → Socket.IO arguments: `bin` becomes a placeholder plus an attachment, and the
/// rest is what `JSON.stringify` would make of the decoded JS value (Dates as ISO strings,
/// non-finite numbers as `null`, map keys as strings).
pub fn to_client_args(values: &[Mp]) -> (Vec<Json>, Vec<Bytes>) {
    let mut attachments = Vec::new();
    let args = values.iter().map(|v| to_client(v, &mut attachments)).collect();
    (args, attachments)
}

fn to_client(value: &Mp, attachments: &mut Vec<Bytes>) -> Json {
    match value {
        Mp::Nil => Json::Null,
        Mp::Boolean(b) => Json::Bool(*b),
        Mp::Integer(i) => i
            .as_i64()
            .map(Json::from)
            .or_else(|| i.as_u64().map(Json::from))
            .unwrap_or(Json::Null),
        Mp::F32(f) => float(f64::from(*f)),
        Mp::F64(f) => float(*f),
        Mp::String(s) => Json::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Mp::Binary(b) => {
            attachments.push(Bytes::copy_from_slice(b));
            placeholder(attachments.len() - 1)
        }
        Mp::Array(items) => Json::Array(items.iter().map(|v| to_client(v, attachments)).collect()),
        Mp::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match k {
                    Mp::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    other => match to_client(other, &mut Vec::new()) {
                        Json::String(s) => s,
                        json => json.to_string(),
                    },
                };
                map.insert(key, to_client(v, attachments));
            }
            Json::Object(map)
        }
        Mp::Ext(kind, data) => ext(*kind, data, attachments),
    }
}

fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
}

/// notepack 3: timestamp ext −1 is a Date; notepack 2: ext 0 is `undefined` (1 byte), a Date
/// (8 bytes, float64 ms) or an ArrayBuffer; any other ext decodes to `[type, Buffer]`.
fn ext(kind: i8, data: &[u8], attachments: &mut Vec<Bytes>) -> Json {
    let date = |ms: f64| match iso_date(ms) {
        Some(s) => Json::String(s),
        None => Json::Null,
    };
    match (kind, data.len()) {
        (-1, 4) => date(f64::from(u32::from_be_bytes([data[0], data[1], data[2], data[3]])) * 1000.0),
        (-1, 8) => {
            let raw = u64::from_be_bytes(data.try_into().unwrap_or([0; 8]));
            let nanos = raw >> 34;
            let secs = raw & 0x3_ffff_ffff;
            date(secs as f64 * 1000.0 + (nanos / 1_000_000) as f64)
        }
        (-1, 12) => {
            let nanos = u32::from_be_bytes(data[..4].try_into().unwrap_or([0; 4]));
            let secs = i64::from_be_bytes(data[4..].try_into().unwrap_or([0; 8]));
            date(secs as f64 * 1000.0 + f64::from(nanos / 1_000_000))
        }
        (0, 1) => Json::Null,
        (0, 8) => date(f64::from_be_bytes(data.try_into().unwrap_or([0; 8]))),
        (0, _) => {
            attachments.push(Bytes::copy_from_slice(data));
            placeholder(attachments.len() - 1)
        }
        (kind, _) => {
            attachments.push(Bytes::copy_from_slice(data));
            Json::Array(vec![Json::from(kind), placeholder(attachments.len() - 1)])
        }
    }
}

/// `Date.prototype.toISOString()` of epoch milliseconds (`None` outside years 0..=9999).
pub fn iso_date(ms: f64) -> Option<String> {
    if !ms.is_finite() {
        return None;
    }
    let ms = ms.floor() as i64;
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = super::civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    ))
}

/// A Socket.IO value (placeholders referring to `attachments`) → msgpack as notepack would
/// encode the JS value: integral numbers as integers, binary as `bin`.
pub fn from_client_value(value: &Json, attachments: &[Bytes]) -> Mp {
    match value {
        Json::Null => Mp::Nil,
        Json::Bool(b) => Mp::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else if let Some(u) = n.as_u64() {
                Mp::from(u)
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    Mp::from(f as i64)
                } else {
                    Mp::F64(f)
                }
            }
        }
        Json::String(s) => Mp::from(s.as_str()),
        Json::Array(items) => Mp::Array(items.iter().map(|v| from_client_value(v, attachments)).collect()),
        Json::Object(map) => {
            if map.get("_placeholder") == Some(&Json::Bool(true)) {
                if let Some(data) = map
                    .get("num")
                    .and_then(Json::as_u64)
                    .and_then(|n| attachments.get(n as usize))
                {
                    return Mp::Binary(data.to_vec());
                }
            }
            Mp::Map(
                map.iter()
                    .map(|(k, v)| (Mp::from(k.as_str()), from_client_value(v, attachments)))
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::protocol::classic::Request;

    /// Bytes from a hex dump (whitespace ignored), as captured from Node peers.
    pub(in crate::protocol) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Observed `io.emit("hello","world",1,{a:true})` from a Node node with uid `i52Bv0`.
    const NODE_BROADCAST: &str = "93 a6 693532427630 83 a4 74797065 02 a4 64617461 94 a5 68656c6c6f a5 776f726c64 01 81 a1 61 c3 a3 6e7370 a1 2f 83 a5 726f6f6d73 90 a6 657863657074 90 a5 666c616773 80";

    #[test]
    fn node_broadcast_decodes_and_reencodes_byte_for_byte() {
        let bytes = hex(NODE_BROADCAST);
        let b = Broadcast::decode(&bytes).unwrap();
        assert_eq!(b.uid.as_deref(), Some("i52Bv0"));
        assert_eq!(b.nsp, "/");
        assert_eq!(b.selector, Selector::default());
        let (args, attachments) = to_client_args(&b.data);
        assert_eq!(Json::Array(args), serde_json::json!(["hello", "world", 1, {"a": true}]));
        assert!(attachments.is_empty());
        assert_eq!(b.encode(false), bytes);
    }

    #[test]
    fn emitter_broadcast_matches_observed_bytes() {
        // emit("e1","a",{b:1}) from @socket.io/redis-emitter 5.1.0.
        let observed = "93 a7 656d6974746572 83 a4 74797065 02 a4 64617461 93 a2 6531 a1 61 81 a1 62 01 a3 6e7370 a1 2f 83 a5 726f6f6d73 90 a5 666c616773 80 a6 657863657074 90";
        let b = Broadcast {
            uid: Some(EMITTER_UID.into()),
            nsp: "/".into(),
            data: vec![
                Mp::from("e1"),
                Mp::from("a"),
                Mp::Map(vec![(Mp::from("b"), Mp::from(1))]),
            ],
            selector: Selector::default(),
            flags: vec![],
        };
        assert_eq!(b.encode(true), hex(observed));
    }

    #[test]
    fn binary_becomes_attachments_and_back() {
        // io.to("room1").emit("bin", Buffer[1,2,3]): data 92 a3"bin" c4 03 010203
        let data = decode_msgpack(&hex("92 a3 62696e c4 03 010203")).unwrap();
        let (args, attachments) = to_client_args(data.as_array().unwrap());
        assert_eq!(
            Json::Array(args.clone()),
            serde_json::json!(["bin", {"_placeholder": true, "num": 0}])
        );
        assert_eq!(attachments, vec![Bytes::from_static(&[1, 2, 3])]);
        let back: Vec<Mp> = args.iter().map(|a| from_client_value(a, &attachments)).collect();
        assert_eq!(Mp::Array(back), data);
    }

    #[test]
    fn notepack_specials_become_json() {
        let (args, _) = to_client_args(&[
            Mp::Ext(-1, vec![0, 0, 0, 0]),
            Mp::Ext(0, vec![0]),
            Mp::F64(f64::NAN),
            Mp::F64(1.5),
            Mp::Map(vec![(Mp::from(7), Mp::Nil)]),
            Mp::from(-300),
        ]);
        assert_eq!(
            Json::Array(args),
            serde_json::json!(["1970-01-01T00:00:00.000Z", null, null, 1.5, {"7": null}, -300])
        );
        assert_eq!(
            iso_date(1_795_264_087_848.0).as_deref(),
            Some("2026-11-21T12:28:07.848Z")
        );
        // 64-bit timestamp: 500 ms past second 1.
        let raw: u64 = (500_000_000u64 << 34) | 1;
        let (args, _) = to_client_args(&[Mp::Ext(-1, raw.to_be_bytes().to_vec())]);
        assert_eq!(args[0], "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Broadcast::decode(b"hello"), Err(AdapterError::NotMsgpack));
        assert_eq!(
            Broadcast::decode(&hex("93 a1 61 c0 c0 ff")),
            Err(AdapterError::NotMsgpack),
            "trailing bytes"
        );
        assert!(matches!(
            Broadcast::decode(&hex("92 a1 61 c0")),
            Err(AdapterError::Shape(_))
        ));
        assert!(matches!(
            Broadcast::decode(&hex("93 c0 81 a4 74797065 05 80")),
            Err(AdapterError::Shape(_))
        ));
        assert_eq!(Request::decode(b"{not json"), Err(AdapterError::NotJson));
        assert_eq!(Request::decode(br#"{"type":42}"#), Err(AdapterError::UnknownType(42)));
        assert!(matches!(
            Request::decode(b"[]"),
            Err(AdapterError::NotMsgpack | AdapterError::Shape(_))
        ));
        assert!(
            Request::decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "a huge declared array"
        );
        let deep = [vec![0x91u8; 100_000], vec![0xc0]].concat();
        assert!(Broadcast::decode(&deep).is_err(), "deep nesting is refused");
    }

    #[test]
    fn element_count_and_caps_before_decoding() {
        let value = rmpv::Value::Array(vec![
            rmpv::Value::from("a"),
            rmpv::Value::Map(vec![(rmpv::Value::from("k"), rmpv::Value::Binary(vec![1, 2, 3]))]),
            rmpv::Value::from(1.5),
            rmpv::Value::Nil,
            rmpv::Value::Ext(1, vec![0; 12]),
        ]);
        let bytes = encode_msgpack(&value);
        assert_eq!(
            msgpack_elements(&bytes),
            Ok(8),
            "the array, 5 items, the key and its value"
        );
        assert_eq!(
            msgpack_elements(&bytes[..bytes.len() - 1]),
            Err(AdapterError::NotMsgpack)
        );
        // An array32 header announcing 2^32-1 items in 5 bytes: refused without allocating.
        assert_eq!(
            msgpack_elements(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(AdapterError::NotMsgpack)
        );
        // 16 MB of one-byte items: refused by count, not expanded to ~640 MB.
        let mut huge = vec![0xdd, 0x00, 0xf0, 0x00, 0x00];
        huge.resize(5 + 0x00f0_0000, 0x01);
        assert_eq!(msgpack_elements(&huge), Err(AdapterError::TooManyElements));
        assert_eq!(Broadcast::decode(&huge), Err(AdapterError::TooManyElements));
        let json = format!("{{\"type\":0,\"rooms\":[{}]}}", vec!["1"; MAX_ELEMENTS].join(","));
        assert_eq!(Request::decode(json.as_bytes()), Err(AdapterError::TooManyElements));
        assert_eq!(
            check_bounds(&vec![0xc0; MAX_MESSAGE_BYTES + 1]),
            Err(AdapterError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
    }
}
