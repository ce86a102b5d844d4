//! Deploys: a node that stops goes not-ready first, refuses new connections, and closes its
//! clients in batches spread over the drain timeout (transport closed, no Socket.IO DISCONNECT,
//! so they reconnect elsewhere); Redis unreachable at start is reported, or fatal on request.

use std::time::{Duration, Instant};
use support::*;

const SID: &str = "lifecycleSessionId-0123456789abcd";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_goes_unready_then_closes_clients_in_spread_batches() {
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    let server = gateway(&redis.url(), &["--admin-listen", "127.0.0.1:0"]).await;
    let (addr, admin) = (server.local_addr(), server.admin_addr().unwrap());
    redis.wait_for_servers("/", 1).await;
    // Redis counts the subscriber as soon as its first channel is subscribed; the node turns
    // ready once all of them are.
    let deadline = Instant::now() + Duration::from_secs(5);
    while http(admin, "GET", "/readyz", &[]).await != (200, "ready".into()) {
        assert!(Instant::now() < deadline, "the node never turned ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cookie = cookie_for(SID, SECRET);
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::connect_as(addr, &cookie).await.0);
    }

    let started = Instant::now();
    let drain = tokio::spawn(server.drain(Duration::from_millis(1000)));
    let mut readyz = (0, String::new());
    for _ in 0..50 {
        readyz = http(admin, "GET", "/readyz", &[]).await;
        if readyz.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(readyz, (503, "draining".into()));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections"
    );

    // Every client's transport is closed (1001), with no DISCONNECT packet before it.
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                assert_eq!(client.closed().await, Some(1001));
                started.elapsed()
            })
        })
        .collect();
    let mut closed_at = Vec::new();
    for watcher in watchers {
        closed_at.push(watcher.await.unwrap());
    }
    let (first, last) = (closed_at.iter().min().unwrap(), closed_at.iter().max().unwrap());
    assert!(
        *first < Duration::from_millis(400),
        "the first batch goes at once: {first:?}"
    );
    assert!(
        *last >= Duration::from_millis(600),
        "the last batch only near the end of the drain: {last:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    let mut process = GatewayProcess::start(&redis.url(), &["--drain-timeout", "300"]).await;
    let (mut client, _) = Client::connect_as(process.addr, &cookie_for(SID, SECRET)).await;
    process.signal_term();
    assert_eq!(client.closed().await, Some(1001));
    assert_eq!(
        process.wait_exit(Duration::from_secs(5)),
        Some(0),
        "exits 0 after the drain"
    );
}

/// SIGTERM under load: sockets on both transports, broadcasts flowing through the cluster and
/// client events being stored in the inbound stream. The node drains, then every task it
/// started (sessions, connections, listeners, the cluster adapter, the inbound writer, the
/// periodic checks) is accounted for in its log before it exits 0.
#[tokio::test]
async fn sigterm_under_load_accounts_for_every_task() {
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    let mut process = GatewayProcess::start_logged(&redis.url(), &["--drain-timeout", "300ms"]).await;
    let cookie = cookie_for(SID, SECRET);
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(Client::connect_as(process.addr, &cookie).await.0);
    }
    // A polling session too (its task has no connection of its own).
    let open = http(
        process.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(open.0, 200, "{}", open.1);
    let emitter = wsgate::cluster::Emitter::new(redis.client().get_connection_manager().await.unwrap(), "socket.io");
    let publishing = tokio::spawn(async move {
        for n in 0u64.. {
            let _ = emitter.of("/").to("user:42").emit("tick", vec![n.into()]).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // Client events with acks, so the inbound writer has work when the signal comes.
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(&format!(r#"42{i}["note",{{"n":{i}}}]"#)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    process.signal_term();
    for client in &mut clients {
        // Broadcasts and acks may still arrive before the close frame.
        let code = loop {
            match client.recv().await {
                Received::Closed(code) => break code,
                Received::Text(_) | Received::Binary(_) => continue,
            }
        };
        assert_eq!(code, Some(1001), "closed as going away");
    }
    assert_eq!(process.wait_exit(Duration::from_secs(10)), Some(0), "{}", process.log());
    publishing.abort();
    let log = process.log();
    let started = log
        .lines()
        .find(|l| l.contains("shutting down: tasks running"))
        .unwrap_or_else(|| panic!("the running tasks are listed at the start:\n{log}"));
    for kind in ["session", "listener", "cluster", "inbound_writer", "session_check"] {
        assert!(started.contains(kind), "{kind} tasks listed in {started:?}");
    }
    assert!(log.contains("every task finished"), "every task accounted for:\n{log}");
    assert!(!log.contains("unfinished"), "{log}");
    let stored: u64 = redis.cmd(&["XLEN", "wsgate:inbound"]).await;
    assert_eq!(
        stored,
        clients.len() as u64,
        "every accepted event was stored before exit"
    );
}

#[tokio::test]
async fn redis_down_at_start_is_not_ready_or_fatal_on_request() {
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let process = GatewayProcess::start(&dead, &[]).await;
    assert_eq!(http(process.addr, "GET", "/healthz", &[]).await, (200, "ok".into()));
    assert_eq!(
        http(process.addr, "GET", "/readyz", &[]).await,
        (503, "Redis unreachable".into())
    );
    let (code, output) = wsgate_cli(&["--redis-url", &dead, "--session-secret", SECRET, "--require-redis"]);
    assert_eq!(code, 2);
    assert!(output.contains("does not answer (--require-redis)"), "{output}");
}

const OTHER: &str = "lifecycleOtherSession-0123456789ab";

#[tokio::test]
async fn a_store_outage_lets_in_only_sessions_verified_within_the_grace() {
    let port = free_port();
    let redis = Redis::start_on(port).await;
    redis.login(SID, "42").await;
    redis.login(OTHER, "7").await;
    let graced = gateway(&redis.url(), &["--store-outage-grace", "60000"]).await;
    let strict = gateway(&redis.url(), &[]).await;
    redis.wait_for_servers("/", 2).await;
    let (alice_cookie, other_cookie) = (cookie_for(SID, SECRET), cookie_for(OTHER, SECRET));
    // Verified once, on each node, before the outage.
    let (mut first, _) = Client::connect_as(graced.local_addr(), &alice_cookie).await;
    let _ = Client::connect_as(strict.local_addr(), &alice_cookie).await;

    drop(redis);
    // Connected sockets stay.
    first.idle(Duration::from_millis(300)).await;
    // Alice reconnects: let in from memory by the node with the grace, not by the other.
    let (_again, answer) = Client::connect_answer(graced.local_addr(), &alice_cookie).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    assert_eq!(graced.gateway().metrics.get(wsgate::metrics::Auth::OutageGrace), 1);
    let (_, refused) = Client::connect_answer(strict.local_addr(), &alice_cookie).await;
    assert_eq!(refused, r#"44{"message":"Session store unavailable"}"#);
    // A session this node never verified is refused even with the grace.
    let (_, refused) = Client::connect_answer(graced.local_addr(), &other_cookie).await;
    assert_eq!(refused, r#"44{"message":"Session store unavailable"}"#);

    // Redis comes back empty: everyone let in during the outage is checked at once, and goes.
    let _redis = Redis::start_on(port).await;
    let (mut again, _) = (first, ());
    let closing = async {
        loop {
            if let Received::Closed(_) = again.recv().await {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("closed once the store answers again");
}

#[tokio::test]
async fn socket_activity_touches_the_session_at_most_once_per_interval() {
    let redis = Redis::start().await;
    // Written as express-session does: cookie.originalMaxAge 3,600,000 ms, EX 3600.
    redis.login(SID, "42").await;
    // Revalidation off: starting at a random point of its interval, it could close the socket
    // after the DEL below, before the touch this test waits for.
    let server = gateway(&redis.url(), &["--touch-sessions", "400", "--revalidate-interval", "0"]).await;
    let key = format!("sess:{SID}");
    let ttl = || async { redis.cmd::<i64>(&["TTL", &key]).await };
    let (mut client, _) = Client::connect_as(server.local_addr(), &cookie_for(SID, SECRET)).await;
    let _: i64 = redis.cmd(&["EXPIRE", &key, "100"]).await;

    // Activity right after the handshake (which read the session) does not touch yet.
    client.send(r#"42["e"]"#).await;
    client.idle(Duration::from_millis(100)).await;
    assert!(ttl().await <= 100);
    // After the interval, the next event extends it to the cookie's maxAge.
    tokio::time::sleep(Duration::from_millis(400)).await;
    client.send(r#"42["e"]"#).await;
    let metrics = &server.gateway().metrics;
    eventually("touched", || metrics.get(wsgate::metrics::SessionTouch::Extended) == 1).await;
    assert!(ttl().await > 3500, "extended to originalMaxAge");
    // At most once per interval.
    let _: i64 = redis.cmd(&["EXPIRE", &key, "100"]).await;
    client.send(r#"42["e"]"#).await;
    client.idle(Duration::from_millis(100)).await;
    assert!(ttl().await <= 100);
    // A deleted session is never brought back.
    let _: i64 = redis.cmd(&["DEL", &key]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    client.send(r#"42["e"]"#).await;
    eventually("the touch found nothing", || {
        metrics.get(wsgate::metrics::SessionTouch::Gone) == 1
    })
    .await;
    assert_eq!(redis.cmd::<i64>(&["EXISTS", &key]).await, 0);
}
