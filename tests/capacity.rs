//! Capacity belongs to connected users (hardening round 2): sessions that have not connected a
//! namespace yet have a budget of their own, node-wide and per client address, handshakes are
//! rate-limited per address, and a user's sockets per node are capped. A flood from one address
//! leaves logins from other addresses succeeding. Real server, real redis-server, clients on
//! several loopback addresses.

use std::net::IpAddr;
use std::time::Duration;
use support::*;

const ALICE: &str = "capacityAliceSession-0123456789ab";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A polling handshake from `source`; its HTTP status.
async fn polling_handshake(source: IpAddr, addr: std::net::SocketAddr, cookie: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    http_request_from(
        source,
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &headers,
        b"",
    )
    .await
    .status
}

/// A full login from `source`: a WebSocket session whose CONNECT is answered.
async fn logs_in(source: IpAddr, addr: std::net::SocketAddr, cookie: &str) -> bool {
    match Client::open_from(source, addr, &[("cookie", cookie)]).await {
        Ok((mut client, _)) => {
            client.send("40").await;
            client.text().await.starts_with("40{\"sid\"")
        }
        Err(_) => false,
    }
}

/// Round 2 finding: cookie-less polling sessions hold no TCP connection but counted against
/// --max-connections until --connect-timeout: 4,200 anonymous handshakes from one address
/// locked every login out for 40 s; one valid cookie reused did the same; so did anonymous
/// WebSockets that never sent CONNECT.
#[tokio::test]
async fn a_flood_from_one_address_leaves_logins_from_others_in() {
    let (_redis, server, cookie) = gateway_with_user(
        ALICE,
        r#""alice""#,
        &[
            "--max-connections",
            "100",
            "--max-pending-sessions-per-ip",
            "40",
            "--max-handshakes-per-second-per-ip",
            "0",
        ],
    )
    .await;
    let addr = server.local_addr();
    let attacker = ip("127.0.5.1");
    // Anonymous polling sessions, a valid cookie reused, and WebSockets that never CONNECT.
    let mut refused = 0;
    for n in 0..150 {
        let cookie = (n % 2 == 0).then_some(cookie.as_str());
        if polling_handshake(attacker, addr, cookie).await == 503 {
            refused += 1;
        }
    }
    assert_eq!(refused, 110, "40 pending sessions from one address, the rest refused");
    let mut sockets = Vec::new();
    for _ in 0..20 {
        sockets.push(Client::open_from(ip("127.0.5.2"), addr, &[]).await);
    }
    assert_eq!(
        sockets.iter().filter(|s| s.is_ok()).count(),
        20,
        "another address has its own budget"
    );
    assert_eq!(server.gateway().pending().total(), 60);
    // Logins from other addresses go through, well past what the flood opened.
    for n in 0..60 {
        let source = ip(&format!("127.0.6.{}", 1 + n));
        assert!(logs_in(source, addr, &cookie).await, "login {n} from {source}");
    }
    assert_eq!(
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::Handshake::PendingFullAddress),
        110
    );
}

/// A session that sends no CONNECT is closed after --pending-timeout, and its place is free.
#[tokio::test]
async fn a_session_that_never_connects_gives_its_place_back() {
    let (_redis, server, _) = gateway_with_user(ALICE, r#""alice""#, &["--pending-timeout", "300ms"]).await;
    let addr = server.local_addr();
    let (mut silent, _) = Client::open_from(ip("127.0.7.1"), addr, &[]).await.unwrap();
    assert_eq!(server.gateway().pending().total(), 1);
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "closed for not connecting"
    );
    eventually("its pending place given back", || {
        server.gateway().pending().total() == 0
    })
    .await;
}

/// Handshakes per address: a burst of twice the rate, then 503 "Server busy"; other addresses
/// keep theirs.
#[tokio::test]
async fn handshakes_are_rate_limited_per_address() {
    let (_redis, server, _) =
        gateway_with_user(ALICE, r#""alice""#, &["--max-handshakes-per-second-per-ip", "5"]).await;
    let addr = server.local_addr();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(polling_handshake(ip("127.0.8.1"), addr, None).await);
    }
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (10..=11).contains(&accepted),
        "a burst of 10 (and what refilled): {statuses:?}"
    );
    assert_eq!(
        polling_handshake(ip("127.0.8.2"), addr, None).await,
        200,
        "another address"
    );
    assert!(
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::Handshake::RateLimitedAddress)
            >= 1
    );
}

/// Behind a trusted proxy the client address is the one the proxy appended to X-Forwarded-For:
/// clients behind one proxy get budgets of their own (and a client cannot choose its address
/// by writing the header's first entries).
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_counts() {
    let (_redis, server, _) = gateway_with_user(
        ALICE,
        r#""alice""#,
        &["--trust-proxy", "--max-pending-sessions-per-ip", "2"],
    )
    .await;
    let addr = server.local_addr();
    let via_proxy = |client: &'static str| async move {
        let forwarded = format!("6.6.6.6, {client}");
        http_request(
            addr,
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            &[("x-forwarded-for", forwarded.as_str())],
            b"",
        )
        .await
        .status
    };
    assert_eq!(via_proxy("203.0.113.1").await, 200);
    assert_eq!(via_proxy("203.0.113.1").await, 200);
    assert_eq!(via_proxy("203.0.113.1").await, 503, "that client's budget is spent");
    assert_eq!(
        via_proxy("203.0.113.2").await,
        200,
        "the next client behind the proxy has its own"
    );
}

/// --max-connections-per-user: the next socket of that user gets CONNECT_ERROR.
#[tokio::test]
async fn a_users_sockets_per_node_are_capped() {
    let (_redis, server, cookie) = gateway_with_user(ALICE, r#""alice""#, &["--max-connections-per-user", "2"]).await;
    let addr = server.local_addr();
    let (_a, first) = Client::connect_answer(addr, &cookie).await;
    let (_b, second) = Client::connect_answer(addr, &cookie).await;
    assert!(first.starts_with("40{") && second.starts_with("40{"));
    let (_c, third) = Client::connect_answer(addr, &cookie).await;
    assert_eq!(third, r#"44{"message":"Too many connections"}"#);
    assert_eq!(
        server.gateway().metrics.get(wsgate::metrics::Auth::TooManyConnections),
        1
    );
}

/// The same with every flag at its default: a flood of anonymous polling and WebSocket
/// handshakes from one address is cut at that address's budgets, and logins from other
/// addresses go through.
#[tokio::test]
async fn with_default_flags_a_flood_leaves_other_logins_in() {
    let (_redis, server, cookie) = gateway_with_user(ALICE, r#""alice""#, &[]).await;
    let addr = server.local_addr();
    let attacker = ip("127.0.10.1");
    let mut accepted = 0;
    for _ in 0..400 {
        if polling_handshake(attacker, addr, None).await == 200 {
            accepted += 1;
        }
    }
    let mut sockets = Vec::new();
    for _ in 0..100 {
        if let Ok(socket) = Client::open_from(attacker, addr, &[]).await {
            sockets.push(socket);
        }
    }
    assert!(
        accepted + sockets.len() <= 256,
        "one address holds at most its 256 pending sessions: {accepted} polling, {} WebSocket",
        sockets.len()
    );
    for n in 0..20 {
        let source = ip(&format!("127.0.11.{}", 1 + n));
        assert!(logs_in(source, addr, &cookie).await, "login {n} from {source}");
    }
}
