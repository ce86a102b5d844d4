//! Every decoder a stranger's bytes reach, fuzzed: Engine.IO frames, Socket.IO packets, polling
//! payloads, the session cookie, and the adapter's Redis messages. Each must return a value or
//! an error for any input, never panic, and bound what it allocates.
//!
//! cargo-fuzz needs a nightly toolchain, which these machines cannot fetch; proptest runs the
//! same kind of search inside `cargo test`, bounded by its case counts (about ten seconds in all
//! on two cores). `tests/corpus/` holds hostile seeds (from a probe of ~150 inputs and from
//! engine.io's own fixes) that every decoder is run over; add a file there for every input that
//! once broke something.

use bytes::Bytes;
use proptest::prelude::*;
use wsgate::auth::cookie;
use wsgate::auth::SessionSecrets;
use wsgate::protocol::adapter::{self, Broadcast};
use wsgate::protocol::classic::Request;
use wsgate::protocol::engineio::{self, PayloadReader};
use wsgate::protocol::socketio::Decoder;

fn secrets() -> SessionSecrets {
    SessionSecrets::new(vec![b"fuzz-secret".to_vec()]).unwrap()
}

/// Runs every decoder over `input`, as text where it is UTF-8 and as bytes everywhere.
fn decode_everything(input: &[u8]) {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = engineio::decode_text(text);
        let mut decoder = Decoder::default();
        let _ = decoder.decode_text(text.strip_prefix('4').unwrap_or(text));
        let _ = decoder.decode_binary(Bytes::copy_from_slice(input));
        let _ = cookie::session_id([text], "connect.sid", &secrets());
    }
    let mut decoder = Decoder::default();
    let _ = decoder.decode_binary(Bytes::copy_from_slice(input));
    if let Ok(mut reader) = PayloadReader::new(Bytes::copy_from_slice(input)) {
        let mut packets = 0;
        while reader.next_packet().is_some() {
            packets += 1;
            assert!(packets <= input.len() + 1, "no more packets than separators");
        }
    }
    let _ = Broadcast::decode(input);
    let _ = Request::decode(input);
    let _ = adapter::msgpack_elements(input);
    let _ = wsgate::protocol::sharded::decode(input);
}

#[test]
fn every_decoder_survives_the_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        decode_everything(&input);
        seeds += 1;
    }
    assert!(seeds >= 20, "the corpus is in {}", dir.display());
    // What some seeds must give, not only "no panic".
    let seed = |name: &str| std::fs::read(dir.join(name)).unwrap();
    assert_eq!(
        adapter::msgpack_elements(&seed("adapter-array32-claims-4g.bin")),
        Err(adapter::AdapterError::NotMsgpack)
    );
    assert!(Broadcast::decode(&seed("adapter-deep-arrays.bin")).is_err());
    assert!(Request::decode(&seed("adapter-json-deep.bin")).is_err());
    assert!(Decoder::default()
        .decode_text(std::str::from_utf8(&seed("sio-huge-attachment-count.txt")).unwrap()[1..].trim())
        .is_err());
    let mut reader = PayloadReader::new(Bytes::from(seed("payload-bad-base64.bin"))).unwrap();
    assert!(matches!(reader.next_packet(), Some(Err(_))));
}

/// Strings shaped like Socket.IO packets: types, attachment counts, namespaces, ids, JSON.
fn packet_like() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "[0-6]",
        "[0-9]{1,22}-?",
        Just("/".to_string()),
        "/[a-z]{0,6},?",
        Just(r#"{"_placeholder":true,"num":0}"#.to_string()),
        Just(r#"["x","#.to_string()),
        "[\\[\\]{}\",:]{1,4}",
        any::<String>(),
    ];
    proptest::collection::vec(part, 0..10).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn engine_io_frames_never_panic(frame in any::<String>()) {
        let _ = engineio::decode_text(&frame);
    }

    #[test]
    fn socket_io_streams_never_panic(
        messages in proptest::collection::vec(
            prop_oneof![
                packet_like().prop_map(|t| (true, t.into_bytes())),
                proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| (false, b)),
            ],
            1..8,
        )
    ) {
        let mut decoder = Decoder::default();
        for (text, data) in messages {
            let decoded = if text {
                decoder.decode_text(std::str::from_utf8(&data).unwrap())
            } else {
                decoder.decode_binary(Bytes::from(data))
            };
            if let Ok(Some(packet)) = decoded {
                // What decodes re-encodes to something that decodes the same.
                if packet.attachments.is_empty() {
                    let again = Decoder::default().decode_text(&packet.encode());
                    prop_assert_eq!(again.ok().flatten().map(|p| p.encode()), Some(packet.encode()));
                }
            }
            if decoder.pending().is_some_and(|(_, bytes)| bytes > 1 << 20) {
                break;
            }
        }
    }

    #[test]
    fn cookies_never_panic_and_signed_ones_verify(header in any::<String>(), sid in "[A-Za-z0-9_-]{1,40}") {
        let _ = cookie::session_id([header.as_str()], "connect.sid", &secrets());
        let signed = secrets().sign(&sid);
        let encoded = signed.replace(':', "%3A").replace('+', "%2B").replace('/', "%2F");
        let good = format!("{header}; connect.sid={encoded}");
        // The first cookie of the name wins, as in express-session: only when the fuzzed
        // header has none of its own must the signed one verify.
        if cookie::find_cookie(&header, "connect.sid").is_none() {
            prop_assert_eq!(cookie::session_id([good.as_str()], "connect.sid", &secrets()), Ok(sid));
        }
    }

    #[test]
    fn adapter_messages_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Broadcast::decode(&body);
        let _ = Request::decode(&body);
        let _ = adapter::msgpack_elements(&body);
    }

    #[test]
    fn sharded_messages_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = wsgate::protocol::sharded::decode(&body);
    }

    #[test]
    fn sharded_envelopes_of_any_content_decode_or_are_refused(value in msgpack_value(), code in 0i64..16) {
        // A well-formed envelope around arbitrary data, as msgpack and as JSON: never a panic,
        // and a type outside socket.io-adapter's is refused.
        let envelope = rmpv::Value::Map(vec![
            (rmpv::Value::from("type"), rmpv::Value::from(code)),
            (rmpv::Value::from("data"), value),
            (rmpv::Value::from("uid"), rmpv::Value::from("fuzz")),
            (rmpv::Value::from("nsp"), rmpv::Value::from("/")),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &envelope).unwrap();
        let decoded = wsgate::protocol::sharded::decode(&bytes);
        if !(1..=13).contains(&code) {
            prop_assert!(decoded.is_err());
        }
        let (json, _) = wsgate::protocol::adapter::to_client_args(std::slice::from_ref(&envelope));
        let _ = wsgate::protocol::sharded::decode(json[0].to_string().as_bytes());
    }

    #[test]
    fn msgpack_counting_agrees_with_decoding(value in msgpack_value()) {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &value).unwrap();
        prop_assert_eq!(adapter::msgpack_elements(&bytes), Ok(count(&value)));
        // Any truncation is refused rather than misread.
        prop_assert!(adapter::msgpack_elements(&bytes[..bytes.len() - 1]).is_err());
    }
}

fn msgpack_value() -> impl Strategy<Value = rmpv::Value> {
    let leaf = prop_oneof![
        Just(rmpv::Value::Nil),
        any::<bool>().prop_map(rmpv::Value::from),
        any::<i64>().prop_map(rmpv::Value::from),
        any::<u64>().prop_map(rmpv::Value::from),
        any::<f64>().prop_map(rmpv::Value::from),
        any::<f32>().prop_map(rmpv::Value::F32),
        ".{0,40}".prop_map(rmpv::Value::from),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(rmpv::Value::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(t, d)| rmpv::Value::Ext(t, d)),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(rmpv::Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..6).prop_map(rmpv::Value::Map),
        ]
    })
}

fn count(value: &rmpv::Value) -> usize {
    1 + match value {
        rmpv::Value::Array(items) => items.iter().map(count).sum(),
        rmpv::Value::Map(pairs) => pairs.iter().map(|(k, v)| count(k) + count(v)).sum(),
        _ => 0,
    }
}

/// The room matcher of the round 2 hardening (one leftmost pass) against the obvious
/// backtracking definition it replaced, on small alphabets where every shape occurs.
fn matches_by_backtracking(pattern: &[u8], room: &[u8]) -> bool {
    match pattern.split_first() {
        None => room.is_empty(),
        Some((b'*', rest)) => (0..=room.len()).any(|i| matches_by_backtracking(rest, &room[i..])),
        Some((c, rest)) => room.first() == Some(c) && matches_by_backtracking(rest, &room[1..]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn room_patterns_match_as_globs(pattern in "[ab:*]{0,8}", room in "[ab:]{0,12}") {
        let linear = wsgate::gateway::RoomPattern::parse(&pattern).matches(&room, "");
        prop_assert_eq!(linear, matches_by_backtracking(pattern.as_bytes(), room.as_bytes()), "{} against {}", pattern, room);
    }

    #[test]
    fn durations_parse_or_are_refused(text in "\\PC{0,24}") {
        let _ = wsgate::config::duration::parse_duration(&text);
        let _ = text.parse::<wsgate::config::duration::OffIfZero<std::time::Duration>>();
        let _ = text.parse::<wsgate::config::duration::OffIfZero<f64>>();
    }

    #[test]
    fn plain_numbers_are_milliseconds(ms in 0u64..10_000_000_000) {
        prop_assert_eq!(
            wsgate::config::duration::parse_duration(&ms.to_string()),
            Ok(std::time::Duration::from_millis(ms))
        );
    }
}
