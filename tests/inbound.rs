//! Client events reach backends through a Redis Stream, acks mean stored, clients join the rooms
//! they are allowed to, and a flooding client is limited without hurting the others.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;

const SID: &str = "inboundSessionId-0123456789abcdef";
const POLITE: &str = "inboundPoliteSession-0123456789ab";

/// `XRANGE` as (entry id, fields).
type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

async fn entries(redis: &Redis, stream: &str) -> Vec<(String, HashMap<String, Vec<u8>>)> {
    let reply: StreamEntries = {
        let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
        let value: redis::Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        redis::from_redis_value(value).unwrap()
    };
    reply
        .into_iter()
        .map(|(id, fields)| (id, fields.into_iter().collect()))
        .collect()
}

#[tokio::test]
async fn an_event_lands_in_the_stream_with_every_field_and_its_ack_has_the_id() {
    let redis = Redis::start().await;
    redis.login(SID, r#""alice""#).await;
    let server = gateway(&redis.url(), &["--node-id", "node-a"]).await;
    let (mut client, socket_id) = Client::connect_as(server.local_addr(), &cookie_for(SID, SECRET)).await;
    client
        .send(r#"451-7["chat",{"text":"hi"},{"_placeholder":true,"num":0}]"#)
        .await;
    client.send_binary(&[1, 2, 3]).await;
    let ack = client.ack_of(7).await;
    assert_eq!(ack["ok"], json!(true));
    let stored = entries(&redis, "wsgate:inbound").await;
    assert_eq!(stored.len(), 1);
    let (id, fields) = &stored[0];
    assert_eq!(ack["id"], json!(id), "the ack names the entry");
    let text = |k: &str| String::from_utf8(fields[k].clone()).unwrap();
    assert_eq!(text("nsp"), "/");
    assert_eq!(text("socket"), socket_id);
    assert_eq!(text("user"), r#""alice""#);
    assert_eq!(text("session"), SID);
    assert_eq!(text("event"), "chat");
    assert_eq!(
        serde_json::from_str::<Value>(&text("args")).unwrap(),
        json!([{"text":"hi"},{"_placeholder":true,"num":0}])
    );
    assert_eq!(fields["bin0"], vec![1, 2, 3]);
    assert_eq!(text("node"), "node-a");
    assert!(text("ts").parse::<u64>().unwrap() > 1_700_000_000_000);

    // Only listed events are forwarded when --inbound-events is set.
    let filtered = gateway(&redis.url(), &["--inbound-events", "chat", "--inbound-stream", "other"]).await;
    let (mut client, _) = Client::connect_as(filtered.local_addr(), &cookie_for(SID, SECRET)).await;
    client.send(r#"421["typing"]"#).await;
    assert_eq!(client.ack_of(1).await, json!({"ok": false, "error": "not_forwarded"}));
    client.send(r#"422["chat","x"]"#).await;
    assert_eq!(client.ack_of(2).await["ok"], json!(true));
    assert_eq!(entries(&redis, "other").await.len(), 1);
}

#[tokio::test]
async fn acks_mean_stored_across_a_redis_outage_and_restart() {
    let data = RedisData::new();
    let port = free_port();
    let redis = Redis::start_persistent(port, &data).await;
    redis.login(SID, "42").await;
    let server = gateway(&redis.url(), &[]).await;
    let (mut client, _) = Client::connect_as(server.local_addr(), &cookie_for(SID, SECRET)).await;
    let mut stored = Vec::new();
    for n in 1..=5u64 {
        client.send(&format!(r#"42{n}["chat",{n}]"#)).await;
        let ack = client.ack_of(n).await;
        assert_eq!(ack["ok"], json!(true));
        stored.push(ack["id"].as_str().unwrap().to_owned());
    }
    drop(redis);
    // Redis down: an error ack, never a false ok.
    client.send(r#"426["chat",6]"#).await;
    assert_eq!(
        client.ack_of(6).await,
        json!({"ok": false, "error": "store_unavailable"})
    );
    let redis = Redis::start_persistent(port, &data).await;
    // Back: acked again, and everything acked before and after is there.
    let mut after = None;
    for n in 7..40u64 {
        client.send(&format!(r#"42{n}["chat",{n}]"#)).await;
        let ack = client.ack_of(n).await;
        if ack["ok"] == json!(true) {
            after = Some(ack["id"].as_str().unwrap().to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stored.push(after.expect("stored again once Redis is back"));
    let ids: Vec<String> = entries(&redis, "wsgate:inbound")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for id in &stored {
        assert!(ids.contains(id), "acked entry {id} survived the restart: {ids:?}");
    }
}

#[tokio::test]
async fn clients_join_only_the_rooms_they_are_allowed_to() {
    let redis = Redis::start().await;
    redis.login(SID, r#""alice""#).await;
    let server = gateway(
        &redis.url(),
        &[
            "--allow-join",
            "public:*",
            "--allow-join",
            "inbox:{user}",
            "--max-rooms-per-socket",
            "2",
        ],
    )
    .await;
    let (mut client, socket_id) = Client::connect_as(server.local_addr(), &cookie_for(SID, SECRET)).await;
    let socket = server.gateway().namespace("/").unwrap().socket(&socket_id).unwrap();
    let ok = json!({"ok": true});
    let forbidden = json!({"ok": false, "error": "forbidden"});
    for (n, room, expected) in [
        (1, "public:lobby", &ok),
        (2, "inbox:alice", &ok),
        (3, "inbox:bob", &forbidden),
        (4, "admin", &forbidden),
    ] {
        client.send(&format!(r#"42{n}["join","{room}"]"#)).await;
        assert_eq!(&client.ack_of(n).await, expected, "{room}");
    }
    let rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
    assert!(rooms.contains(&"public:lobby".to_string()) && rooms.contains(&"inbox:alice".to_string()));
    assert!(!rooms.contains(&"inbox:bob".to_string()));
    client.send(r#"425["join","public:more"]"#).await;
    assert_eq!(client.ack_of(5).await, json!({"ok": false, "error": "too_many_rooms"}));
    client.send(r#"426["leave","public:lobby"]"#).await;
    assert_eq!(client.ack_of(6).await, ok);
    assert!(!socket.rooms().iter().any(|r| &**r == "public:lobby"));
    client.send(r#"427["join","public:more"]"#).await;
    assert_eq!(client.ack_of(7).await, ok, "a left room frees its place");
    // Nothing may be joined without --allow-join.
    let strict = gateway(&redis.url(), &[]).await;
    let (mut client, _) = Client::connect_as(strict.local_addr(), &cookie_for(SID, SECRET)).await;
    client.send(r#"421["join","public:lobby"]"#).await;
    assert_eq!(client.ack_of(1).await, forbidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_limited_and_cut_while_a_polite_one_keeps_its_latency() {
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    redis.login(POLITE, "7").await;
    let server = gateway(&redis.url(), &["--max-events-per-second", "20", "--events-burst", "40"]).await;
    let addr = server.local_addr();
    let (mut flood, _) = Client::connect_as(addr, &cookie_for(SID, SECRET)).await;
    let (mut polite, _) = Client::connect_as(addr, &cookie_for(POLITE, SECRET)).await;
    for n in 1..=60u64 {
        flood.send(&format!(r#"42{n}["spam",{n}]"#)).await;
    }
    // Refusals are acked at once, stored events once written: collect all 60, in any order.
    let mut acks = HashMap::new();
    while acks.len() < 60 {
        let text = flood.text().await;
        let Some(rest) = text.strip_prefix("43") else { continue };
        let digits = rest.find('[').unwrap();
        let ack: Value = serde_json::from_str(&rest[digits..]).unwrap();
        acks.insert(rest[..digits].parse::<u64>().unwrap(), ack[0].clone());
    }
    let limited = acks
        .values()
        .filter(|a| **a == json!({"ok": false, "error": "rate_limited"}))
        .count();
    assert!(limited >= 15, "past the burst, events are refused: {limited}");
    // The polite client on the same node is answered as fast as ever.
    let started = Instant::now();
    polite.send(r#"421["chat","hello"]"#).await;
    assert_eq!(polite.ack_of(1).await["ok"], json!(true));
    assert!(started.elapsed() < Duration::from_millis(500));
    // Keeping on flooding (a whole burst refused in a row) gets the client disconnected.
    for n in 100..300u64 {
        use futures_util::SinkExt;
        // The server may cut it before the loop ends: that is the point.
        let message = tokio_tungstenite::tungstenite::Message::text(format!(r#"42{n}["spam",{n}]"#));
        if flood.ws.send(message).await.is_err() {
            break;
        }
    }
    let closing = async {
        loop {
            if let Received::Closed(_) = flood.recv().await {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closing)
        .await
        .expect("the flooding client is cut");
    assert_eq!(
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::InboundEvent::AbuseDisconnect),
        1
    );
}

/// Admission: a connect storm never exceeds --max-connections; handshakes past the rate, or
/// while too many session lookups wait for Redis, get engine.io's 503 body so clients back off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_holds_under_a_storm() {
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    let server = gateway(&redis.url(), &["--max-connections", "50", "--max-pending-per-ip", "0"]).await;
    let addr = server.local_addr();
    let gauge = || {
        server
            .gateway()
            .metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("wsgate_tcp_connections ")?.parse::<i64>().ok())
            .unwrap()
    };
    let cookie = cookie_for(SID, SECRET);
    let storm: Vec<_> = (0..200)
        .map(|_| {
            let cookie = cookie.clone();
            tokio::spawn(async move {
                // Refused at accept (closed) or accepted: either is an answer, never a hang.
                let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                    format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
                )
                .unwrap();
                request.headers_mut().insert("cookie", cookie.parse().unwrap());
                tokio_tungstenite::connect_async(request).await.ok().map(|(ws, _)| ws)
            })
        })
        .collect();
    let mut peak = 0;
    while storm.iter().any(|t| !t.is_finished()) {
        peak = peak.max(gauge());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut held = Vec::new();
    for task in storm {
        held.extend(task.await.unwrap());
    }
    assert!(
        peak <= 50 && gauge() <= 50,
        "never more than --max-connections: peak {peak}"
    );
    assert_eq!(held.len(), 50, "the cap is used, not undershot");
    drop(held);

    // The handshake rate.
    let limited = gateway(&redis.url(), &["--max-handshakes-per-second", "5"]).await;
    let mut busy = 0;
    for _ in 0..20 {
        let (status, body) = http(limited.local_addr(), "GET", "/socket.io/?EIO=4&transport=polling", &[]).await;
        if status == 503 {
            assert_eq!(body, r#"{"code":4,"message":"Server busy"}"#);
            busy += 1;
        }
    }
    assert!(busy >= 10, "past the rate, 503: {busy}");

    // Session lookups piling up while Redis is frozen: two may wait, the next handshake is
    // refused; once Redis answers, handshakes are admitted again.
    let capped = gateway(
        &redis.url(),
        &["--max-pending-lookups", "2", "--session-lookup-timeout", "5000"],
    )
    .await;
    let (mut warm, _) = Client::connect_as(capped.local_addr(), &cookie).await;
    redis.pause();
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let (mut client, _) = Client::open(capped.local_addr(), &[("cookie", &cookie)]).await.unwrap();
        // The session is looked up at its CONNECT.
        client.send("40").await;
        waiting.push(client);
    }
    eventually("two lookups wait for Redis", || {
        capped.gateway().lookups_in_flight() == 2
    })
    .await;
    let refused = Client::open(capped.local_addr(), &[("cookie", &cookie)]).await;
    redis.resume();
    assert_eq!(
        refused.err(),
        Some((503, r#"{"code":4,"message":"Server busy"}"#.to_string()))
    );
    eventually("the lookups finished", || capped.gateway().lookups_in_flight() == 0).await;
    assert!(Client::open(capped.local_addr(), &[("cookie", &cookie)]).await.is_ok());
    warm.idle(Duration::from_millis(10)).await;
}
