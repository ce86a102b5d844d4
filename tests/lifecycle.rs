//! Deploys: a node that stops goes not-ready first, refuses new connections, and closes its
//! clients in batches spread over the drain timeout (transport closed, no Socket.IO DISCONNECT,
//! so they reconnect elsewhere); Redis unreachable at start is reported, or fatal on request.

mod common;

use common::*;
use std::time::{Duration, Instant};

const SID: &str = "lifecycleSessionId-0123456789abcd";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_goes_unready_then_closes_clients_in_spread_batches() {
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    let server = gateway(&redis.url(), &["--admin-listen", "127.0.0.1:0"]).await;
    let (addr, admin) = (server.local_addr(), server.admin_addr().unwrap());
    redis.wait_for_servers("/", 1).await;
    assert_eq!(http(admin, "GET", "/readyz", &[]).await, (200, "ready".into()));
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
    let mut closed_at = Vec::new();
    for client in &mut clients {
        assert_eq!(client.closed().await, Some(1001));
        closed_at.push(started.elapsed());
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
