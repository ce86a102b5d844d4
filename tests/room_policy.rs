//! What a client may do to rooms by itself, against a hostile client (hardening round 2): rooms
//! wsgate assigns can never be joined or left by a client whatever `--allow-join` says, room
//! names have a byte budget, pattern matching cannot stall the node, and the CONNECT payload is
//! not kept.

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const ALICE: &str = "roomPolicyAliceSession-012345678";
const BOB: &str = "roomPolicyBobSession-0123456789ab";

/// With `--allow-join '*'` a user once joined `user:bob`, `session:<bob's sid>` and bob's
/// socket id and received bob's messages, and could leave her own `session:` room so that the
/// logout kick (`disconnect --room session:<sid>`) no longer reached her.
#[tokio::test]
async fn rooms_wsgate_assigns_are_never_a_clients_to_join_or_leave() {
    let redis = Redis::start().await;
    redis.login(ALICE, r#""alice""#).await;
    redis.login(BOB, r#""bob""#).await;
    let server = gateway(&redis.url(), &["--allow-join", "*"]).await;
    let addr = server.local_addr();
    let (mut alice, alice_id) = Client::connect_as(addr, &cookie_for(ALICE, SECRET)).await;
    let (mut bob, bob_id) = Client::connect_as(addr, &cookie_for(BOB, SECRET)).await;
    let forbidden = json!({"ok": false, "error": "forbidden"});
    let bob_session = format!("session:{BOB}");
    let alice_session = format!("session:{ALICE}");
    let mut n = 0;
    for (verb, room) in [
        ("join", "user:bob"),
        ("join", bob_session.as_str()),
        ("join", bob_id.as_str()),
        ("leave", alice_session.as_str()),
        ("leave", "user:alice"),
        ("leave", alice_id.as_str()),
    ] {
        n += 1;
        alice.send(&format!(r#"42{n}["{verb}","{room}"]"#)).await;
        assert_eq!(alice.ack_of(n).await, forbidden, "{verb} {room}");
    }
    // Bob's messages reach bob only, and the logout kick still reaches alice.
    let nsp = server.gateway().namespace("/").unwrap().clone();
    for room in ["user:bob", bob_session.as_str(), bob_id.as_str()] {
        let packet = wsgate::protocol::socketio::Packet::event("/", vec![json!("private"), json!(room)], vec![]);
        assert_eq!(nsp.broadcast(&[room], &[] as &[&str], &packet), 1, "{room}: bob alone");
    }
    for _ in 0..3 {
        assert!(bob.text().await.starts_with(r#"42["private""#));
    }
    let kicked = wsgate_cli(&["disconnect", "--redis-url", &redis.url(), "--room", &alice_session]);
    assert_eq!(kicked.0, 0, "{}", kicked.1);
    assert!(
        closed_within(&mut alice, Duration::from_secs(2)).await,
        "the logout kick reached alice"
    );
    let metrics = server.gateway().metrics.clone();
    assert_eq!(metrics.get(wsgate::metrics::RoomRequest::Reserved), 6);

    // A room a backend joined the socket to is the backend's to take away.
    let (mut carol, carol_id) = Client::connect_as(addr, &cookie_for(BOB, SECRET)).await;
    let emitter = wsgate::cluster::Emitter::new(redis.client().get_connection_manager().await.unwrap(), "socket.io");
    emitter
        .of("/")
        .to(carol_id.clone())
        .sockets_join(&["vip:lounge".into()])
        .await
        .unwrap();
    let carol_socket = nsp.socket(&carol_id).unwrap();
    eventually("the backend's join applied", || carol_socket.in_room("vip:lounge")).await;
    carol.send(r#"421["leave","vip:lounge"]"#).await;
    assert_eq!(carol.ack_of(1).await, forbidden);
    assert!(carol_socket.in_room("vip:lounge"), "still in the backend's room");
    // Rooms it joined itself it may leave.
    carol.send(r#"422["join","lobby"]"#).await;
    assert_eq!(carol.ack_of(2).await, json!({"ok": true}));
    carol.send(r#"423["leave","lobby"]"#).await;
    assert_eq!(carol.ack_of(3).await, json!({"ok": true}));
    assert!(!carol_socket.in_room("lobby"));
}

/// 10 sockets × 100 rooms of 990 KB once took a node from 9 to 977 MB, and two joins with
/// 300 KB names against `--allow-join 'org:*:team:*:chat'` blocked it (`/healthz` included)
/// for 30 s.
#[tokio::test]
async fn room_names_have_a_byte_budget_and_matching_cannot_stall_the_node() {
    let (_redis, server, cookie) = gateway_with_user(
        ALICE,
        r#""alice""#,
        // Events as large as the finding's (the event budget would refuse them first).
        &["--allow-join", "org:*:team:*:chat", "--max-event-bytes", "1000000"],
    )
    .await;
    let addr = server.local_addr();
    let (mut alice, alice_id) = Client::connect_as(addr, &cookie).await;
    let invalid = json!({"ok": false, "error": "invalid_room"});
    let long = format!("org:{}:team:x:chat", "a".repeat(300_000));
    alice.send(&format!(r#"421["join","{long}"]"#)).await;
    assert!(healthz(addr).await, "/healthz answers");
    assert_eq!(alice.ack_of(1).await, invalid);
    alice.send(r#"422["join",""]"#).await;
    assert_eq!(alice.ack_of(2).await, invalid, "an empty name");
    alice.send(r#"423["join",42]"#).await;
    assert_eq!(alice.ack_of(3).await, invalid, "not a string");
    let at_budget = format!("org:{}:team:x:chat", "a".repeat(256 - "org::team:x:chat".len()));
    assert_eq!(at_budget.len(), 256);
    alice.send(&format!(r#"424["join","{at_budget}"]"#)).await;
    assert_eq!(
        alice.ack_of(4).await,
        json!({"ok": true}),
        "256 bytes is the default budget"
    );
    let socket = server.gateway().namespace("/").unwrap().socket(&alice_id).unwrap();
    assert!(socket.in_room(&at_budget));
    assert!(!socket.rooms().iter().any(|r| r.len() > 256));
}

/// The CONNECT payload (200 sockets × 990 KB once added 380 MB) goes to the hooks and is not
/// kept: a peer's fetchSockets sees `auth` as `{}`; the handshake headers a socket keeps are cut
/// at 1 KiB.
#[tokio::test]
async fn the_connect_payload_is_not_kept() {
    let (redis, server, cookie) = gateway_with_user(ALICE, r#""alice""#, &[]).await;
    redis.wait_for_servers("/", 1).await;
    let agent = "a".repeat(5000);
    let (mut client, _) = Client::open(server.local_addr(), &[("cookie", &cookie), ("user-agent", &agent)])
        .await
        .unwrap();
    let payload = format!(r#"40{{"token":"{}"}}"#, "t".repeat(500_000));
    client.send(&payload).await;
    assert!(client.text().await.starts_with("40{\"sid\""));
    // A Node peer's fetchSockets (REMOTE_FETCH) answer.
    let mut sub = redis.client().get_async_pubsub().await.unwrap();
    sub.subscribe("socket.io-response#/#").await.unwrap();
    let _: i64 = redis
        .cmd(&[
            "PUBLISH",
            "socket.io-request#/#",
            r#"{"uid":"peer01","type":5,"requestId":"fetch1","opts":{"rooms":[],"except":[]}}"#,
        ])
        .await;
    let message = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut sub.on_message()),
    )
    .await
    .expect("an answer")
    .unwrap();
    let bytes: Vec<u8> = message.get_payload().unwrap();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| rmp_serde::from_slice(&bytes).unwrap());
    assert_eq!(answer["sockets"][0]["handshake"]["auth"], json!({}), "{answer}");
    let kept = answer["sockets"][0]["handshake"]["headers"]["user-agent"]
        .as_str()
        .unwrap();
    assert_eq!(kept.len(), 1024, "a handshake header is kept up to 1 KiB");
    assert!(
        bytes.len() < 10_000,
        "the 500 KB payload is not published: {} bytes",
        bytes.len()
    );
}
