//! Engine.IO HTTP long-polling and the upgrade to WebSocket, against a real server and a real
//! redis-server: every rule of engine.io 6 the official client relies on, the refusals, and an
//! upgrade with packets in flight both ways.

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use wsgate::gateway::{Socket, SocketHooks};
use wsgate::protocol::socketio::Packet;

const SID: &str = "pollingSessionId-0123456789abcdef";

/// Records the number each client event `["e", n]` carries, and acks it with `n`.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<u64>>,
}

impl SocketHooks for Recorder {
    fn on_event(&self, socket: &Arc<Socket>, packet: Packet) -> bool {
        let Some(Value::Array(args)) = &packet.data else {
            return false;
        };
        let n = args.get(1).and_then(Value::as_u64).unwrap_or(u64::MAX);
        self.events.lock().push(n);
        if let Some(id) = packet.id {
            socket.ack(id, args[1..].to_vec(), packet.attachments.clone());
        }
        true
    }
}

struct Setup {
    _redis: Redis,
    server: wsgate::Server,
    cookie: String,
    recorder: Arc<Recorder>,
}

async fn setup(extra: &[&str]) -> Setup {
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    let url = redis.url();
    let mut argv = vec!["wsgate", "--redis-url", &url, "--session-secret", SECRET];
    argv.extend_from_slice(extra);
    let cli = <wsgate::config::Cli as clap::Parser>::try_parse_from(argv).expect("valid flags");
    let wsgate::config::Settings {
        gateway: mut config,
        http,
        cluster,
        ..
    } = cli.serve.build().expect("valid config");
    let recorder = Arc::new(Recorder::default());
    config.hooks = recorder.clone();
    let server = wsgate::Server::start("127.0.0.1:0".parse().unwrap(), config, http, Some(cluster))
        .await
        .unwrap();
    Setup {
        _redis: redis,
        server,
        cookie: cookie_for(SID, SECRET),
        recorder,
    }
}

/// A polling client: the requests engine.io-client makes, one TCP connection each.
struct Polling {
    addr: SocketAddr,
    sid: String,
    headers: Vec<(String, String)>,
}

impl Polling {
    /// The handshake `GET`; returns the client and the handshake response.
    async fn open(addr: SocketAddr, headers: &[(&str, &str)]) -> (Polling, HttpResponse) {
        let response = http_request(addr, "GET", "/socket.io/?EIO=4&transport=polling", headers, b"").await;
        assert_eq!(response.status, 200, "{}", response.text());
        let text = response.text();
        let open: Value = serde_json::from_str(text.strip_prefix('0').expect("open packet")).unwrap();
        let client = Polling {
            addr,
            sid: open["sid"].as_str().unwrap().to_owned(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        (client, response)
    }

    fn path(&self) -> String {
        format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid)
    }

    fn header_refs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    async fn get(&self) -> HttpResponse {
        http_request(self.addr, "GET", &self.path(), &self.header_refs(), b"").await
    }

    async fn post(&self, body: &str) -> HttpResponse {
        let mut headers = self.header_refs();
        headers.push(("content-type", "text/plain;charset=UTF-8"));
        http_request(self.addr, "POST", &self.path(), &headers, body.as_bytes()).await
    }

    /// A `GET` that must succeed, split into its packets.
    async fn packets(&self) -> Vec<String> {
        let response = tokio::time::timeout(Duration::from_secs(5), self.get())
            .await
            .expect("GET answered within 5 s");
        assert_eq!(response.status, 200, "{}", response.text());
        response.text().split('\x1e').map(str::to_owned).collect()
    }

    async fn post_ok(&self, body: &str) {
        let response = self.post(body).await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (200, "ok"),
            "POST {body:?}"
        );
    }

    /// Connects namespace `/` and returns the socket id.
    async fn connect(&self) -> String {
        self.post_ok("40").await;
        let packets = self.packets().await;
        let connect = packets[0].strip_prefix("40").expect("CONNECT reply");
        serde_json::from_str::<Value>(connect).unwrap()["sid"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn numbers(packets: &[String], event: &str) -> Vec<u64> {
    let prefix = format!("42[\"{event}\",");
    packets
        .iter()
        .filter_map(|p| p.strip_prefix(&prefix))
        .map(|rest| rest.trim_end_matches(']').parse().unwrap())
        .collect()
}

#[tokio::test]
async fn handshake_opens_a_polling_session_that_offers_the_upgrade() {
    let s = setup(&[]).await;
    let addr = s.server.local_addr();
    let (client, response) = Polling::open(addr, &[]).await;
    assert_eq!(response.header("content-type"), Some("text/plain; charset=UTF-8"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let open: Value = serde_json::from_str(&response.text()[1..]).unwrap();
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert_eq!(open["maxPayload"], json!(1_000_000));
    assert_eq!(client.sid.len(), 20);
    assert_eq!(s.server.gateway().connection_count(), 1);

    // Polling only: nothing to upgrade to. WebSocket only: polling is an unknown transport.
    let only_polling = setup(&["--transports", "polling"]).await;
    let (_, response) = Polling::open(only_polling.server.local_addr(), &[]).await;
    assert!(response.text().contains(r#""upgrades":[]"#), "{}", response.text());
    let only_ws = setup(&["--transports", "websocket"]).await;
    let refused = http_request(
        only_ws.server.local_addr(),
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (400, r#"{"code":0,"message":"Transport unknown"}"#)
    );
}

#[tokio::test]
async fn a_logged_in_client_works_on_polling_alone() {
    let s = setup(&[]).await;
    let addr = s.server.local_addr();
    let cookie = s.cookie.clone();
    let (client, _) = Polling::open(addr, &[("cookie", &cookie)]).await;
    let socket_id = client.connect().await;
    let nsp = s.server.gateway().namespace("/").unwrap();
    let socket = nsp.socket(&socket_id).expect("socket registered");
    assert_eq!(socket.data(), json!({"user": 42}));
    assert!(socket.rooms().iter().any(|r| &**r == "user:42"));

    // An event with an ack, text and binary, in one POST: acks come back in order.
    client
        .post_ok("421[\"e\",1]\x1e452-2[\"e\",2,{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]\x1ebAQID\x1ebBAUG")
        .await;
    let packets = client.packets().await;
    assert_eq!(
        packets,
        [
            "431[1]",
            "462-2[2,{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
            "bAQID",
            "bBAUG"
        ]
    );
    assert_eq!(*s.recorder.events.lock(), [1, 2]);

    // A room broadcast, binary included, waits in the outbox for the next GET.
    let pending = tokio::spawn({
        let client = Polling {
            addr,
            sid: client.sid.clone(),
            headers: client.headers.clone(),
        };
        async move { client.packets().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let delivered = nsp.broadcast(
        &["user:42"],
        &[] as &[&str],
        &Packet::event(
            "/",
            vec![json!("news"), json!({"_placeholder": true, "num": 0})],
            vec![bytes::Bytes::from_static(&[9, 8])],
        ),
    );
    assert_eq!(delivered, 1);
    assert_eq!(
        pending.await.unwrap(),
        ["451-[\"news\",{\"_placeholder\":true,\"num\":0}]", "bCQg="]
    );

    // A client close packet ends the session; a pending GET gets a noop, as in engine.io.
    let pending = tokio::spawn({
        let client = Polling {
            addr,
            sid: client.sid.clone(),
            headers: client.headers.clone(),
        };
        async move { client.get().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.post_ok("1").await;
    let last = pending.await.unwrap();
    assert_eq!((last.status, last.text().as_str()), (200, "6"));
    eventually("session gone", || s.server.gateway().connection_count() == 0).await;
    let after = client.get().await;
    assert_eq!(
        (after.status, after.text().as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
}

#[tokio::test]
async fn anonymous_polling_client_gets_connect_error_and_the_session_stays_open() {
    let s = setup(&[]).await;
    let (client, _) = Polling::open(s.server.local_addr(), &[]).await;
    client.post_ok("40").await;
    let packets = client.packets().await;
    // As Node: the CONNECT_ERROR, and the engine session stays open for the client to close.
    assert_eq!(packets, [r#"44{"message":"Authentication error"}"#]);
    assert_eq!(s.server.gateway().connection_count(), 1);
    assert_eq!(s.server.gateway().pending().total(), 1, "it holds only a pending place");
    client.post_ok("1").await;
    eventually("session gone once the client closes it", || {
        s.server.gateway().connection_count() == 0 && s.server.gateway().pending().total() == 0
    })
    .await;
}

#[tokio::test]
async fn heartbeat_over_polling_and_ping_timeout() {
    let s = setup(&["--ping-interval", "300", "--ping-timeout", "200"]).await;
    let (client, _) = Polling::open(s.server.local_addr(), &[]).await;
    for _ in 0..3 {
        assert_eq!(client.packets().await, ["2"]);
        client.post_ok("3").await;
    }
    // No pong: closed after pingTimeout; the next GET finds no session.
    assert_eq!(client.packets().await, ["2"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = client.get().await;
    assert_eq!(
        (after.status, after.text().as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
    assert_eq!(
        s.server.gateway().metrics.get(wsgate::metrics::Disconnect::PingTimeout),
        1
    );
}

#[tokio::test]
async fn requests_that_break_the_rules_are_refused() {
    let s = setup(&["--max-payload", "1000"]).await;
    let addr = s.server.local_addr();
    let metrics = &s.server.gateway().metrics;

    // Unknown session id.
    let unknown = http_request(addr, "GET", "/socket.io/?EIO=4&transport=polling&sid=nope", &[], b"").await;
    assert_eq!(
        (unknown.status, unknown.text().as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
    assert_eq!(metrics.get(wsgate::metrics::PollingRefused::UnknownSid), 1);

    // A method other than GET and POST.
    let (client, _) = Polling::open(addr, &[]).await;
    let put = http_request(addr, "PUT", &client.path(), &[], b"").await;
    assert_eq!(
        (put.status, put.text().as_str()),
        (400, r#"{"code":3,"message":"Bad request"}"#)
    );

    // Two concurrent GETs: the second is refused, the first gets the close packet, the session
    // is gone (engine.io does the same).
    let first = tokio::spawn({
        // The same client's second request: with its cookie, as every request of a session.
        let c = Polling {
            addr,
            sid: client.sid.clone(),
            headers: client.headers.clone(),
        };
        async move { c.get().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = client.get().await;
    assert_eq!(second.status, 400);
    let first = first.await.unwrap();
    assert_eq!((first.status, first.text().as_str()), (200, "1"));
    assert_eq!(client.get().await.status, 400);
    assert_eq!(metrics.get(wsgate::metrics::PollingRefused::OverlappingGet), 1);

    // A POST larger than --max-payload: 413, and the session is closed.
    let (client, _) = Polling::open(addr, &[]).await;
    let big = format!("4{}", "x".repeat(1000));
    assert_eq!(client.post(&big).await.status, 413);
    eventually("oversized POST closed the session", || {
        s.server.gateway().engine().lookup(&client.sid).is_none()
    })
    .await;
    assert_eq!(client.get().await.status, 400);

    // A binary body (only EIO=3 sends those): refused, session closed.
    let (client, _) = Polling::open(addr, &[]).await;
    let binary = http_request(
        addr,
        "POST",
        &client.path(),
        &[("content-type", "application/octet-stream")],
        &[0, 1, 2],
    )
    .await;
    assert_eq!(binary.status, 400);
    eventually("binary POST closed the session", || {
        s.server.gateway().engine().lookup(&client.sid).is_none()
    })
    .await;
}

#[tokio::test]
async fn invalid_payloads_close_only_their_session() {
    let s = setup(&[]).await;
    let addr = s.server.local_addr();
    let (bystander, _) = Polling::open(addr, &[("cookie", &s.cookie)]).await;
    bystander.connect().await;
    // The kinds of body that took engine.io < 6.6.7 down, and other garbage.
    let bodies: [&[u8]; 8] = [
        b"b",
        b"b!!!!",
        b"bAQID\x1eb%%%",
        b"\xff\xfe\xfd",
        b"",
        b"\x1e\x1e\x1e",
        b"9hello",
        b"4\x1e2",
    ];
    for body in bodies {
        let (client, _) = Polling::open(addr, &[]).await;
        let response = http_request(
            addr,
            "POST",
            &client.path(),
            &[("content-type", "text/plain;charset=UTF-8")],
            body,
        )
        .await;
        if body == b"b" {
            // An empty binary message is valid Engine.IO; Socket.IO then rejects it.
            assert!(response.status == 200 || response.status == 400, "{body:?}");
        } else {
            assert_eq!(response.status, 400, "{body:?}: {}", response.text());
        }
        eventually("the bad session is closed", || {
            s.server.gateway().engine().lookup(&client.sid).is_none()
        })
        .await;
    }
    // The well-behaved session on the same node is untouched.
    bystander.post_ok("421[\"e\",7]").await;
    assert_eq!(bystander.packets().await, ["431[7]"]);
    assert!(
        s.server
            .gateway()
            .metrics
            .get(wsgate::metrics::PollingRefused::MalformedPayload)
            >= 5
    );
}

#[tokio::test]
async fn origin_is_checked_on_every_polling_request_and_cors_is_answered() {
    let s = setup(&["--allowed-origin", "https://app.test"]).await;
    let addr = s.server.local_addr();
    let app = [("origin", "https://app.test"), ("cookie", s.cookie.as_str())];
    let (client, handshake) = Polling::open(addr, &app).await;
    assert_eq!(
        handshake.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(handshake.header("access-control-allow-credentials"), Some("true"));
    client.connect().await;

    // A cross-site page cannot inject packets into, or read from, that session.
    let evil = [("origin", "https://evil.test"), ("content-type", "text/plain")];
    let injected = http_request(addr, "POST", &client.path(), &evil, b"421[\"e\",666]").await;
    assert_eq!(
        (injected.status, injected.text().as_str()),
        (403, r#"{"code":4,"message":"Forbidden"}"#)
    );
    assert_eq!(injected.header("access-control-allow-origin"), None);
    let read = http_request(addr, "GET", &client.path(), &evil, b"").await;
    assert_eq!(read.status, 403);
    assert!(s.recorder.events.lock().is_empty(), "nothing was injected");
    // The real page's session goes on.
    client.post_ok("421[\"e\",1]").await;
    assert_eq!(client.packets().await, ["431[1]"]);

    // Preflight: allowed origins may GET and POST with the headers they ask for; others get 403.
    let asked = [
        ("origin", "https://app.test"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type,x-custom"),
    ];
    let preflight = http_request(addr, "OPTIONS", &client.path(), &asked, b"").await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(preflight.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("content-type,x-custom")
    );
    let refused = http_request(addr, "OPTIONS", &client.path(), &[("origin", "https://evil.test")], b"").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("access-control-allow-origin"), None);
    assert!(
        s.server
            .gateway()
            .metrics
            .get(wsgate::metrics::PollingRefused::OriginRejected)
            >= 3
    );

    // Same-origin only (no list): the scheme counts, and an unreadable Origin is refused.
    let s = setup(&[]).await;
    let addr = s.server.local_addr();
    let same = format!("http://{addr}");
    let (_, ok) = Polling::open(addr, &[("origin", &same)]).await;
    assert_eq!(ok.header("access-control-allow-origin"), Some(same.as_str()));
    let garbled = http_request(
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[("origin", "http://a\u{00e9}.test")],
        b"",
    )
    .await;
    assert_eq!(garbled.status, 403);
}

#[tokio::test]
async fn sticky_cookie_is_set_on_every_handshake() {
    let s = setup(&["--sticky-cookie", "io"]).await;
    let addr = s.server.local_addr();
    let (client, response) = Polling::open(addr, &[]).await;
    assert_eq!(
        response.header("set-cookie"),
        Some(format!("io={}; Path=/; HttpOnly; SameSite=Lax", client.sid).as_str())
    );
    // Later requests of the session do not set it again.
    client.post_ok("3").await;
    let request = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (_ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("io=") && cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax"));
    assert!(
        Polling::open(setup(&[]).await.server.local_addr(), &[])
            .await
            .1
            .header("set-cookie")
            .is_none(),
        "off by default"
    );
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("frame within 5 s")
        {
            Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn upgrade_with_packets_in_flight_loses_and_duplicates_nothing() {
    let s = setup(&[]).await;
    let addr = s.server.local_addr();
    let (client, _) = Polling::open(addr, &[("cookie", &s.cookie)]).await;
    client.connect().await;
    let nsp = s.server.gateway().namespace("/").unwrap().clone();

    // The server sends 0..TOTAL while the client polls, probes and switches.
    const TOTAL: u64 = 400;
    let sender = tokio::spawn(async move {
        for i in 0..TOTAL {
            nsp.broadcast(
                &["user:42"],
                &[] as &[&str],
                &Packet::event("/", vec![json!("n"), json!(i)], vec![]),
            );
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut received = Vec::new();
    let mut sent = 0u64;
    // Phase 1: plain polling, events both ways.
    for _ in 0..5 {
        client.post_ok(&format!("42[\"e\",{sent}]")).await;
        sent += 1;
        received.extend(numbers(&client.packets().await, "n"));
    }

    // Phase 2: the probe, with a GET in flight as engine.io-client has.
    let in_flight = tokio::spawn({
        let c = Polling {
            addr,
            sid: client.sid.clone(),
            headers: client.headers.clone(),
        };
        async move { c.packets().await }
    });
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={}", client.sid);
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request.headers_mut().insert("cookie", s.cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(ws_text(&mut ws).await, "3probe");
    // The pending GET is released (with data or a noop) so the client can pause polling.
    let released = tokio::time::timeout(Duration::from_secs(2), in_flight)
        .await
        .expect("the pending GET is answered once the probe succeeded")
        .unwrap();
    received.extend(numbers(&released, "n"));
    // The client may still POST while pausing.
    client.post_ok(&format!("42[\"e\",{sent}]")).await;
    sent += 1;
    ws.send(Message::text("5")).await.unwrap();

    // Phase 3: WebSocket only.
    for _ in 0..5 {
        ws.send(Message::text(format!("42[\"e\",{sent}]"))).await.unwrap();
        sent += 1;
    }
    sender.await.unwrap();
    while received.len() < TOTAL as usize {
        let frame = ws_text(&mut ws).await;
        received.extend(numbers(&[frame], "n"));
    }
    assert_eq!(received, (0..TOTAL).collect::<Vec<_>>(), "every packet once, in order");
    eventually("all client events handled", || {
        s.recorder.events.lock().len() == sent as usize
    })
    .await;
    assert_eq!(*s.recorder.events.lock(), (0..sent).collect::<Vec<_>>());
    assert_eq!(s.server.gateway().metrics.get(wsgate::metrics::Upgrade::Upgraded), 1);

    // After the upgrade the old transport is refused, and a second WebSocket is closed.
    let stale = client.get().await;
    assert_eq!(
        (stale.status, stale.text().as_str()),
        (400, r#"{"code":3,"message":"Bad request"}"#)
    );
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={}", client.sid);
    // With the client's cookie, as every request of its session.
    let mut url = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    url.headers_mut().insert("cookie", s.cookie.parse().unwrap());
    let (mut second, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), second.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
        other => panic!("the second WebSocket must be closed, got {other:?}"),
    }
    // The upgraded session is alive on its WebSocket.
    ws.send(Message::text("421[\"e\",99]")).await.unwrap();
    assert_eq!(ws_text(&mut ws).await, "431[99]");
}

#[tokio::test]
async fn a_failed_probe_leaves_the_session_on_polling() {
    let s = setup(&["--upgrade-timeout", "300"]).await;
    let addr = s.server.local_addr();
    let (client, _) = Polling::open(addr, &[]).await;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={}", client.sid);
    // Never probes: closed after the upgrade timeout.
    let (mut silent, _) = tokio_tungstenite::connect_async(url.clone()).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), silent.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
        other => panic!("expected the probe WebSocket closed, got {other:?}"),
    }
    // Sends something other than the probe: closed at once.
    let (mut wrong, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    wrong.send(Message::text("42[\"e\",1]")).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), wrong.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
        other => panic!("expected the probe WebSocket closed, got {other:?}"),
    }
    // Polling goes on.
    client.post_ok("3").await;
    let metrics = &s.server.gateway().metrics;
    assert_eq!(metrics.get(wsgate::metrics::Upgrade::Timeout), 1);
    assert_eq!(metrics.get(wsgate::metrics::Upgrade::Aborted), 1);
    assert!(s.server.gateway().engine().lookup(&client.sid).is_some());
}

#[tokio::test]
async fn shutdown_sends_polling_clients_the_close_packet_and_no_disconnect() {
    let s = setup(&[]).await;
    let addr = s.server.local_addr();
    let (client, _) = Polling::open(addr, &[("cookie", &s.cookie)]).await;
    client.connect().await;
    let pending = tokio::spawn({
        // The same client's second request: with its cookie, as every request of a session.
        let c = Polling {
            addr,
            sid: client.sid.clone(),
            headers: client.headers.clone(),
        };
        async move { c.packets().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.server.shutdown().await;
    let last = pending.await.unwrap();
    assert_eq!(last.last().map(String::as_str), Some("1"), "{last:?}");
    // The transport closes; no Socket.IO DISCONNECT, so the client reconnects elsewhere.
    assert!(!last.contains(&"41".to_string()), "no DISCONNECT: {last:?}");
}

#[tokio::test]
async fn random_bodies_never_take_the_node_down() {
    use rand::{Rng, SeedableRng};
    let s = setup(&[]).await;
    let addr = s.server.local_addr();
    let (bystander, _) = Polling::open(addr, &[("cookie", &s.cookie)]).await;
    bystander.connect().await;
    let pieces: [&[u8]; 9] = [
        b"\x1e",
        b"b",
        b"4",
        b"42[",
        b"]",
        b"AQID",
        b"=",
        b"{\"_placeholder\":true}",
        b"\xc3",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..150 {
        let mut body = Vec::new();
        for _ in 0..rng.random_range(0..16) {
            if rng.random_bool(0.7) {
                body.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
            } else {
                body.push(rng.random());
            }
        }
        let (client, _) = Polling::open(addr, &[]).await;
        let response = http_request(addr, "POST", &client.path(), &[("content-type", "text/plain")], &body).await;
        assert!(
            response.status == 200 || response.status == 400,
            "{body:?} got {}",
            response.status
        );
    }
    assert_eq!(http(addr, "GET", "/healthz", &[]).await, (200, "ok".into()));
    bystander.post_ok("421[\"e\",3]").await;
    assert_eq!(bystander.packets().await, ["431[3]"]);
}

/// Round 2 finding: the Engine.IO session id was a bearer token. From another address, with no
/// cookie or another user's, the sid alone read a victim's packets, emitted events as the
/// victim, and took the session over by upgrading. Every later request of a session must now
/// carry the session cookie its handshake had (beyond engine.io); the sticky cookie is `Secure`
/// when the browser came over TLS.
#[tokio::test]
async fn the_session_id_alone_is_not_enough() {
    let s = setup(&["--sticky-cookie", "io", "--trust-proxy"]).await;
    let addr = s.server.local_addr();
    let (victim, _) = Polling::open(addr, &[("cookie", &s.cookie)]).await;
    victim.connect().await;
    let other = cookie_for("pollingOtherSession-0123456789abc", SECRET);
    for headers in [vec![], vec![("cookie", other.as_str())]] {
        let thief = Polling {
            addr,
            sid: victim.sid.clone(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let read = thief.get().await;
        assert_eq!(
            (read.status, read.text().as_str()),
            (400, r#"{"code":3,"message":"Bad request"}"#)
        );
        let injected = thief.post(r#"42["as-the-victim"]"#).await;
        assert_eq!(injected.status, 400, "{}", injected.text());
        let request = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={}", victim.sid);
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(request).unwrap();
        for (k, v) in &headers {
            request.headers_mut().insert(*k, v.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
            other => panic!("the upgrade must be refused, got {other:?}"),
        }
    }
    assert_eq!(
        s.server
            .gateway()
            .metrics
            .get(wsgate::metrics::PollingRefused::CookieMismatch),
        6
    );
    assert!(s.recorder.events.lock().is_empty(), "nothing was emitted as the victim");
    // The victim's own requests go on.
    victim.post_ok(r#"42["mine"]"#).await;
    // The sticky cookie is Secure behind a TLS-terminating proxy.
    let (_, response) = Polling::open(addr, &[("x-forwarded-proto", "https")]).await;
    let set = response.header("set-cookie").unwrap().to_owned();
    assert!(set.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"), "{set}");
}
