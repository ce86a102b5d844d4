//! Client events cannot fill the Redis that holds the sessions, or the node (hardening round 2):
//! every event has a byte budget, each user has one across all its sockets on a node, the
//! writer's queue is bounded in bytes, and the stream can live on a Redis of its own.
//! Real redis-servers, a real gateway, real WebSocket clients.

use serde_json::json;

use support::*;

const ALICE: &str = "budgetsAliceSession-0123456789abc";
const BOB: &str = "budgetsBobSession-0123456789abcde";

async fn stream_length(redis: &Redis) -> u64 {
    redis.cmd(&["XLEN", "wsgate:inbound"]).await
}

/// Round 2 finding: one socket at the allowed rate (50/s × 990 KB) grew Redis from 1 MB to
/// 961 MB in 20 s. An event larger than --max-event-bytes (its JSON plus attachments) is
/// refused and nothing is stored.
#[tokio::test]
async fn an_event_over_the_byte_budget_is_refused_and_not_stored() {
    let (redis, server, cookie) = gateway_with_user(ALICE, r#""alice""#, &["--max-event-bytes", "1000"]).await;
    let (mut client, _) = Client::connect_as(server.local_addr(), &cookie).await;
    let too_large = json!({"ok": false, "error": "too_large"});
    client.send(&format!(r#"421["note","{}"]"#, "x".repeat(2000))).await;
    assert_eq!(client.ack_of(1).await, too_large, "JSON over the budget");
    client.send(r#"451-2["note",{"_placeholder":true,"num":0}]"#).await;
    client.send_binary(&[7u8; 1500]).await;
    assert_eq!(client.ack_of(2).await, too_large, "attachments count too");
    client.send(&format!(r#"423["note","{}"]"#, "x".repeat(500))).await;
    assert_eq!(client.ack_of(3).await["ok"], json!(true), "within the budget");
    assert_eq!(
        stream_length(&redis).await,
        1,
        "only the event within the budget is stored"
    );
    assert_eq!(server.gateway().metrics.get(wsgate::metrics::InboundEvent::TooLarge), 2);
}

/// Round 2 finding: rate limits were per connection, so one user with 100 sockets stored
/// 10,000 events in 2.1 s. A user's sockets on a node share one budget of events and one of
/// bytes; other users keep theirs.
#[tokio::test]
async fn a_users_sockets_share_one_budget() {
    let redis = Redis::start().await;
    redis.login(ALICE, r#""alice""#).await;
    redis.login(BOB, r#""bob""#).await;
    let server = gateway(
        &redis.url(),
        &[
            // Connections may send as they like: the user's budget is what is tested.
            "--max-events-per-second",
            "1000",
            "--events-burst",
            "1000",
            "--max-events-per-second-per-user",
            "5",
            "--max-event-bytes-per-second-per-user",
            "0",
        ],
    )
    .await;
    let addr = server.local_addr();
    let mut alices = Vec::new();
    for _ in 0..4 {
        alices.push(Client::connect_as(addr, &cookie_for(ALICE, SECRET)).await.0);
    }
    let mut stored = 0;
    let mut refused = 0;
    for (i, client) in alices.iter_mut().enumerate() {
        for n in 1..=5u64 {
            client.send(&format!(r#"42{n}["note",{i}]"#)).await;
        }
        for n in 1..=5u64 {
            match client.ack_of(n).await {
                ack if ack["ok"] == json!(true) => stored += 1,
                ack => {
                    assert_eq!(ack, json!({"ok": false, "error": "rate_limited"}));
                    refused += 1;
                }
            }
        }
    }
    // A burst of twice the rate (10), and what refilled meanwhile (5 a second).
    assert!((10..=13).contains(&stored), "alice's 4 sockets stored {stored} of 20");
    assert_eq!(stored + refused, 20);
    let (mut bob, _) = Client::connect_as(addr, &cookie_for(BOB, SECRET)).await;
    for n in 1..=5u64 {
        bob.send(&format!(r#"42{n}["note","bob"]"#)).await;
        assert_eq!(bob.ack_of(n).await["ok"], json!(true), "bob has his own budget");
    }
    assert_eq!(stream_length(&redis).await, stored + 5);
    assert_eq!(
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::InboundEvent::UserRateLimited),
        refused
    );

    // Bytes: a budget of 10,000 a second takes a burst of 20,000, then refuses.
    let bytes = gateway(
        &redis.url(),
        &[
            "--max-events-per-second-per-user",
            "0",
            "--max-event-bytes-per-second-per-user",
            "10000",
        ],
    )
    .await;
    let (mut bob, _) = Client::connect_as(bytes.local_addr(), &cookie_for(BOB, SECRET)).await;
    let six_kb = "y".repeat(6000);
    let mut outcomes = Vec::new();
    for n in 1..=4u64 {
        bob.send(&format!(r#"42{n}["note","{six_kb}"]"#)).await;
        outcomes.push(bob.ack_of(n).await["ok"] == json!(true));
    }
    assert_eq!(
        outcomes,
        [true, true, true, false],
        "three 6 KB events fit a 20 KB burst"
    );
}

/// Round 2 finding: the writer's queue was bounded by count only: with Redis writes paused, 10
/// sockets took a node from 9 MB to 1,492 MB. Past --inbound-queue-bytes events are refused at
/// once (queue_full); the accepted ones are stored when Redis answers again.
#[tokio::test]
async fn the_writers_queue_is_bounded_in_bytes() {
    let (redis, server, cookie) = gateway_with_user(
        ALICE,
        r#""alice""#,
        &[
            "--inbound-queue-bytes",
            "50000",
            "--max-event-bytes-per-second-per-user",
            "0",
        ],
    )
    .await;
    let (mut client, _) = Client::connect_as(server.local_addr(), &cookie).await;
    // One event stored first: the writer's connection is up before Redis is paused.
    client.send(r#"420["note","first"]"#).await;
    assert_eq!(client.ack_of(0).await["ok"], json!(true));
    redis.pause();
    let ten_kb = "z".repeat(10_000);
    for n in 1..=10u64 {
        client.send(&format!(r#"42{n}["note","{ten_kb}"]"#)).await;
    }
    // The refusals come at once, while Redis is still paused.
    let mut acks = std::collections::BTreeMap::new();
    while acks.len() < 5 {
        let (n, ack) = client.next_ack().await;
        assert_eq!(ack, json!({"ok": false, "error": "queue_full"}), "event {n}");
        acks.insert(n, ack);
    }
    redis.resume();
    while acks.len() < 10 {
        let (n, ack) = client.next_ack().await;
        acks.insert(n, ack);
    }
    let stored = acks.values().filter(|ack| ack["ok"] == json!(true)).count() as u64;
    let full = acks.values().filter(|ack| ack["error"] == json!("queue_full")).count() as u64;
    assert_eq!(stored + full, 10, "stored or refused as queue_full: {acks:?}");
    assert!(
        stored <= 5,
        "at most 50,000 bytes were queued: {stored} events of 10 KB"
    );
    assert_eq!(stream_length(&redis).await, stored + 1);
    assert_eq!(
        server.gateway().metrics.get(wsgate::metrics::InboundEvent::QueueFull),
        10 - stored
    );
}

/// The stream on a Redis of its own (--inbound-redis-url): client traffic never lands beside
/// the sessions.
#[tokio::test]
async fn the_stream_can_live_on_a_redis_of_its_own() {
    let stream_redis = Redis::start().await;
    let (redis, server, cookie) =
        gateway_with_user(ALICE, r#""alice""#, &["--inbound-redis-url", &stream_redis.url()]).await;
    let (mut client, _) = Client::connect_as(server.local_addr(), &cookie).await;
    client.send(r#"421["note","apart"]"#).await;
    assert_eq!(client.ack_of(1).await["ok"], json!(true));
    assert_eq!(stream_length(&stream_redis).await, 1);
    assert_eq!(stream_length(&redis).await, 0, "nothing beside the sessions");
}
