//! A logged-out user never gets back in through a race (hardening round 2): a CONNECT after a
//! logout on an engine session opened before it, a later store outage, or a session key changed
//! by MOVE, COPY or RESTORE. Real redis-server with keyspace notifications, real gateway.

use std::time::Duration;
use support::*;

const ALICE: &str = "racesAliceSession-0123456789abcde";
const REFUSED: &str = r#"44{"message":"Authentication error"}"#;

async fn keyspace_gateway(redis: &Redis, extra: &[&str]) -> wsgate::Server {
    let mut flags = vec!["--configure-keyspace-events", "--revalidate-interval", "0"];
    flags.extend_from_slice(extra);
    let server = gateway(&redis.url(), &flags).await;
    redis.wait_for_servers("/", 1).await;
    eventually("keyspace events configured", || {
        server
            .gateway()
            .metrics
            .keyspace_notifications
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    server
}

/// A CONNECT sent after a logout, on an engine session opened before it, was accepted: the
/// session was read at the handshake. It is read at the CONNECT now.
#[tokio::test]
async fn a_connect_after_logout_is_refused() {
    let redis = Redis::start().await;
    redis.login(ALICE, r#""alice""#).await;
    let server = gateway(&redis.url(), &[]).await;
    let (mut client, _) = Client::open(server.local_addr(), &[("cookie", &cookie_for(ALICE, SECRET))])
        .await
        .unwrap();
    let _: i64 = redis.cmd(&["DEL", &format!("sess:{ALICE}")]).await;
    client.send("40").await;
    assert_eq!(client.text().await, REFUSED);
}

/// With --store-outage-grace, a session revoked while Redis was up got back in during a later
/// outage (the grace memory still had it). A revocation forgets it.
#[tokio::test]
async fn a_revoked_session_does_not_come_back_in_an_outage() {
    let redis = Redis::start().await;
    redis.login(ALICE, r#""alice""#).await;
    let server = keyspace_gateway(
        &redis,
        &["--store-outage-grace", "60s", "--session-lookup-timeout", "300ms"],
    )
    .await;
    let addr = server.local_addr();
    let cookie = cookie_for(ALICE, SECRET);
    let (mut alice, answer) = Client::connect_answer(addr, &cookie).await;
    assert!(answer.starts_with("40{"), "{answer}");
    let _: i64 = redis.cmd(&["DEL", &format!("sess:{ALICE}")]).await;
    assert!(closed_within(&mut alice, Duration::from_secs(2)).await, "logged out");
    redis.pause();
    let (_again, answer) = Client::connect_answer(addr, &cookie).await;
    redis.resume();
    assert_eq!(
        answer, r#"44{"message":"Session store unavailable"}"#,
        "not let in from memory"
    );
}

/// MOVE (to another database), COPY … REPLACE and RESTORE … REPLACE change a session key
/// without the events the gateway followed: they waited for the next revalidation.
#[tokio::test]
async fn move_copy_and_restore_are_followed() {
    let redis = Redis::start().await;
    let server = keyspace_gateway(&redis, &[]).await;
    let addr = server.local_addr();
    let key = format!("sess:{ALICE}");

    // MOVE to database 1: gone from the gateway's.
    redis.login(ALICE, r#""alice""#).await;
    let (mut alice, _) = Client::connect_as(addr, &cookie_for(ALICE, SECRET)).await;
    let _: i64 = redis.cmd(&["MOVE", &key, "1"]).await;
    assert!(
        closed_within(&mut alice, Duration::from_secs(1)).await,
        "MOVE closes within a second"
    );

    // COPY … REPLACE of a session without its user over alice's.
    redis.login(ALICE, r#""alice""#).await;
    let (mut alice, _) = Client::connect_as(addr, &cookie_for(ALICE, SECRET)).await;
    redis
        .put_session(
            "loggedOutTemplate",
            r#"{"cookie":{"originalMaxAge":3600000},"passport":{}}"#,
        )
        .await;
    let _: i64 = redis.cmd(&["COPY", "sess:loggedOutTemplate", &key, "REPLACE"]).await;
    assert!(
        closed_within(&mut alice, Duration::from_secs(1)).await,
        "COPY REPLACE closes within a second"
    );

    // RESTORE … REPLACE of another user's record.
    redis.login(ALICE, r#""alice""#).await;
    let (mut alice, _) = Client::connect_as(addr, &cookie_for(ALICE, SECRET)).await;
    redis.login("mallorySession", r#""mallory""#).await;
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let dump: Vec<u8> = redis::cmd("DUMP")
        .arg("sess:mallorySession")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg(&key)
        .arg(0)
        .arg(dump)
        .arg("REPLACE")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        closed_within(&mut alice, Duration::from_secs(1)).await,
        "RESTORE REPLACE closes within a second"
    );
    let metrics = &server.gateway().metrics;
    assert_eq!(metrics.get(wsgate::metrics::Revoked::Moved), 1);
    assert_eq!(metrics.get(wsgate::metrics::Revoked::NoUser), 1);
    assert_eq!(metrics.get(wsgate::metrics::Revoked::UserChanged), 1);
}

/// FLUSHDB and SWAPDB send no keyspace events at all: they waited for the next revalidation.
/// The gateway notices within about a second and checks every session.
#[tokio::test]
async fn flushdb_and_swapdb_are_noticed() {
    let redis = Redis::start().await;
    let server = keyspace_gateway(&redis, &[]).await;
    let addr = server.local_addr();
    let sentinel_set = || async {
        let exists: i64 = redis.cmd(&["EXISTS", "wsgate:flush-sentinel"]).await;
        exists == 1
    };
    for command in [&["FLUSHDB"][..], &["SWAPDB", "0", "1"][..]] {
        redis.login(ALICE, r#""alice""#).await;
        let (mut alice, _) = Client::connect_as(addr, &cookie_for(ALICE, SECRET)).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while !sentinel_set().await {
            assert!(tokio::time::Instant::now() < until, "the sentinel is set");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The gateway set it, so it has seen it: its disappearance is news.
        let _: () = redis.cmd(command).await;
        assert!(
            closed_within(&mut alice, Duration::from_secs(3)).await,
            "{command:?} closes the sockets of sessions that went with it"
        );
        if command[0] == "SWAPDB" {
            let _: () = redis.cmd(&["SWAPDB", "0", "1"]).await;
        }
    }
}
