//! Several gateway nodes on one real Redis: broadcasts, remote join/leave/disconnect, the
//! emitter (library and CLI), garbage on the channels, and a Redis restart.

use rmpv::Value as Mp;
use std::time::Duration;
use support::*;
use wsgate::cluster::Emitter;
use wsgate::protocol::adapter::Selector;

/// Redis, one subscribed gateway process, and user 42 connected to it.
async fn one_node_with_user_42() -> (Redis, GatewayProcess, Client) {
    let redis = Redis::start().await;
    let node = GatewayProcess::start(&redis.url(), &[]).await;
    redis.wait_for_servers("/", 1).await;
    let (client, _) = connect_user(&redis, node.addr, "sa", "42").await;
    (redis, node, client)
}

async fn emitter(redis: &Redis) -> Emitter {
    Emitter::new(redis.client().get_connection_manager().await.unwrap(), "socket.io")
}

/// Emits a marker to everyone and checks each client's next frame: the marker proves nothing
/// else arrived before it. Pass every connected client, or a marker is left unread.
async fn assert_nothing_before_marker(e: &Emitter, clients: &mut [&mut Client]) {
    e.of("/").emit("marker", vec![]).await.unwrap();
    for c in clients.iter_mut() {
        assert_eq!(c.text().await, r#"42["marker"]"#);
    }
}

#[tokio::test]
async fn broadcasts_reach_room_members_on_every_node() {
    let redis = Redis::start().await;
    let a = GatewayProcess::start(&redis.url(), &[]).await;
    let b = GatewayProcess::start(&redis.url(), &[]).await;
    let c = gateway(&redis.url(), &[]).await;
    redis.wait_for_servers("/", 3).await;

    let (mut a42, _) = connect_user(&redis, a.addr, "sa", "42").await;
    let (mut b42, _) = connect_user(&redis, b.addr, "sb", "42").await;
    let (mut b7, _) = connect_user(&redis, b.addr, "sb7", "7").await;
    let (mut c42, _) = connect_user(&redis, c.local_addr(), "sc", "42").await;

    // Published on node C (in-process), received on A, B and C.
    let cluster = c.cluster().unwrap();
    let sent = Selector {
        rooms: vec!["user:42".into()],
        except: vec![],
    };
    cluster
        .broadcast(
            "/",
            sent,
            vec![Mp::from("notice"), Mp::from("hi"), Mp::Binary(vec![1, 2])],
        )
        .await
        .unwrap();
    for client in [&mut a42, &mut b42, &mut c42] {
        assert_eq!(
            client.text().await,
            r#"451-["notice","hi",{"_placeholder":true,"num":0}]"#
        );
        assert!(matches!(client.recv().await, Received::Binary(b) if b == [1, 2]));
    }
    // `except` rooms are honoured on every node.
    let everyone_but_42 = Selector {
        rooms: vec![],
        except: vec!["user:42".into()],
    };
    cluster
        .broadcast("/", everyone_but_42, vec![Mp::from("others")])
        .await
        .unwrap();
    assert_eq!(b7.text().await, r#"42["others"]"#);

    // A local broadcast stays on its node.
    let to_42 = Selector {
        rooms: vec!["user:42".into()],
        except: vec![],
    };
    assert_eq!(
        cluster.broadcast_local("/", &to_42, &[Mp::from("local-only")]).unwrap(),
        1
    );
    assert_eq!(c42.text().await, r#"42["local-only"]"#);

    // The library emitter (the bytes of @socket.io/redis-emitter).
    let e = emitter(&redis).await;
    e.of("/").to("user:7").emit("direct", vec![Mp::from(1)]).await.unwrap();
    assert_eq!(b7.text().await, r#"42["direct",1]"#);
    assert_nothing_before_marker(&e, &mut [&mut a42, &mut b42, &mut c42, &mut b7]).await;

    // The CLI.
    let (code, out) = wsgate_cli(&[
        "emit",
        "--redis-url",
        &redis.url(),
        "--room",
        "user:42",
        "--event",
        "notice",
        "--data",
        r#"{"text":"hi"}"#,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 subscribed node(s)"), "{out}");
    for client in [&mut a42, &mut b42, &mut c42] {
        assert_eq!(client.text().await, r#"42["notice",{"text":"hi"}]"#);
    }
    assert_nothing_before_marker(&e, &mut [&mut a42, &mut b42, &mut c42, &mut b7]).await;

    let (code, out) = wsgate_cli(&[
        "emit",
        "--redis-url",
        &redis.url(),
        "--event",
        "x",
        "--data",
        "not json",
    ]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = wsgate_cli(&[
        "emit",
        "--redis-url",
        &format!("redis://127.0.0.1:{}", free_port()),
        "--event",
        "x",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot reach Redis"), "{out}");
}

#[tokio::test]
async fn join_leave_and_disconnect_apply_on_every_node() {
    let redis = Redis::start().await;
    let a = GatewayProcess::start(&redis.url(), &[]).await;
    let b = GatewayProcess::start(&redis.url(), &[]).await;
    let c = GatewayProcess::start(&redis.url(), &[]).await;
    redis.wait_for_servers("/", 3).await;
    let (mut a42, _) = connect_user(&redis, a.addr, "sa", "42").await;
    let (mut b42, _) = connect_user(&redis, b.addr, "sb", "42").await;
    let (mut c7, _) = connect_user(&redis, c.addr, "sc", "7").await;
    let e = emitter(&redis).await;

    e.of("/").to("user:42").sockets_join(&["vip".into()]).await.unwrap();
    // Joins are applied asynchronously on each node; a marker round-trip orders them.
    assert_nothing_before_marker(&e, &mut [&mut a42, &mut b42, &mut c7]).await;
    e.of("/").to("vip").emit("vip-only", vec![]).await.unwrap();
    assert_eq!(a42.text().await, r#"42["vip-only"]"#);
    assert_eq!(b42.text().await, r#"42["vip-only"]"#);
    assert_nothing_before_marker(&e, &mut [&mut a42, &mut b42, &mut c7]).await;

    e.of("/")
        .to("vip")
        .except("session:sa")
        .sockets_leave(&["vip".into()])
        .await
        .unwrap();
    e.of("/").to("vip").emit("vip-only", vec![]).await.unwrap();
    assert_eq!(
        a42.text().await,
        r#"42["vip-only"]"#,
        "session:sa was excepted, so a42 stayed"
    );
    assert_nothing_before_marker(&e, &mut [&mut a42, &mut b42, &mut c7]).await;

    // Logout from a backend: every socket of the session, on whichever node, is kicked.
    let (code, out) = wsgate_cli(&["disconnect", "--redis-url", &redis.url(), "--room", "user:42"]);
    assert_eq!(code, 0, "{out}");
    for client in [&mut a42, &mut b42] {
        assert_eq!(client.text().await, "41");
        client.closed().await;
    }
    assert_nothing_before_marker(&e, &mut [&mut c7]).await;
    assert!(a
        .metrics()
        .await
        .contains(r#"wsgate_adapter_messages_total{reason="remote_disconnect"} 1"#));
    // Node A delivered to a42 (its only socket): vip-only twice and three markers before the kick.
    let metrics = a.metrics().await;
    assert!(metrics.contains("wsgate_broadcast_deliveries_total 5"), "{metrics}");
}

#[tokio::test]
async fn garbage_on_adapter_channels_is_dropped_and_counted() {
    let (redis, a, mut client) = one_node_with_user_42().await;
    let garbage: &[(&str, &[u8])] = &[
        ("socket.io#/#", b"not msgpack at all"),
        ("socket.io#/#", &[0x93, 0xa1, 0x61, 0xc0, 0xc0, 0xff]),
        ("socket.io#/#", &[0x92, 0xa1, 0x61, 0xc0]),
        (
            "socket.io#/#",
            &[0x93, 0xc0, 0x81, 0xa4, b't', b'y', b'p', b'e', 0x05, 0x80],
        ),
        ("socket.io#/#user:42#", &[0xdd, 0xff, 0xff, 0xff, 0xff]),
        ("socket.io-request#/#", b"{\"type\":"),
        ("socket.io-request#/#", b"{\"type\":99}"),
        ("socket.io-request#/#", &[0x91, 0x01]),
        ("socket.io-request#/#", b"{\"type\":7,\"requestId\":\"x\"}"),
    ];
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    for (channel, bytes) in garbage {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(*channel)
            .arg(*bytes)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let e = emitter(&redis).await;
    e.of("/").to("user:42").emit("after-garbage", vec![]).await.unwrap();
    assert_eq!(client.text().await, r#"42["after-garbage"]"#);
    let metrics = a.metrics().await;
    let dropped: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("wsgate_adapter_dropped_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(dropped, garbage.len() as u64, "{metrics}");
}

#[tokio::test]
async fn redis_restart_is_survived_and_delivery_resumes() {
    // A Redis that keeps its data across the restart, as production ones do: the sessions are
    // still there when the gateways revalidate on reconnecting.
    let data = RedisData::new();
    let port = free_port();
    let redis = Redis::start_persistent(port, &data).await;
    let process = GatewayProcess::start(&redis.url(), &[]).await;
    let inproc = gateway(&redis.url(), &[]).await;
    redis.wait_for_servers("/", 2).await;
    let (mut remote, _) = connect_user(&redis, process.addr, "sa", "42").await;
    let (mut local, _) = connect_user(&redis, inproc.local_addr(), "sb", "42").await;

    drop(redis);
    // While Redis is down, a broadcast from a node still reaches that node's own sockets.
    let to_42 = Selector {
        rooms: vec!["user:42".into()],
        except: vec![],
    };
    let result = inproc
        .cluster()
        .unwrap()
        .broadcast("/", to_42.clone(), vec![Mp::from("during-outage")])
        .await;
    assert!(result.is_err(), "the publish fails and says so");
    assert_eq!(local.text().await, r#"42["during-outage"]"#);
    // Existing sockets stay connected through the outage.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let redis = Redis::start_persistent(port, &data).await;
    redis.wait_for_servers("/", 2).await;
    let e = emitter(&redis).await;
    e.of("/").to("user:42").emit("after-restart", vec![]).await.unwrap();
    assert_eq!(remote.text().await, r#"42["after-restart"]"#);
    assert_eq!(local.text().await, r#"42["after-restart"]"#);
    let metrics = process.metrics().await;
    assert!(
        metrics.contains(r#"wsgate_redis_pubsub_total{reason="recovered"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("wsgate_redis_pubsub_up 1"), "{metrics}");
}

/// The subscriber pings Redis every 5 s; the connection must survive that (a PING in subscribe
/// mode is answered with an array, which once made every ping look like a failure).
#[tokio::test]
async fn subscriber_stays_connected_across_pings() {
    let (redis, a, mut client) = one_node_with_user_42().await;
    client.idle(Duration::from_secs(12)).await;
    let metrics = a.metrics().await;
    assert!(
        !metrics.contains("wsgate_redis_pubsub_total{"),
        "no loss or recovery expected:\n{metrics}"
    );
    let e = emitter(&redis).await;
    e.of("/").to("user:42").emit("still-subscribed", vec![]).await.unwrap();
    assert_eq!(client.text().await, r#"42["still-subscribed"]"#);
}
