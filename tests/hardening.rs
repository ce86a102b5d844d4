//! The five ways a stranger could take a node down or pin its memory, each reproduced against a
//! real server and a real redis-server: what it did before, what bounds it now. Memory is judged
//! by the gateway's own accounting (connections, queues, pending acks) and `/proc`.

use futures_util::SinkExt;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const SID: &str = "hardeningSessionId-0123456789abcd";

fn gauge(server: &wsgate::Server, name: &str) -> i64 {
    let rendered = server.gateway().metrics.render();
    rendered
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(-1)
}

/// Finding 1a: slowloris. Connections that trickle their headers used to stay open for ever.
#[tokio::test]
async fn slowloris_connections_are_capped_per_address_and_timed_out() {
    let (_redis, server, _) =
        gateway_with_user(SID, "42", &["--handshake-timeout", "700", "--max-pending-per-ip", "20"]).await;
    let addr = server.local_addr();
    let mut attackers = Vec::new();
    for _ in 0..100 {
        let mut tcp = tcp_from("127.0.0.9".parse().unwrap(), addr).await;
        let _ = tcp.write_all(b"G").await;
        attackers.push(tcp);
    }
    // One more byte now and then, as slowloris does.
    for tcp in &mut attackers {
        let _ = tcp.write_all(b"E").await;
    }
    // Others are served meanwhile.
    assert!(healthz(addr).await, "/healthz answers during the attack");
    let refused = server
        .gateway()
        .metrics
        .get(wsgate::metrics::ConnectionRefused::PendingPerIp);
    assert!(
        refused >= 80,
        "at most 20 pending connections from one address; refused {refused}"
    );
    // Every attacker is closed by the header timeout, and nothing of them remains.
    for tcp in &mut attackers {
        assert!(
            tcp_closed_within(tcp, Duration::from_secs(3)).await,
            "slowloris connection closed"
        );
    }
    eventually("no connection left open", || {
        gauge(&server, "wsgate_tcp_connections") == 0
    })
    .await;
}

/// Finding 1b: descriptor exhaustion. Idle connections used to take every descriptor, and
/// /healthz with them.
#[tokio::test]
async fn a_full_public_port_leaves_the_admin_port_answering() {
    let (_redis, server, _) = gateway_with_user(
        SID,
        "42",
        &[
            "--max-connections",
            "60",
            "--max-pending-per-ip",
            "0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    let addr = server.local_addr();
    let admin = server.admin_addr().expect("admin listener");
    let mut idle = Vec::new();
    for i in 0..150 {
        idle.push(tcp_from(format!("127.0.{}.{}", 10 + i / 50, 1 + i % 50).parse().unwrap(), addr).await);
    }
    eventually("60 connections held", || gauge(&server, "wsgate_tcp_connections") == 60).await;
    assert!(!healthz(addr).await, "the public port is full");
    assert!(healthz(admin).await, "the admin port still answers");
    let metrics = http(admin, "GET", "/metrics", &[]).await.1;
    assert!(
        metrics.contains(r#"wsgate_connections_refused_total{reason="max_connections"}"#),
        "{metrics}"
    );
    drop(idle);
    eventually("the attackers' connections are gone", || {
        gauge(&server, "wsgate_tcp_connections") == 0
    })
    .await;
    assert!(healthz(addr).await, "the public port serves again");
    assert_eq!(
        http(addr, "GET", "/metrics", &[]).await.0,
        404,
        "metrics only on the admin port"
    );
}

/// Round 2 finding: the admin listener's 64-connection cap was fillable (70 idle connections left
/// `/healthz` unreachable for 10 s). Idle admin connections are closed after 1 s now.
#[tokio::test]
async fn the_admin_port_answers_with_its_cap_full() {
    let (_redis, server, _) = gateway_with_user(
        SID,
        "42",
        &["--max-pending-per-ip", "0", "--admin-listen", "127.0.0.1:0"],
    )
    .await;
    let admin = server.admin_addr().expect("admin listener");
    let mut idle = Vec::new();
    for i in 0..70 {
        idle.push(tcp_from(format!("127.0.{}.{}", 20 + i / 50, 1 + i % 50).parse().unwrap(), admin).await);
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while !healthz(admin).await {
        assert!(tokio::time::Instant::now() < until, "/healthz unreachable for 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut closed = 0;
    for tcp in &mut idle {
        if tcp_closed_within(tcp, Duration::from_secs(3)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, idle.len(), "every idle admin connection is closed");
}

async fn ws(addr: SocketAddr, cookie: Option<&str>) -> Client {
    let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    Client::open(addr, &headers).await.expect("upgrade").0
}

/// Finding 2: attachments pinned memory. A cookie-less client could announce attachments and
/// send 9 × 1 MB before joining anything; a logged-in one could hold them for ever.
#[tokio::test]
async fn binary_input_is_bounded_per_session() {
    let (_redis, server, cookie) =
        gateway_with_user(SID, "42", &["--ping-interval", "10000", "--ping-timeout", "600"]).await;
    let addr = server.local_addr();
    let metrics = &server.gateway().metrics;

    // No namespace joined: the binary header alone closes the session.
    let mut anonymous = ws(addr, None).await;
    anonymous.send(r#"451-["x",{"_placeholder":true,"num":0}]"#).await;
    assert!(matches!(anonymous.recv().await, Received::Closed(_)));
    assert_eq!(metrics.get(wsgate::metrics::Malformed::BinaryNotJoined), 1);

    // Joined: attachments over --max-payload in all close the session at once.
    let (mut client, _) = Client::connect_as(addr, &cookie).await;
    let placeholders: Vec<String> = (0..9)
        .map(|n| format!(r#"{{"_placeholder":true,"num":{n}}}"#))
        .collect();
    client.send(&format!(r#"459-["x",{}]"#, placeholders.join(","))).await;
    let frame = vec![7u8; 600_000];
    client.send_binary(&frame).await;
    let _ = client.ws.send(Message::binary(frame.clone())).await;
    assert!(matches!(
        client.recv().await,
        Received::Closed(Some(1009)) | Received::Closed(None)
    ));
    assert_eq!(metrics.get(wsgate::metrics::Malformed::AttachmentsTooLarge), 1);

    // Joined, but the packet is never completed: closed after pingTimeout.
    let (mut client, _) = Client::connect_as(addr, &cookie).await;
    client
        .send(r#"452-["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    client.send_binary(&[1, 2, 3]).await;
    assert!(matches!(client.recv().await, Received::Closed(_)));
    assert_eq!(metrics.get(wsgate::metrics::Malformed::IncompleteBinary), 1);
    eventually("all sessions gone", || server.gateway().connection_count() == 0).await;
}

/// Finding 3: a burst, or one large broadcast, used to disconnect every recipient (20/20),
/// readers included, without a close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_reach_readers_and_only_a_stalled_client_is_cut() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (_redis, server, cookie) = gateway_with_user(SID, "42", &["--slow-consumer-timeout", "800"]).await;
    let addr = server.local_addr();
    // Readers read all the time, as browsers do, and count the bytes they got.
    let mut received = Vec::new();
    for _ in 0..20 {
        let (mut client, _) = Client::connect_as(addr, &cookie).await;
        let bytes = Arc::new(AtomicU64::new(0));
        received.push(bytes.clone());
        tokio::spawn(async move {
            while let Received::Text(text) = client.recv().await {
                bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
            }
        });
    }
    let nsp = server.gateway().namespace("/").unwrap().clone();
    let broadcast = |text: String| {
        let packet = wsgate::protocol::socketio::Packet::event("/", vec!["big".into(), text.into()], vec![]);
        nsp.broadcast(&["user:42"], &[] as &[&str], &packet)
    };
    let drops = || server.gateway().metrics.oversized_drops.load(Ordering::Relaxed);
    let dropped_before = drops();
    // 2 MB in one message (twice the old 1 MiB limit) and a 2 MB burst of 100 KB messages,
    // queued at once; then one message over the 16 MiB cap: dropped for each client, not a
    // disconnect.
    assert_eq!(broadcast("a".repeat(2_000_000)), 20);
    for _ in 0..20 {
        assert_eq!(broadcast("b".repeat(100_000)), 20);
    }
    assert_eq!(broadcast("c".repeat(17 << 20)), 0);
    assert!(drops() - dropped_before >= 20, "one drop per client");
    let burst = 4_000_000;
    eventually_within("every reader got the whole burst", Duration::from_secs(10), || {
        received.iter().all(|b| b.load(Ordering::Relaxed) > burst)
    })
    .await;
    let metrics = &server.gateway().metrics;
    assert_eq!(
        metrics.get(wsgate::metrics::Disconnect::SlowConsumer),
        0,
        "nobody was cut"
    );
    assert_eq!(server.gateway().connection_count(), 20);

    // A client that stops reading: once the kernel's buffers are full its writes block, and
    // after --slow-consumer-timeout it is cut, alone, its queue still under the cap.
    let (stalled, _) = Client::connect_as(addr, &cookie).await;
    for _ in 0..120 {
        broadcast("d".repeat(100_000));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually_within(
        "the stalled client is closed as a slow consumer",
        Duration::from_secs(10),
        || metrics.get(wsgate::metrics::Disconnect::SlowConsumer) == 1,
    )
    .await;
    // Unregistered once its close frame was tried (a stalled client gets 1 s for it).
    eventually_within("the stalled session is gone", Duration::from_secs(5), || {
        server.gateway().connection_count() == 20
    })
    .await;
    drop(stalled);
    eventually_within("the readers got everything", Duration::from_secs(10), || {
        received.iter().all(|b| b.load(Ordering::Relaxed) > burst + 12_000_000)
    })
    .await;
    assert_eq!(
        metrics.get(wsgate::metrics::Disconnect::SlowConsumer),
        1,
        "only the stalled client"
    );
}

/// Finding 5: Origin failed open (an unreadable Origin passed; `https://host` passed for a
/// plain-http request).
#[tokio::test]
async fn origin_fails_closed() {
    let (_redis, server, cookie) = gateway_with_user(SID, "42", &[]).await;
    let addr = server.local_addr();
    let https = format!("https://{addr}");
    let refused = Client::open(addr, &[("origin", &https), ("cookie", &cookie)]).await;
    assert_eq!(refused.err().map(|e| e.0), Some(403), "https page, http request");
    let garbled = http(
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[("origin", "http://\u{00e9}.test")],
    )
    .await;
    assert_eq!(garbled.0, 403, "unreadable Origin");
    // X-Forwarded-Proto is believed only with --trust-proxy.
    let forwarded = [("origin", https.as_str()), ("x-forwarded-proto", "https")];
    assert_eq!(Client::open(addr, &forwarded).await.err().map(|e| e.0), Some(403));
    let (_redis, server, _) = gateway_with_user(SID, "42", &["--trust-proxy"]).await;
    let addr = server.local_addr();
    let https = format!("https://{addr}");
    let forwarded = [("origin", https.as_str()), ("x-forwarded-proto", "https")];
    assert!(
        Client::open(addr, &forwarded).await.is_ok(),
        "TLS ended at a trusted proxy"
    );
}

/// Round 2 finding: --max-pending-per-ip stopped counting a connection after its first complete
/// request, so one address held 896 keep-alive connections trickling a second request and
/// logins from other addresses failed. A keep-alive connection counts again while it waits for
/// its next request.
#[tokio::test]
async fn keep_alive_connections_count_while_they_wait() {
    let (_redis, server, _) = gateway_with_user(SID, "42", &["--max-pending-per-ip", "10"]).await;
    let addr = server.local_addr();
    let attacker: std::net::IpAddr = "127.0.9.1".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut tcp = tcp_from(attacker, addr).await;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "answered, kept alive");
        held.push(tcp);
    }
    // The eleventh from that address is closed at accept; another address gets in.
    let mut refused = tcp_from(attacker, addr).await;
    assert!(
        tcp_closed_within(&mut refused, Duration::from_secs(2)).await,
        "the address's idle keep-alive connections count"
    );
    assert!(healthz(addr).await, "other addresses are served");
    assert!(
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::ConnectionRefused::PendingPerIp)
            >= 1
    );
}
