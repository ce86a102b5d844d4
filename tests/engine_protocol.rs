//! Engine.IO / Socket.IO behaviour over real WebSockets: handshake errors, Origin policy,
//! heartbeats, limits, malformed input, namespaces and acks.

use std::time::{Duration, Instant};
use support::*;

const SID: &str = "2LSRYfxsWL6_Ytcl1GLd9kx9kTQxgj1r";

#[tokio::test]
async fn bad_handshakes_get_engine_io_json_errors() {
    let (_redis, server, _) = gateway_with_user(SID, "42", &[]).await;
    let addr = server.local_addr();
    let ws = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    let cases = [
        (
            "GET",
            "/socket.io/?EIO=3&transport=websocket",
            &ws[..],
            400,
            r#"{"code":5,"message":"Unsupported protocol version"}"#,
        ),
        (
            "GET",
            "/socket.io/?transport=websocket",
            &ws[..],
            400,
            r#"{"code":5,"message":"Unsupported protocol version"}"#,
        ),
        (
            "POST",
            "/socket.io/?EIO=4&transport=polling",
            &[][..],
            400,
            r#"{"code":2,"message":"Bad handshake method"}"#,
        ),
        (
            "GET",
            "/socket.io/?EIO=4&transport=carrier-pigeon",
            &ws[..],
            400,
            r#"{"code":0,"message":"Transport unknown"}"#,
        ),
        (
            "GET",
            "/socket.io/?EIO=4&transport=websocket",
            &[][..],
            400,
            r#"{"code":3,"message":"Bad request"}"#,
        ),
        (
            "POST",
            "/socket.io/?EIO=4&transport=websocket",
            &[][..],
            400,
            r#"{"code":2,"message":"Bad handshake method"}"#,
        ),
        (
            "GET",
            "/socket.io/?EIO=4&transport=websocket&sid=abc",
            &ws[..],
            400,
            r#"{"code":1,"message":"Session ID unknown"}"#,
        ),
    ];
    for (method, path, headers, status, body) in cases {
        assert_eq!(
            http(addr, method, path, headers).await,
            (status, body.to_string()),
            "{method} {path}"
        );
    }
    assert_eq!(http(addr, "GET", "/healthz", &[]).await, (200, "ok".into()));
    let (_, metrics) = http(addr, "GET", "/metrics", &[]).await;
    assert!(
        metrics.contains(r#"wsgate_handshakes_total{reason="bad_request"} 6"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wsgate_polling_refused_total{reason="unknown_sid"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn origin_must_be_same_origin_or_allowed() {
    let (_redis, server, cookie) = gateway_with_user(SID, "42", &[]).await;
    let addr = server.local_addr();
    let (status, body) = Client::open(addr, &[("origin", "https://evil.test"), ("cookie", &cookie)])
        .await
        .err()
        .expect("refused");
    assert_eq!((status, body.as_str()), (403, r#"{"code":4,"message":"Forbidden"}"#));
    // Same origin (Origin host:port == Host) and no Origin at all are fine.
    let same = format!("http://{addr}");
    assert!(Client::open(addr, &[("origin", &same)]).await.is_ok());
    assert!(Client::open(addr, &[]).await.is_ok());

    let (_redis, server, cookie) = gateway_with_user(
        SID,
        "42",
        &[
            "--allowed-origin",
            "https://app.test",
            "--allowed-origin",
            "http://localhost:8080",
        ],
    )
    .await;
    let addr = server.local_addr();
    let (_c, _) = Client::open(addr, &[("origin", "https://app.test"), ("cookie", &cookie)])
        .await
        .expect("listed origin");
    let (status, _) = Client::open(addr, &[("origin", "https://app.test.evil.test")])
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 403);
    let same = format!("http://{addr}");
    assert_eq!(
        Client::open(addr, &[("origin", &same)]).await.err().map(|e| e.0),
        Some(403),
        "the list replaces same-origin"
    );
    assert_eq!(
        server.gateway().metrics.get(wsgate::metrics::Handshake::OriginRejected),
        2
    );
}

#[tokio::test]
async fn heartbeat_keeps_answering_clients_and_drops_silent_ones() {
    let (_redis, server, cookie) = gateway_with_user(
        SID,
        "42",
        &[
            "--inbound-stream",
            "",
            "--ping-interval",
            "100",
            "--ping-timeout",
            "150",
        ],
    )
    .await;
    let addr = server.local_addr();

    let (mut alive, _) = Client::connect_as(addr, &cookie).await;
    let (mut silent, _) = Client::connect_as(addr, &cookie).await;
    silent.auto_pong = false;
    let started = Instant::now();
    // The silent client sees a ping, does not answer, and is closed after the timeout; the
    // answering client survives many intervals meanwhile.
    let silent_closed_after = async {
        assert_eq!(silent.text().await, "2");
        silent.closed().await;
        started.elapsed()
    };
    let ((), elapsed) = tokio::join!(alive.idle(Duration::from_millis(1000)), silent_closed_after);
    assert!(
        elapsed >= Duration::from_millis(150) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    alive.send(r#"421["still-here"]"#).await;
    assert_eq!(alive.text().await, r#"431[{"ok":false,"error":"unhandled"}]"#);
    assert_eq!(
        server.gateway().metrics.get(wsgate::metrics::Disconnect::PingTimeout),
        1
    );
}

#[tokio::test]
async fn frame_over_max_payload_closes_the_connection() {
    let (_redis, server, cookie) = gateway_with_user(SID, "42", &["--max-payload", "1000"]).await;
    let (mut client, _) = Client::connect_as(server.local_addr(), &cookie).await;
    let big = format!(r#"42["big","{}"]"#, "x".repeat(2000));
    let _ = futures_util::SinkExt::send(&mut client.ws, tokio_tungstenite::tungstenite::Message::text(big)).await;
    let code = client.closed().await;
    assert!(matches!(code, Some(1009) | None), "{code:?}");
    eventually("counted", || {
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::Disconnect::PayloadTooLarge)
            == 1
    })
    .await;
}

/// Each malformed input closes only its own connection; a bystander keeps working.
#[tokio::test]
async fn malformed_packets_close_only_their_connection() {
    let (_redis, server, cookie) =
        gateway_with_user(SID, "42", &["--inbound-stream", "", "--namespace", "/admin"]).await;
    let addr = server.local_addr();
    let (mut bystander, _) = Client::connect_as(addr, &cookie).await;

    let garbage: &[&[&str]] = &[
        &["x"],
        &["4"],
        &["49"],
        &["42"],
        &["42[]"],
        &[r#"42{"a":1}"#],
        &[r#"42["connect"]"#],
        &["42[1,"],
        &["bAQID"],
        &["2"],
        &[r#"40"str""#],
        &["40", "40"],
        &[r#"42/admin,["not-joined"]"#],
        &[
            r#"451-["a",{"_placeholder":true,"num":0}]"#,
            r#"42["text-while-binary"]"#,
        ],
        &[r#"4511-["a"]"#],
        &[r#"44{"message":"client cannot send this"}"#],
    ];
    for frames in garbage {
        let (mut client, _) = Client::open(addr, &[("cookie", &cookie)]).await.unwrap();
        if frames[0] != "40" && !frames[0].starts_with("40\"") {
            client.send("40").await;
            client.text().await;
        }
        for f in *frames {
            client.send(f).await;
        }
        if let ["40", "40"] = frames {
            assert!(client.text().await.starts_with("40{"));
        }
        client.closed().await;
    }
    // Binary data that no packet announced.
    let (mut client, _) = Client::connect_as(addr, &cookie).await;
    client.send_binary(&[1, 2, 3]).await;
    client.closed().await;

    bystander.send(r#"427["ping"]"#).await;
    assert_eq!(bystander.text().await, r#"437[{"ok":false,"error":"unhandled"}]"#);
    eventually("only the bystander left", || {
        server.gateway().namespace("/").unwrap().socket_count() == 1
    })
    .await;
    assert!(server.gateway().metrics.get(wsgate::metrics::Disconnect::ParseError) >= 16);
}

#[tokio::test]
async fn namespaces_events_and_unhandled_acks() {
    let (_redis, server, cookie) =
        gateway_with_user(SID, "42", &["--inbound-stream", "", "--namespace", "/admin"]).await;
    let addr = server.local_addr();
    let (mut client, _) = Client::open(addr, &[("cookie", &cookie)]).await.unwrap();

    client.send("40/nope,").await;
    assert_eq!(client.text().await, r#"44/nope,{"message":"Invalid namespace"}"#);
    // The connection stays usable.
    client.send("40/admin,").await;
    assert!(client.text().await.starts_with(r#"40/admin,{"sid":""#));
    client.send(r#"40{"token":"ignored"}"#).await;
    assert!(client.text().await.starts_with(r#"40{"sid":""#));

    // Events without an ack are dropped silently; with an ack they are answered.
    client.send(r#"42["no-ack"]"#).await;
    client.send(r#"42/admin,5["with-ack",1]"#).await;
    assert_eq!(client.text().await, r#"43/admin,5[{"ok":false,"error":"unhandled"}]"#);
    // Binary events are reassembled before they are answered.
    client.send(r#"451-9["bin",{"_placeholder":true,"num":0}]"#).await;
    client.send_binary(&[1, 2, 3]).await;
    assert_eq!(client.text().await, r#"439[{"ok":false,"error":"unhandled"}]"#);
    assert_eq!(
        server.gateway().metrics.get(wsgate::metrics::UnhandledEvent::Dropped),
        3
    );

    // Leaving one namespace keeps the other.
    client.send("41/admin,").await;
    client.send(r#"4211["after"]"#).await;
    assert_eq!(client.text().await, r#"4311[{"ok":false,"error":"unhandled"}]"#);
    let gw = server.gateway();
    eventually("left /admin", || gw.namespace("/admin").unwrap().socket_count() == 0).await;
    assert_eq!(gw.namespace("/").unwrap().socket_count(), 1);
}

#[tokio::test]
async fn connection_without_namespace_is_closed_after_connect_timeout() {
    let (_redis, server, _) = gateway_with_user(SID, "42", &["--connect-timeout", "200"]).await;
    let (mut client, _) = Client::open(server.local_addr(), &[]).await.unwrap();
    let started = Instant::now();
    client.closed().await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::Disconnect::ConnectTimeout),
        1
    );
}

#[tokio::test]
async fn server_disconnect_sends_disconnect_packet_then_closes() {
    let (_redis, server, cookie) = gateway_with_user(SID, "42", &[]).await;
    let (mut client, socket_id) = Client::connect_as(server.local_addr(), &cookie).await;
    let socket = server.gateway().namespace("/").unwrap().socket(&socket_id).unwrap();
    server.gateway().disconnect(&socket, true);
    assert_eq!(client.text().await, "41");
    client.closed().await;
}

#[tokio::test]
async fn shutdown_closes_every_transport_so_clients_reconnect() {
    let (_redis, server, cookie) = gateway_with_user(SID, "42", &[]).await;
    let (mut joined, _) = Client::connect_as(server.local_addr(), &cookie).await;
    let (mut idle, _) = Client::open(server.local_addr(), &[]).await.unwrap();
    server.shutdown().await;
    // No Socket.IO DISCONNECT first: after one, the official client would not reconnect.
    assert_eq!(joined.closed().await, Some(1001));
    assert_eq!(idle.closed().await, Some(1001));
}

#[test]
fn binary_refuses_to_start_without_a_secret() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .env_remove("WSGATE_SESSION_SECRET")
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no session secret"), "{stderr}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--session-secret-file",
        "--allowed-origin",
        "--reject-at-upgrade",
        "WSGATE_PING_INTERVAL",
        "--log-format",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

#[test]
fn deploy_env_example_only_uses_real_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/wsgate.env.example"
    ))
    .unwrap();
    for var in example
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| k.starts_with("WSGATE_"))
    {
        assert!(help.contains(var), "{var} is not a wsgate flag");
    }
}

#[tokio::test]
async fn max_connections_caps_connections_at_accept_and_sessions_with_503() {
    let (_redis, server, cookie) = gateway_with_user(SID, "42", &["--max-connections", "2"]).await;
    let addr = server.local_addr();
    let (_a, _) = Client::connect_as(addr, &cookie).await;
    let (mut b, _) = Client::connect_as(addr, &cookie).await;
    // A third connection is closed at accept, before any byte is read.
    assert!(closed_at_accept(addr).await, "a connection over the cap is closed");
    assert_eq!(
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::ConnectionRefused::MaxConnections),
        1
    );
    // A slot frees when a client leaves.
    b.send("1").await;
    b.closed().await;
    eventually("one connection left", || server.gateway().connection_count() == 1).await;
    let (_c, _) = Client::connect_as(addr, &cookie).await;

    // Connected sessions count too: polling sessions outlive their requests' connections, and
    // a handshake beyond the cap gets engine.io's 503 so the client backs off. (Sessions not
    // yet connected have a budget of their own: tests/capacity.rs.)
    let (_redis, server, cookie) = gateway_with_user(SID, "42", &["--max-connections", "2"]).await;
    let addr = server.local_addr();
    for _ in 0..2 {
        let open = http_request(
            addr,
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            &[("cookie", &cookie)],
            b"",
        )
        .await;
        assert_eq!(open.status, 200);
        let sid = serde_json::from_str::<serde_json::Value>(open.text().strip_prefix('0').unwrap()).unwrap()["sid"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        let connect = http_request(addr, "POST", &path, &[("cookie", &cookie)], b"40").await;
        assert_eq!(connect.status, 200);
    }
    eventually("two connected sessions", || server.gateway().pending().total() == 0).await;
    assert_eq!(
        http(addr, "GET", "/socket.io/?EIO=4&transport=polling", &[]).await,
        (503, r#"{"code":4,"message":"Server at capacity"}"#.to_string())
    );
    assert_eq!(
        server.gateway().metrics.get(wsgate::metrics::Handshake::OverCapacity),
        1
    );
}

/// Whether the server closes a fresh TCP connection without answering anything.
async fn closed_at_accept(addr: std::net::SocketAddr) -> bool {
    use tokio::io::AsyncReadExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}
