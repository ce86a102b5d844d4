//! A session ended in the store closes its sockets on every node within a second, through Redis
//! keyspace notifications: logout (the key deleted), expiry, eviction, a rewrite with another
//! user. Without the notifications, the periodic revalidation still catches it.

use std::time::Duration;
use support::*;

const ALICE: &str = "revocationAliceSession-0123456789";
const BOB: &str = "revocationBobSession-01234567890ab";

struct Cluster {
    redis: Redis,
    nodes: [wsgate::Server; 2],
}

async fn two_nodes(redis: Redis, extra: &[&str]) -> Cluster {
    redis.login(ALICE, "42").await;
    redis.login(BOB, "7").await;
    let mut flags = vec!["--configure-keyspace-events"];
    flags.extend_from_slice(extra);
    let nodes = [gateway(&redis.url(), &flags).await, gateway(&redis.url(), &flags).await];
    redis.wait_for_servers("/", 2).await;
    Cluster { redis, nodes }
}

impl Cluster {
    /// One socket of `sid` on each node.
    async fn sockets(&self, sid: &str) -> Vec<Client> {
        let mut clients = Vec::new();
        for node in &self.nodes {
            clients.push(Client::connect_as(node.local_addr(), &cookie_for(sid, SECRET)).await.0);
        }
        clients
    }

    fn revoked(&self, reason: wsgate::metrics::Revoked) -> u64 {
        self.nodes.iter().map(|n| n.gateway().metrics.get(reason)).sum()
    }
}

async fn assert_revoked_everywhere(alice: &mut [Client], bob: &mut [Client]) {
    for client in alice.iter_mut() {
        assert!(
            closed_within(client, Duration::from_secs(1)).await,
            "closed within a second"
        );
    }
    for client in bob.iter_mut() {
        client.idle(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn logout_expiry_and_rewrite_close_sockets_on_every_node_within_a_second() {
    let cluster = two_nodes(Redis::start().await, &[]).await;
    let metrics = cluster.nodes[0].metrics_text();
    assert!(metrics.contains("wsgate_keyspace_notifications 1"), "{metrics}");

    // Logout (passport >= 0.6 destroys the session): the key is deleted.
    let (mut alice, mut bob) = (cluster.sockets(ALICE).await, cluster.sockets(BOB).await);
    let _: i64 = cluster.redis.cmd(&["DEL", &format!("sess:{ALICE}")]).await;
    assert_revoked_everywhere(&mut alice, &mut bob).await;
    assert_eq!(cluster.revoked(wsgate::metrics::Revoked::Deleted), 2);

    // Expiry.
    cluster.redis.login(ALICE, "42").await;
    let mut alice = cluster.sockets(ALICE).await;
    let _: i64 = cluster.redis.cmd(&["PEXPIRE", &format!("sess:{ALICE}"), "50"]).await;
    assert_revoked_everywhere(&mut alice, &mut bob).await;
    assert_eq!(cluster.revoked(wsgate::metrics::Revoked::Expired), 2);

    // The record rewritten with the same user (a resave): nothing happens; with another user or
    // none: closed.
    cluster.redis.login(ALICE, "42").await;
    let mut alice = cluster.sockets(ALICE).await;
    cluster.redis.login(ALICE, "42").await;
    alice[0].idle(Duration::from_millis(300)).await;
    cluster.redis.login(ALICE, "43").await;
    assert_revoked_everywhere(&mut alice, &mut bob).await;
    assert_eq!(cluster.revoked(wsgate::metrics::Revoked::UserChanged), 2);
}

#[tokio::test]
async fn an_evicted_session_closes_its_sockets() {
    // Only keys with a TTL may be evicted, shortest TTL first: the session goes first.
    let redis = Redis::start_with(
        free_port(),
        &["--maxmemory", "4mb", "--maxmemory-policy", "volatile-ttl"],
    )
    .await;
    let cluster = two_nodes(redis, &[]).await;
    let _: i64 = cluster.redis.cmd(&["EXPIRE", &format!("sess:{BOB}"), "100000"]).await;
    let _: i64 = cluster.redis.cmd(&["EXPIRE", &format!("sess:{ALICE}"), "60"]).await;
    let mut alice = cluster.sockets(ALICE).await;
    let filler = "x".repeat(100_000);
    let mut conn = cluster.redis.client().get_multiplexed_async_connection().await.unwrap();
    for i in 0..60 {
        let _: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&filler)
            .query_async(&mut conn)
            .await;
        let exists: i64 = cluster.redis.cmd(&["EXISTS", &format!("sess:{ALICE}")]).await;
        if exists == 0 {
            break;
        }
    }
    for client in alice.iter_mut() {
        assert!(
            closed_within(client, Duration::from_secs(2)).await,
            "the evicted session's sockets close"
        );
    }
    assert!(
        cluster.revoked(wsgate::metrics::Revoked::Evicted) >= 2,
        "counted as evicted on both nodes"
    );
}

#[tokio::test]
async fn without_keyspace_events_the_periodic_check_still_closes_them() {
    let redis = Redis::start().await;
    redis.login(ALICE, "42").await;
    let node = gateway(&redis.url(), &["--revalidate-interval", "400"]).await;
    eventually("the setting was checked", || {
        node.metrics_text().contains("wsgate_keyspace_notifications 0")
    })
    .await;
    let (mut alice, _) = Client::connect_as(node.local_addr(), &cookie_for(ALICE, SECRET)).await;
    let _: i64 = redis.cmd(&["DEL", &format!("sess:{ALICE}")]).await;
    assert!(closed_within(&mut alice, Duration::from_secs(3)).await);
    assert_eq!(node.gateway().metrics.get(wsgate::metrics::Revoked::Deleted), 0);
    assert_eq!(
        node.gateway().metrics.get(wsgate::metrics::Revalidation::SessionGone),
        1
    );
}

trait MetricsText {
    fn metrics_text(&self) -> String;
}

impl MetricsText for wsgate::Server {
    fn metrics_text(&self) -> String {
        self.gateway().metrics.render()
    }
}

#[tokio::test]
async fn sessions_lost_while_redis_was_away_are_caught_when_it_is_back() {
    let port = free_port();
    let redis = Redis::start_on(port).await;
    redis.login(ALICE, "42").await;
    // The periodic check is far away: only the revalidation on reconnect can catch it.
    let node = gateway(&redis.url(), &["--revalidate-interval", "600000"]).await;
    redis.wait_for_servers("/", 1).await;
    let (mut alice, _) = Client::connect_as(node.local_addr(), &cookie_for(ALICE, SECRET)).await;
    drop(redis);
    // Connected sockets stay through the outage.
    alice.idle(Duration::from_millis(500)).await;
    // Back, but empty (no persistence): the session is gone, and its socket goes too.
    let _redis = Redis::start_on(port).await;
    assert!(closed_within(&mut alice, Duration::from_secs(10)).await);
    assert_eq!(
        node.gateway().metrics.get(wsgate::metrics::Revalidation::SessionGone),
        1
    );
}
