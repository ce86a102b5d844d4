//! Delivery under sustained fan-out, against a real server and a real redis-server: the
//! session's own traffic (pongs, client packets, timers) is still served while its queue never
//! empties.

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const SID: &str = "fanoutSessionId-0123456789abcdefg";

/// A broadcast flood that keeps the client's queue non-empty for 6 s (the producer tops it up
/// whenever it falls below 64 KiB, as a busy room would), with a 200 ms ping interval and a
/// 3 s pong deadline. The client reads everything and answers every ping. Before the session
/// task read the socket ahead of its queue, the queue always won the `select!`: the first pong
/// sat unread, no second ping came, the client was closed for a ping timeout 3.2 s in, and its
/// packets were not read before the flood ended. The deadlines leave seconds of slack for a
/// loaded machine (a ping waits behind the backlog, and a 300 ms pong deadline behind 256 KiB
/// made this fail now and then) while the old behaviour still fails every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_are_served_during_a_broadcast_flood() {
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    let server = gateway(&redis.url(), &["--ping-interval", "200ms", "--ping-timeout", "3s"]).await;
    // A small receive window makes the server's writes wait for the client to read, as a
    // client on a real network does: frames keep arriving in the queue while a write waits.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(server.local_addr()).await.unwrap();
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.local_addr());
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request
        .headers_mut()
        .insert("cookie", cookie_for(SID, SECRET).parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let mut client = Client { ws, auto_pong: true };
    assert!(client.text().await.starts_with("0{"));
    client.send("40").await;
    let reply = client.text().await;
    let socket_id = serde_json::from_str::<serde_json::Value>(reply.strip_prefix("40").unwrap()).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();

    let nsp = server.gateway().namespace("/").unwrap().clone();
    let socket = nsp.socket(&socket_id).expect("the socket is registered");
    let flood = Duration::from_secs(6);
    // The producer runs on its own thread, like the cluster's delivery task on another worker:
    // it tops the queue up as soon as the session drains it, so there is always more queued
    // by the time the session looks again.
    let producer = std::thread::spawn(move || {
        let packet =
            wsgate::protocol::socketio::Packet::event("/", vec![json!("tick"), json!("x".repeat(200))], vec![]);
        let until = std::time::Instant::now() + flood;
        let mut sent = 0u64;
        while std::time::Instant::now() < until {
            if socket.outbox().queued_bytes() < 64 << 10 {
                sent += nsp.broadcast(&[] as &[&str], &[] as &[&str], &packet) as u64;
            } else {
                // Not a spin: the two cores are shared with the server and the client.
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        sent
    });

    let (mut pings, mut ticks) = (0u32, 0u64);
    let start = tokio::time::Instant::now();
    let deadline = start + flood;
    // One second in, the client asks for a namespace that does not exist: the server must read
    // that while the flood goes on, and its refusal arrives behind what is already queued.
    let mut probe_sent = None;
    let mut probe_answered = None;
    while tokio::time::Instant::now() < deadline {
        if probe_sent.is_none() && start.elapsed() > Duration::from_secs(1) {
            client.send("40/nowhere,").await;
            probe_sent = Some(tokio::time::Instant::now());
        }
        match tokio::time::timeout(Duration::from_secs(5), client.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                pings += 1;
                client.ws.send(Message::text("3")).await.expect("pong sent");
            }
            Ok(Some(Ok(Message::Text(t)))) if t.as_str().starts_with("42[\"tick\"") => ticks += 1,
            Ok(Some(Ok(Message::Text(t)))) if t.as_str().starts_with("44/nowhere,") => {
                probe_answered = probe_sent.map(|at| at.elapsed());
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                panic!("closed during the flood: {frame:?} after {pings} pings, {ticks} ticks")
            }
            Ok(None | Some(Err(_))) => panic!("connection lost during the flood after {pings} pings, {ticks} ticks"),
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            Err(_) => panic!("nothing received for 5 s during the flood"),
        }
    }
    let sent = producer.join().unwrap();
    assert!(
        ticks > 1000,
        "the flood was sustained: {ticks} of {sent} broadcasts read"
    );
    // About one per 250 ms on an idle machine; a session that does not read its socket sends
    // one, never reads the pong, and is closed at its deadline.
    assert!(
        pings >= 2,
        "pings kept coming during the flood: {pings} ({ticks} ticks read)"
    );
    let answered = probe_answered.expect("the client's packet was read and answered during the flood");
    // Sent 1 s in: a session that does not read during the flood answers it 5 s later.
    assert!(answered < Duration::from_secs(4), "answered after {answered:?}");
    assert_eq!(nsp_count(&server), 1, "still connected");
    server.shutdown().await;
}

fn nsp_count(server: &wsgate::Server) -> usize {
    server.gateway().namespace("/").map_or(0, |n| n.socket_count())
}
