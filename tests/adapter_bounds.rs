//! Adapter messages are bounded: a Redis publisher cannot freeze a node with a huge request or
//! grow its memory with a huge message (a real server, a real redis-server). A test binary of
//! its own: it judges memory by this process's RSS, which other tests running beside it in the
//! same process would move.

use std::time::Duration;
use support::*;

const SID: &str = "adapterBoundsSessionId-0123456789";

/// Work the node must finish, with slack for a debug build on a loaded 2-core machine; the
/// failures this guards against took 19 s (quadratic joins) or never finished.
const DEADLINE: Duration = Duration::from_secs(10);

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Finding 4 of the first hardening round: one message from any peer that can publish to Redis
/// used to freeze the node or take hundreds of MB.
#[tokio::test]
async fn adapter_messages_cannot_freeze_or_bloat_the_node() {
    let (redis, server, cookie) = gateway_with_user(SID, "42", &[]).await;
    let addr = server.local_addr();
    redis.wait_for_servers("/", 1).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::connect_as(addr, &cookie).await.0);
    }
    let conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let publish = |channel: &'static str, payload: Vec<u8>| {
        let mut conn = conn.clone();
        async move {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };

    // REMOTE_JOIN of 20,000 rooms to the 20 sockets (quadratic before: 19 s of stall), then a
    // broadcast to the last room right behind it: applied in order, delivered to all 20.
    let rooms: Vec<String> = (0..20_000).map(|i| format!("\"r{i}\"")).collect();
    let join = format!(
        r#"{{"uid":"emitter","type":2,"opts":{{"rooms":["user:42"],"except":[]}},"rooms":[{}]}}"#,
        rooms.join(",")
    );
    publish("socket.io-request#/#", join.into_bytes()).await;
    let emitter = wsgate::cluster::Emitter::new(redis.client().get_connection_manager().await.unwrap(), "socket.io");
    emitter.of("/").to("r19999").emit("after-join", vec![]).await.unwrap();
    assert!(healthz(addr).await, "/healthz answers");
    for client in &mut clients {
        assert_eq!(client.text_within(DEADLINE).await, r#"42["after-join"]"#);
    }
    let socket = server
        .gateway()
        .namespace("/")
        .unwrap()
        .select(&["user:42"], &[] as &[&str]);
    assert!(socket.iter().all(|s| s.rooms().len() >= 20_000));

    // A 16 MB msgpack array of one-byte items (664 MB once decoded before): refused unread.
    let before = rss_kib();
    let mut huge = vec![0xdd, 0x00, 0xf0, 0x00, 0x00];
    huge.resize(5 + 0x00f0_0000, 0x01);
    publish("socket.io#/#", huge).await;
    eventually_within("the huge message is counted and dropped", DEADLINE, || {
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::AdapterDrop::TooManyElements)
            == 1
    })
    .await;
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 100 * 1024, "RSS grew by {grown} KiB");

    // Broadcast-with-ack requests that ask to wait for ever, to a client that never acks: each
    // client owes at most 256 acks, and each waits at most --max-ack-timeout.
    for n in 0..300 {
        let request = format!(
            r#"{{"uid":"peer01","type":7,"requestId":"req{n}","packet":{{"type":2,"data":["ping"],"nsp":"/"}},"opts":{{"rooms":["user:42"],"except":[],"flags":{{"timeout":18446744073709551615}}}}}}"#
        );
        publish("socket.io-request#/#", request.into_bytes()).await;
    }
    let sockets = server
        .gateway()
        .namespace("/")
        .unwrap()
        .select(&["user:42"], &[] as &[&str]);
    eventually_within("every socket owes exactly the cap", DEADLINE, || {
        sockets
            .iter()
            .all(|s| s.pending_acks() == wsgate::gateway::MAX_PENDING_ACKS)
    })
    .await;
}

/// Round 2 finding: REMOTE_JOIN of 190,000 rooms to 50 sockets delayed broadcasts by 5–9 s and
/// `/healthz` by 8.6 s. A request past 4,000,000 room operations is refused (counted); a large
/// one within it is applied in slices that yield, and `/healthz` answers meanwhile.
#[tokio::test]
async fn huge_room_requests_are_refused_or_applied_in_slices() {
    let (redis, server, cookie) = gateway_with_user(SID, "42", &["--max-connections-per-user", "0"]).await;
    let addr = server.local_addr();
    redis.wait_for_servers("/", 1).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(Client::connect_as(addr, &cookie).await.0);
    }
    let join = |count: usize| {
        let rooms: Vec<String> = (0..count).map(|i| format!("\"j{i}\"")).collect();
        format!(
            r#"{{"uid":"emitter","type":2,"opts":{{"rooms":["user:42"],"except":[]}},"rooms":[{}]}}"#,
            rooms.join(",")
        )
    };
    let _: i64 = redis.cmd(&["PUBLISH", "socket.io-request#/#", &join(190_000)]).await;
    eventually_within("the huge join is refused", DEADLINE, || {
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::AdapterDrop::TooManyOperations)
            == 1
    })
    .await;
    let socket = server
        .gateway()
        .namespace("/")
        .unwrap()
        .select(&["user:42"], &[] as &[&str]);
    assert!(socket.iter().all(|s| !s.in_room("j0")), "nothing of it was applied");

    // 40,000 rooms to 50 sockets (2,000,000 operations): applied, while /healthz answers.
    let _: i64 = redis.cmd(&["PUBLISH", "socket.io-request#/#", &join(40_000)]).await;
    loop {
        assert!(healthz(addr).await, "/healthz answers while a large request is applied");
        if socket.iter().all(|s| s.in_room("j39999")) {
            break;
        }
    }
}
