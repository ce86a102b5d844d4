//! The sharded adapter (`--adapter sharded`, Node's `createShardedAdapter`) on one real Redis 7:
//! broadcasts between gateway nodes in each subscription mode, per-room shard channels that
//! follow membership, requests answered, the emitter, and garbage on the shard channels.

use rmpv::Value as Mp;
use std::time::Duration;
use support::*;
use wsgate::cluster::{AdapterProtocol, Emitter};
use wsgate::protocol::adapter::Selector;
use wsgate::protocol::sharded::SubscriptionMode;

async fn nodes(redis: &Redis, mode: &str) -> (wsgate::Server, wsgate::Server) {
    let flags = ["--adapter", "sharded", "--subscription-mode", mode];
    let nodes = (gateway(&redis.url(), &flags).await, gateway(&redis.url(), &flags).await);
    // Each node subscribes the base channel exactly once: Node counts servers by it.
    wait_for_shard_subscribers(
        redis.client().get_connection_manager().await.unwrap(),
        "socket.io#/#",
        2,
    )
    .await;
    nodes
}

#[tokio::test]
async fn broadcasts_cross_nodes_in_every_subscription_mode() {
    for mode in ["dynamic", "dynamic-private", "static"] {
        let redis = Redis::start().await;
        let (a, b) = nodes(&redis, mode).await;
        let (mut a42, _) = connect_user(&redis, a.local_addr(), "sa", "42").await;
        let (mut b42, b42_id) = connect_user(&redis, b.local_addr(), "sb", "42").await;
        let (mut b7, _) = connect_user(&redis, b.local_addr(), "sb7", "7").await;
        // Room channels exist only in the dynamic modes, and only while the room has members.
        let room_subscribers = if mode == "static" { 0 } else { 2 };
        wait_for_shard_subscribers(
            redis.client().get_connection_manager().await.unwrap(),
            "socket.io#/#user:42#",
            room_subscribers,
        )
        .await;

        // One room: on its own channel (dynamic modes), binary included.
        let cluster = a.cluster().unwrap();
        let data = vec![Mp::from("notice"), Mp::from(mode), Mp::Binary(vec![1, 2])];
        cluster.broadcast("/", selector(&["user:42"]), data).await.unwrap();
        for client in [&mut a42, &mut b42] {
            assert_eq!(
                client.text().await,
                format!(r#"451-["notice","{mode}",{{"_placeholder":true,"num":0}}]"#)
            );
            assert!(matches!(client.recv().await, Received::Binary(b) if b == [1, 2]));
        }
        // A socket id (20 characters): the base channel in dynamic mode, its own channel in
        // dynamic-private; delivered either way.
        cluster
            .broadcast("/", selector(&[&b42_id]), vec![Mp::from("direct")])
            .await
            .unwrap();
        assert_eq!(b42.text().await, r#"42["direct"]"#);
        // Everyone, except a room.
        let everyone_but_42 = Selector {
            rooms: vec![],
            except: vec!["user:42".into()],
        };
        cluster
            .broadcast("/", everyone_but_42, vec![Mp::from("others")])
            .await
            .unwrap();
        assert_eq!(b7.text().await, r#"42["others"]"#);
        // Nothing else reached anyone.
        for client in [&mut a42, &mut b42, &mut b7] {
            client.idle(Duration::from_millis(100)).await;
        }
        let private = shard_subscribers(
            redis.client().get_connection_manager().await.unwrap(),
            &format!("socket.io#/#{b42_id}#"),
        )
        .await;
        assert_eq!(
            private,
            i64::from(mode == "dynamic-private"),
            "{mode}: socket-id channel"
        );
    }
}

#[tokio::test]
async fn room_channels_follow_membership() {
    let redis = Redis::start().await;
    let (a, _b) = nodes(&redis, "dynamic").await;
    let room = "socket.io#/#user:42#";
    let (first, _) = connect_user(&redis, a.local_addr(), "s1", "42").await;
    wait_for_shard_subscribers(redis.client().get_connection_manager().await.unwrap(), room, 1).await;
    let (second, _) = connect_user(&redis, a.local_addr(), "s2", "42").await;
    // Still one subscription for the room, however many members.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        shard_subscribers(redis.client().get_connection_manager().await.unwrap(), room).await,
        1
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        shard_subscribers(redis.client().get_connection_manager().await.unwrap(), room).await,
        1,
        "one member left"
    );
    drop(second);
    // The last member left: unsubscribed, with its session room.
    wait_for_shard_subscribers(redis.client().get_connection_manager().await.unwrap(), room, 0).await;
    wait_for_shard_subscribers(
        redis.client().get_connection_manager().await.unwrap(),
        "socket.io#/#session:s2#",
        0,
    )
    .await;
    // Our own unsubscriptions are not mistaken for Redis ending them.
    assert_eq!(a.gateway().metrics.get(wsgate::metrics::PubSubEvent::Lost), 0);
}

#[tokio::test]
async fn remote_join_leave_disconnect_and_the_sharded_emitter() {
    let redis = Redis::start().await;
    let (a, b) = nodes(&redis, "dynamic").await;
    let (mut a42, _) = connect_user(&redis, a.local_addr(), "sa", "42").await;
    let (mut b7, _) = connect_user(&redis, b.local_addr(), "sb", "7").await;
    let manager = redis.client().get_connection_manager().await.unwrap();
    let emitter = Emitter::with_protocol(
        manager,
        "socket.io",
        AdapterProtocol::Sharded(SubscriptionMode::Dynamic),
    );
    // socketsJoin from the emitter: both nodes apply it; the new room gets its channel.
    emitter.of("/").sockets_join(&["lobby".into()]).await.unwrap();
    wait_for_shard_subscribers(
        redis.client().get_connection_manager().await.unwrap(),
        "socket.io#/#lobby#",
        2,
    )
    .await;
    emitter
        .of("/")
        .to("lobby")
        .emit("hello", vec![Mp::from(1)])
        .await
        .unwrap();
    assert_eq!(a42.text().await, r#"42["hello",1]"#);
    assert_eq!(b7.text().await, r#"42["hello",1]"#);
    emitter
        .of("/")
        .to("user:7")
        .sockets_leave(&["lobby".into()])
        .await
        .unwrap();
    wait_for_shard_subscribers(
        redis.client().get_connection_manager().await.unwrap(),
        "socket.io#/#lobby#",
        1,
    )
    .await;
    // The CLI speaks the same flags.
    let (code, out) = wsgate_cli(&[
        "emit",
        "--redis-url",
        &redis.url(),
        "--adapter",
        "sharded",
        "--room",
        "lobby",
        "--event",
        "cli",
        "--data",
        "\"x\"",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(a42.text().await, r#"42["cli","x"]"#);
    b7.idle(Duration::from_millis(100)).await;
    emitter.of("/").to("user:7").disconnect_sockets(true).await.unwrap();
    assert_eq!(b7.text().await, "41");
    a42.idle(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn garbage_on_shard_channels_is_counted_and_harmless() {
    let redis = Redis::start().await;
    let (a, _b) = nodes(&redis, "dynamic").await;
    let (mut a42, _) = connect_user(&redis, a.local_addr(), "sa", "42").await;
    wait_for_shard_subscribers(
        redis.client().get_connection_manager().await.unwrap(),
        "socket.io#/#user:42#",
        1,
    )
    .await;
    let garbage: [&[u8]; 6] = [
        b"",
        b"{not json",
        b"\xc1\xc1",
        br#"{"type":3,"data":{"packet":{"type":2,"data":["x"]},"opts":{"rooms":[],"except":[],"flags":{}}},"uid":"u"}"#,
        br#"{"type":42,"uid":"u","nsp":"/"}"#,
        &[0xdd, 0xff, 0xff, 0xff, 0xff],
    ];
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    for channel in ["socket.io#/#", "socket.io#/#user:42#"] {
        for bytes in garbage {
            let _: i64 = redis::cmd("SPUBLISH")
                .arg(channel)
                .arg(bytes)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    // The message without nsp is dropped as Node drops it: nothing reaches the client.
    a42.idle(Duration::from_millis(200)).await;
    let metrics = &a.gateway().metrics;
    eventually("garbage counted", || {
        metrics.get(wsgate::metrics::AdapterDrop::NotJson)
            + metrics.get(wsgate::metrics::AdapterDrop::NotMsgpack)
            + metrics.get(wsgate::metrics::AdapterDrop::UnknownType)
            + metrics.get(wsgate::metrics::AdapterDrop::TooManyElements)
            >= 8
    })
    .await;
    // Still serving.
    a.cluster()
        .unwrap()
        .broadcast("/", selector(&["user:42"]), vec![Mp::from("ok")])
        .await
        .unwrap();
    assert_eq!(a42.text().await, r#"42["ok"]"#);
}
