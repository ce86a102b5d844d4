//! Handshake authentication against a real Redis holding connect-redis records.

use std::time::Duration;
use support::*;

const SID: &str = "TP-ZzQd_qu72y-jd5kkeu5tE39LsTwPo";

#[tokio::test]
async fn logged_in_user_connects_and_joins_own_user_and_session_rooms() {
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    let server = gateway(&redis.url(), &[]).await;

    let (mut client, open) = Client::open(server.local_addr(), &[("cookie", &cookie_for(SID, SECRET))])
        .await
        .unwrap();
    let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(open["sid"].as_str().unwrap().len(), 20);
    assert_eq!(open["upgrades"], serde_json::json!([]));
    assert_eq!(
        (open["pingInterval"].as_u64(), open["pingTimeout"].as_u64()),
        (Some(25000), Some(20000))
    );
    assert_eq!(open["maxPayload"].as_u64(), Some(1_000_000));

    client.send("40").await;
    let reply = client.text().await;
    let socket_id = serde_json::from_str::<serde_json::Value>(&reply[2..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        socket_id,
        open["sid"].as_str().unwrap(),
        "socket id differs from the engine id"
    );

    let nsp = server.gateway().namespace("/").unwrap().clone();
    for room in [socket_id.as_str(), "user:42", &format!("session:{SID}")] {
        let members = nsp.members(room);
        assert_eq!(members.len(), 1, "room {room}");
        assert_eq!(&*members[0].id, socket_id);
    }
    assert_eq!(nsp.members("user:42")[0].data(), serde_json::json!({"user": 42}));

    // A broadcast to the user's room reaches the socket.
    let sent = nsp.broadcast(
        &["user:42"],
        &[] as &[&str],
        &wsgate::protocol::socketio::Packet::event("/", vec!["notice".into(), "hi".into()], vec![]),
    );
    assert_eq!(sent, 1);
    assert_eq!(client.text().await, r#"42["notice","hi"]"#);

    // Leaving leaves no trace in the registry.
    client.send("1").await;
    eventually("registry empty after disconnect", || {
        nsp.socket_count() == 0 && nsp.room_count() == 0
    })
    .await;
    eventually("connection gone", || server.gateway().connection_count() == 0).await;
}

/// Every way to be anonymous gets the CONNECT_ERROR a Node middleware would send, joins no room,
/// and is then disconnected.
#[tokio::test]
async fn anonymous_handshakes_get_authentication_error() {
    let redis = Redis::start().await;
    let server = gateway(&redis.url(), &[]).await;
    let addr = server.local_addr();

    redis.login("nulluser", "null").await;
    redis.login("falseuser", "false").await;
    redis.login("emptyuser", r#""""#).await;
    redis
        .put_session("nopassport", r#"{"cookie":{"path":"/"},"returnTo":"/dashboard"}"#)
        .await;
    redis
        .put_session("loggedout", r#"{"cookie":{"path":"/"},"passport":{}}"#)
        .await;
    redis.put_session("notjson", "\u{1}binary-serializer").await;
    redis.login("valid", "7").await;

    let tampered = cookie_for("valid", SECRET).replacen("%3Avalid.", "%3Avalid.AAAA", 1);
    let unsigned = "connect.sid=valid".to_string();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no cookie", vec![]),
        ("other cookies only", vec![("cookie", "a=1; b=2".into())]),
        ("unsigned", vec![("cookie", unsigned)]),
        ("tampered signature", vec![("cookie", tampered)]),
        ("unknown secret", vec![("cookie", cookie_for("valid", "someone-else"))]),
        (
            "no session record",
            vec![("cookie", cookie_for("expired-or-destroyed", SECRET))],
        ),
        ("user null", vec![("cookie", cookie_for("nulluser", SECRET))]),
        ("user false", vec![("cookie", cookie_for("falseuser", SECRET))]),
        ("user empty string", vec![("cookie", cookie_for("emptyuser", SECRET))]),
        ("no passport", vec![("cookie", cookie_for("nopassport", SECRET))]),
        (
            "logged out (passport 0.5)",
            vec![("cookie", cookie_for("loggedout", SECRET))],
        ),
        ("record not JSON", vec![("cookie", cookie_for("notjson", SECRET))]),
        // Only the first cookie of a name counts, as in express-session.
        (
            "bad first cookie",
            vec![(
                "cookie",
                format!("connect.sid=s%3Ax.y; {}", cookie_for("valid", SECRET)),
            )],
        ),
    ];
    for (case, headers) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (mut client, _) = Client::open(addr, &headers).await.unwrap();
        client.send("40").await;
        assert_eq!(client.text().await, r#"44{"message":"Authentication error"}"#, "{case}");
        // The engine session stays open, as Node keeps it: the client closes it.
        client.idle(Duration::from_millis(100)).await;
    }
    let nsp = server.gateway().namespace("/").unwrap();
    assert_eq!(
        (nsp.socket_count(), nsp.room_count()),
        (0, 0),
        "no anonymous socket joined anything"
    );
    assert!(server.gateway().metrics.get(wsgate::metrics::Auth::BadSignature) >= 2);
    assert!(server.gateway().metrics.get(wsgate::metrics::Auth::NoUser) >= 5);
}

#[tokio::test]
async fn users_express_accepts_are_accepted() {
    let redis = Redis::start().await;
    let server = gateway(&redis.url(), &[]).await;
    let addr = server.local_addr();

    // `0` is a valid passport user; objects are users too.
    redis.login("zero", "0").await;
    redis.login("object", r#"{"id":"a1b2","role":"admin"}"#).await;
    // The stored cookie.expires is in the past; only the key's existence counts.
    redis
        .put_session(
            "stale",
            r#"{"cookie":{"originalMaxAge":3000,"expires":"2000-01-01T00:00:00.000Z"},"passport":{"user":"alice"}}"#,
        )
        .await;

    let (_c0, _) = Client::connect_as(addr, &cookie_for("zero", SECRET)).await;
    let (_c1, _) = Client::connect_as(addr, &cookie_for("object", SECRET)).await;
    let (_c2, _) = Client::connect_as(addr, &cookie_for("stale", SECRET)).await;
    // Signed with the previous secret (rotation).
    let (_c3, _) = Client::connect_as(addr, &cookie_for("zero", OLD_SECRET)).await;
    // Unencoded `s:` value and quoted value, as other serializers write them.
    let raw = cookie_for("stale", SECRET)
        .replace("%3A", ":")
        .replace("%2B", "+")
        .replace("%2F", "/");
    let (_c4, _) = Client::connect_as(addr, &raw).await;
    let quoted = cookie_for("stale", SECRET).replace("connect.sid=", "connect.sid=\"") + "\"";
    let (_c5, _) = Client::connect_as(addr, &format!("theme=dark; {quoted}")).await;

    let nsp = server.gateway().namespace("/").unwrap();
    assert_eq!(nsp.members("user:0").len(), 2);
    assert_eq!(nsp.members(r#"user:{"id":"a1b2","role":"admin"}"#).len(), 1);
    assert_eq!(nsp.members("user:alice").len(), 3);
    assert_eq!(nsp.members("session:zero").len(), 2);
}

#[tokio::test]
async fn unreachable_or_slow_store_refuses_with_session_store_unavailable() {
    // Nothing listens on this port.
    let server = gateway(
        &format!("redis://127.0.0.1:{}", free_port()),
        &["--session-lookup-timeout", "500"],
    )
    .await;
    let (mut client, _) = Client::open(server.local_addr(), &[("cookie", &cookie_for(SID, SECRET))])
        .await
        .unwrap();
    client.send("40").await;
    assert_eq!(client.text().await, r#"44{"message":"Session store unavailable"}"#);
    // The engine session stays open, as Node keeps it: the client closes it.
    client.idle(Duration::from_millis(100)).await;

    // A store that answers too late counts as unavailable too.
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    let server = gateway(&redis.url(), &["--session-lookup-timeout", "300"]).await;
    let _: () = redis.cmd(&["CLIENT", "PAUSE", "1500"]).await;
    let (mut client, _) = Client::open(server.local_addr(), &[("cookie", &cookie_for(SID, SECRET))])
        .await
        .unwrap();
    client.send("40").await;
    assert_eq!(client.text().await, r#"44{"message":"Session store unavailable"}"#);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Once Redis answers again, the same user gets in.
    let (_client, _) = Client::connect_as(server.local_addr(), &cookie_for(SID, SECRET)).await;
}

#[tokio::test]
async fn reject_at_upgrade_answers_401_before_upgrading() {
    let redis = Redis::start().await;
    redis.login(SID, "42").await;
    let server = gateway(&redis.url(), &["--reject-at-upgrade"]).await;
    let addr = server.local_addr();

    let (status, body) = Client::open(addr, &[]).await.err().expect("refused");
    assert_eq!(status, 401);
    assert!(body.contains("Authentication error"), "{body}");
    let (status, _) = Client::open(addr, &[("cookie", &cookie_for(SID, "wrong"))])
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 401);
    let (_client, _) = Client::connect_as(addr, &cookie_for(SID, SECRET)).await;
}

#[tokio::test]
async fn custom_cookie_name_prefix_user_path_and_room_templates() {
    let redis = Redis::start().await;
    let _: () = redis
        .cmd(&["SET", "myapp:abc", r#"{"cookie":{},"user":{"id":"u1"}}"#])
        .await;
    let server = gateway(
        &redis.url(),
        &[
            "--cookie-name",
            "sid",
            "--session-prefix",
            "myapp:",
            "--user-path",
            "/user/id",
            "--user-room",
            "u/{user}",
            "--session-room",
            "",
        ],
    )
    .await;
    let cookie = cookie_for("abc", SECRET).replace("connect.sid=", "sid=");
    let (_client, socket_id) = Client::connect_as(server.local_addr(), &cookie).await;
    let nsp = server.gateway().namespace("/").unwrap();
    assert_eq!(nsp.members("u/u1").len(), 1);
    let mut rooms: Vec<String> = nsp.members("u/u1")[0].rooms().iter().map(|r| r.to_string()).collect();
    rooms.sort();
    let mut expected = vec![socket_id, "u/u1".to_string()];
    expected.sort();
    assert_eq!(rooms, expected, "an empty session-room template joins no session room");
}

/// Logout (key deleted), a session emptied by passport ≤ 0.5 logout, or a different user in the
/// session disconnect the sockets at the next revalidation; others stay; a Redis outage kicks
/// nobody.
#[tokio::test]
async fn revalidation_disconnects_sockets_of_ended_sessions_only() {
    let redis = Redis::start().await;
    let server = gateway(&redis.url(), &["--revalidate-interval", "300"]).await;
    let addr = server.local_addr();
    for (sid, user) in [("out", "1"), ("stays", "2"), ("changes", "3"), ("emptied", "4")] {
        redis.login(sid, user).await;
    }
    let (mut out, _) = Client::connect_as(addr, &cookie_for("out", SECRET)).await;
    let (mut stays, _) = Client::connect_as(addr, &cookie_for("stays", SECRET)).await;
    let (mut changes, _) = Client::connect_as(addr, &cookie_for("changes", SECRET)).await;
    let (mut emptied, _) = Client::connect_as(addr, &cookie_for("emptied", SECRET)).await;

    let _: () = redis.cmd(&["DEL", "sess:out"]).await;
    redis.login("changes", "99").await;
    redis
        .put_session("emptied", r#"{"cookie":{"path":"/"},"passport":{}}"#)
        .await;
    for client in [&mut out, &mut changes, &mut emptied] {
        assert_eq!(client.text().await, "41");
        client.closed().await;
    }
    stays.idle(Duration::from_millis(800)).await;
    let metrics = &server.gateway().metrics;
    assert_eq!(metrics.get(wsgate::metrics::Revalidation::SessionGone), 1);
    assert_eq!(metrics.get(wsgate::metrics::Revalidation::UserChanged), 1);
    assert_eq!(metrics.get(wsgate::metrics::Revalidation::NoUser), 1);

    drop(redis);
    stays.idle(Duration::from_millis(1500)).await;
    assert!(metrics.get(wsgate::metrics::Revalidation::StoreUnavailable) >= 1);
}
