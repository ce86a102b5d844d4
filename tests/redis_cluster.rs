//! Gateways on a real Redis Cluster (`--redis-cluster`, redis-server processes created with
//! `redis-cli --cluster create`): sessions looked up and revalidated across slots, the sharded,
//! classic and streams adapters between nodes (recovery included), and a master killed with its replica promoted.

use rmpv::Value as Mp;
use std::time::Duration;
use support::*;

/// What connect-redis writes, on the cluster.
async fn login(cluster: &mut redis::cluster_async::ClusterConnection, sid: &str, user: &str) {
    let record = format!(
        r#"{{"cookie":{{"originalMaxAge":86400000,"expires":"2000-01-01T00:00:00.000Z","httpOnly":true,"path":"/"}},"passport":{{"user":{user}}}}}"#
    );
    let _: () = redis::cmd("SET")
        .arg(format!("sess:{sid}"))
        .arg(record)
        .arg("EX")
        .arg(3600)
        .query_async(cluster)
        .await
        .unwrap();
}

async fn cluster_gateway(cluster: &RedisCluster, extra: &[&str]) -> wsgate::Server {
    let mut flags = vec!["--redis-cluster"];
    flags.extend_from_slice(extra);
    gateway(&cluster.urls(), &flags).await
}

// Session ids whose keys land in different slots of a 3-master cluster.
const SIDS: [&str; 4] = [
    "clusterSessionA-0123456789abcdefg",
    "clusterSessionB-0123456789abcdefg",
    "clusterSessionC-0123456789abcdefg",
    "clusterSessionD-0123456789abcdefg",
];

#[tokio::test]
async fn sessions_and_the_sharded_adapter_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    let mut conn = cluster.connection().await;
    for (i, sid) in SIDS.iter().enumerate() {
        login(&mut conn, sid, &(40 + i).to_string()).await;
    }
    let flags = ["--adapter", "sharded", "--revalidate-interval", "300"];
    let (a, b) = (
        cluster_gateway(&cluster, &flags).await,
        cluster_gateway(&cluster, &flags).await,
    );
    wait_for_shard_subscribers(
        wsgate::redis_connection::RedisConnection::Cluster(conn.clone()),
        "socket.io#/#",
        2,
    )
    .await;

    // Handshakes read the sessions wherever their slot lives; anonymous is refused.
    let mut clients = Vec::new();
    for (i, sid) in SIDS.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        clients.push(Client::connect_as(node.local_addr(), &cookie_for(sid, SECRET)).await.0);
    }
    let (mut stranger, _) = Client::open(a.local_addr(), &[("cookie", &cookie_for("nobody", SECRET))])
        .await
        .unwrap();
    stranger.send("40").await;
    assert_eq!(stranger.text().await, r#"44{"message":"Authentication error"}"#);

    // Room channels live on the shards owning their slots.
    wait_for_shard_subscribers(
        wsgate::redis_connection::RedisConnection::Cluster(conn.clone()),
        "socket.io#/#user:40#",
        1,
    )
    .await;
    wait_for_shard_subscribers(
        wsgate::redis_connection::RedisConnection::Cluster(conn.clone()),
        "socket.io#/#user:41#",
        1,
    )
    .await;
    // A room broadcast from A reaches B's member; everyone's reaches all, binary included.
    a.cluster()
        .unwrap()
        .broadcast("/", selector(&["user:41"]), vec![Mp::from("one")])
        .await
        .unwrap();
    assert_eq!(clients[1].text().await, r#"42["one"]"#);
    let data = vec![Mp::from("all"), Mp::Binary(vec![7])];
    b.cluster().unwrap().broadcast("/", selector(&[]), data).await.unwrap();
    for client in &mut clients {
        assert_eq!(client.text().await, r#"451-["all",{"_placeholder":true,"num":0}]"#);
        assert!(matches!(client.recv().await, Received::Binary(b) if b == [7]));
    }

    // The CLI emitter publishes into the sharded cluster (Node's emitter cannot).
    let seeds = cluster.urls();
    let cli = [
        "emit",
        "--redis-cluster",
        "--redis-url",
        &seeds,
        "--adapter",
        "sharded",
        "--room",
        "user:42",
        "--event",
        "cli",
    ];
    let (code, out) = wsgate_cli(&cli);
    assert_eq!(code, 0, "{out}");
    assert_eq!(clients[2].text().await, r#"42["cli"]"#);

    // Logout of two sessions in different slots: the revalidation (an MGET split by slot)
    // closes exactly their sockets.
    let _: i64 = redis::cmd("DEL")
        .arg(format!("sess:{}", SIDS[0]))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("sess:{}", SIDS[3]))
        .query_async(&mut conn)
        .await
        .unwrap();
    for i in [0, 3] {
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                if let Received::Closed(_) = clients[i].recv().await {
                    return;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "session {i} closed at the next revalidation");
    }
    clients[1].idle(Duration::from_millis(400)).await;
    clients[2].idle(Duration::from_millis(10)).await;
    let gone = a.gateway().metrics.get(wsgate::metrics::Revalidation::SessionGone)
        + b.gateway().metrics.get(wsgate::metrics::Revalidation::SessionGone);
    assert_eq!(gone, 2);
}

#[tokio::test]
async fn the_classic_adapter_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    let mut conn = cluster.connection().await;
    login(&mut conn, SIDS[0], "42").await;
    login(&mut conn, SIDS[1], "42").await;
    let a = cluster_gateway(&cluster, &[]).await;
    // Seeds as repeated flags work as well as a comma-separated list.
    let seeds: Vec<String> = cluster.urls().split(',').map(str::to_owned).collect();
    let b = gateway(
        &seeds[0],
        &["--redis-cluster", "--redis-url", &seeds[1], "--redis-url", &seeds[2]],
    )
    .await;
    let (mut on_a, _) = Client::connect_as(a.local_addr(), &cookie_for(SIDS[0], SECRET)).await;
    let (mut on_b, _) = Client::connect_as(b.local_addr(), &cookie_for(SIDS[1], SECRET)).await;
    // Classic PUBLISH reaches subscribers on every node of the cluster.
    let mut delivered = false;
    for _ in 0..50 {
        a.cluster()
            .unwrap()
            .broadcast("/", selector(&["user:42"]), vec![Mp::from("hi")])
            .await
            .unwrap();
        assert_eq!(on_a.text().await, r#"42["hi"]"#);
        if tokio::time::timeout(Duration::from_millis(100), on_b.text())
            .await
            .is_ok()
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "node B got the broadcast of node A");
}

#[tokio::test]
async fn a_master_failover_is_survived() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let mut conn = cluster.connection().await;
    login(&mut conn, SIDS[0], "42").await;
    login(&mut conn, SIDS[1], "42").await;
    let flags = ["--adapter", "sharded"];
    let (a, b) = (
        cluster_gateway(&cluster, &flags).await,
        cluster_gateway(&cluster, &flags).await,
    );
    wait_for_shard_subscribers(
        wsgate::redis_connection::RedisConnection::Cluster(conn.clone()),
        "socket.io#/#",
        2,
    )
    .await;
    let (mut on_a, _) = Client::connect_as(a.local_addr(), &cookie_for(SIDS[0], SECRET)).await;
    let (mut on_b, _) = Client::connect_as(b.local_addr(), &cookie_for(SIDS[1], SECRET)).await;
    wait_for_shard_subscribers(
        wsgate::redis_connection::RedisConnection::Cluster(conn.clone()),
        "socket.io#/#user:42#",
        2,
    )
    .await;

    // The master serving the room's channel dies; its replica takes over.
    let master = cluster.master_of("socket.io#/#user:42#").await;
    // Replication is asynchronous: a write the replica has not received is lost with its
    // master (Redis's rule, not ours). Make sure the sessions made it, so what is tested here is
    // the gateway's recovery.
    cluster.wait_replicated(master).await;
    cluster.kill(master);
    cluster.wait_for_new_master("socket.io#/#user:42#", master).await;
    // Broadcasts resume: the gateways followed the new topology and subscribed again, and the
    // clients never noticed (no close, no reconnect).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let sent = a
            .cluster()
            .unwrap()
            .broadcast("/", selector(&["user:42"]), vec![Mp::from("after"), Mp::from(n)])
            .await;
        let _ = sent; // local delivery happens even while Redis refuses the publish
        let mut got_b = false;
        let expected = format!(r#"42["after",{n}]"#);
        while let Ok(text) = tokio::time::timeout(Duration::from_millis(200), on_b.text()).await {
            if text == expected {
                got_b = true;
                break;
            }
        }
        if got_b {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "broadcasts did not resume after the failover"
        );
    }
    // Node A's own socket got every broadcast locally; drain them.
    while tokio::time::timeout(Duration::from_millis(50), on_a.text())
        .await
        .is_ok()
    {}
    // Both gateways noticed, counted it, and are subscribed again, exactly once each.
    wait_for_shard_subscribers(
        wsgate::redis_connection::RedisConnection::Cluster(conn.clone()),
        "socket.io#/#",
        2,
    )
    .await;
    wait_for_shard_subscribers(
        wsgate::redis_connection::RedisConnection::Cluster(conn.clone()),
        "socket.io#/#user:42#",
        2,
    )
    .await;
    let lost = |s: &wsgate::Server| s.gateway().metrics.get(wsgate::metrics::PubSubEvent::Lost);
    let recovered = |s: &wsgate::Server| s.gateway().metrics.get(wsgate::metrics::PubSubEvent::Recovered);
    assert!(lost(&a) + lost(&b) >= 1, "the lost subscription was counted");
    assert!(recovered(&a) + recovered(&b) >= 1);
    // Nobody was disconnected: the sessions survived with the replica, and the revalidation
    // after the reconnect found them.
    assert_eq!(a.gateway().metrics.get(wsgate::metrics::Revalidation::SessionGone), 0);
    assert_eq!(b.gateway().metrics.get(wsgate::metrics::Revalidation::SessionGone), 0);
    on_a.idle(Duration::from_millis(50)).await;
    on_b.idle(Duration::from_millis(50)).await;
    // New handshakes work on the new topology.
    login(&mut conn, SIDS[2], "7").await;
    let (mut late, _) = Client::connect_as(b.local_addr(), &cookie_for(SIDS[2], SECRET)).await;
    late.idle(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_slot_migration_while_broadcasting() {
    let cluster = RedisCluster::start(3, 0).await;
    let mut conn = cluster.connection().await;
    for sid in &SIDS {
        login(&mut conn, sid, "42").await;
    }
    let flags = ["--adapter", "sharded"];
    let (a, b) = (
        cluster_gateway(&cluster, &flags).await,
        cluster_gateway(&cluster, &flags).await,
    );
    wait_for_shard_subscribers(
        wsgate::redis_connection::RedisConnection::Cluster(conn.clone()),
        "socket.io#/#",
        2,
    )
    .await;
    let (mut on_b, _) = Client::connect_as(b.local_addr(), &cookie_for(SIDS[1], SECRET)).await;
    wait_for_shard_subscribers(
        wsgate::redis_connection::RedisConnection::Cluster(conn.clone()),
        "socket.io#/#user:42#",
        1,
    )
    .await;

    // Node A broadcasts to the room every 10 ms while every slot of the room channel's master
    // moves to another master (keys and shard channels alike).
    let publisher = a.cluster().unwrap().clone();
    let published = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = published.clone();
    let broadcasting = tokio::spawn(async move {
        loop {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let _ = publisher
                .broadcast("/", selector(&["user:42"]), vec![Mp::from("seq"), Mp::from(n)])
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let source = cluster.master_of("socket.io#/#user:42#").await;
    let target = *cluster.ports.iter().find(|p| **p != source).unwrap();
    let id = |port: u16| async move {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async::<String>(&mut c)
            .await
            .unwrap()
    };
    let (from, to_node) = (id(source).await, id(target).await);
    let reshard = tokio::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{target}")])
        .args([
            "--cluster-from",
            &from,
            "--cluster-to",
            &to_node,
            "--cluster-slots",
            "5461",
            "--cluster-yes",
        ])
        .output()
        .await
        .unwrap();
    assert!(reshard.status.success(), "{}", String::from_utf8_lossy(&reshard.stdout));
    assert_eq!(
        cluster.master_of("socket.io#/#user:42#").await,
        target,
        "the slot moved"
    );

    // Deliveries resume on the new node: broadcasts published after the move are received, in
    // order.
    let after_move = published.load(std::sync::atomic::Ordering::SeqCst);
    let mut seen: Vec<u64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.iter().filter(|n| **n > after_move).count() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries did not resume after the move (last {:?})",
            seen.last()
        );
        let Ok(text) = tokio::time::timeout(Duration::from_millis(500), on_b.text()).await else {
            continue;
        };
        let n: u64 = text
            .strip_prefix(r#"42["seq","#)
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("unexpected {text}"));
        assert!(seen.last().is_none_or(|last| n > *last), "in publish order");
        seen.push(n);
    }
    broadcasting.abort();
    let resumed: Vec<u64> = seen.iter().copied().filter(|n| *n > after_move).collect();
    assert!(
        resumed.windows(2).all(|w| w[1] == w[0] + 1),
        "nothing lost once resumed: {resumed:?}"
    );
    // Sessions moved with their slots: handshakes still find them, and nobody was logged out.
    let _late = Client::connect_as(a.local_addr(), &cookie_for(SIDS[0], SECRET)).await;
    let lost = seen.last().unwrap() - seen.first().unwrap() + 1 - seen.len() as u64;
    println!(
        "slot migration: {after_move} broadcasts published until the move ended, {} received in all, {lost} lost",
        seen.len()
    );
}

/// The Redis Streams adapter and connection state recovery on a cluster: the stream is one key
/// on one master, records are keys on any master.
#[tokio::test]
async fn the_streams_adapter_and_recovery_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    let mut conn = cluster.connection().await;
    login(&mut conn, SIDS[0], "40").await;
    let flags = ["--adapter", "streams"];
    let (a, b) = (
        cluster_gateway(&cluster, &flags).await,
        cluster_gateway(&cluster, &flags).await,
    );
    let cookie = cookie_for(SIDS[0], SECRET);
    let (mut client, _) = Client::open(a.local_addr(), &[("cookie", &cookie)]).await.unwrap();
    client.send("40").await;
    let answer: serde_json::Value = serde_json::from_str(client.text().await.strip_prefix("40").unwrap()).unwrap();
    let (sid, pid) = (
        answer["sid"].as_str().unwrap().to_owned(),
        answer["pid"].as_str().unwrap().to_owned(),
    );

    // A broadcast from B is read back by A from the stream, with its offset.
    let args =
        |frame: String| -> Vec<serde_json::Value> { serde_json::from_str(frame.strip_prefix("42").unwrap()).unwrap() };
    let mut delivered = None;
    for _ in 0..100 {
        // The readers start at the stream's end: until A's has started, a broadcast may pass it.
        b.cluster()
            .unwrap()
            .broadcast("/", selector(&["user:40"]), vec![Mp::from("one")])
            .await
            .unwrap();
        let next = tokio::time::timeout(Duration::from_millis(200), client.recv_within(Duration::from_secs(60))).await;
        if let Ok(Received::Text(frame)) = next {
            delivered = Some(frame);
            break;
        }
    }
    let first = args(delivered.expect("a broadcast read back from the stream"));
    let offset = first.last().unwrap().as_str().unwrap().to_owned();
    // Drop, miss one, recover on B.
    drop(client);
    for _ in 0..250 {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("sio:session:{pid}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if ttl > 0 && ttl <= 120_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.cluster()
        .unwrap()
        .broadcast("/", selector(&["user:40"]), vec![Mp::from("missed")])
        .await
        .unwrap();
    let (mut back, _) = Client::open(b.local_addr(), &[("cookie", &cookie)]).await.unwrap();
    back.send(&format!(r#"40{{"pid":"{pid}","offset":"{offset}"}}"#)).await;
    assert_eq!(args(back.text().await)[0], "missed");
    let reply: serde_json::Value = serde_json::from_str(back.text().await.strip_prefix("40").unwrap()).unwrap();
    assert_eq!(
        (reply["sid"].as_str(), reply["pid"].as_str()),
        (Some(&*sid), Some(&*pid))
    );
}
