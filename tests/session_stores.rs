//! Sessions kept by connect-memcached (a real memcached) and connect-pg-simple (a real
//! PostgreSQL, in a database of the test's own): the same accept and refuse rules as with
//! connect-redis, expiry, revalidation, the store outage, and Postgres LISTEN/NOTIFY revocation.
//! The cluster adapter keeps its own Redis.

use async_memcached::AsciiProtocol;
use std::time::Duration;
use support::*;

const ALICE: &str = "storesAliceSession-0123456789abcd";
const BOB: &str = "storesBobSession-0123456789abcdef";
const ANON: &str = "storesAnonSession-0123456789abcde";
const GARBLED: &str = "storesGarbledSession-0123456789ab";
const NOBODY: &str = "storesNobodySession-0123456789abc";

/// A session object as express-session saves it, with passport's user (or none).
fn record(user: Option<&str>) -> String {
    let passport = match user {
        Some(user) => format!(r#"{{"user":{user}}}"#),
        None => "{}".into(),
    };
    format!(
        r#"{{"cookie":{{"originalMaxAge":86400000,"expires":"2000-01-01T00:00:00.000Z","httpOnly":true,"path":"/"}},"passport":{passport}}}"#
    )
}

const REFUSED: &str = r#"44{"message":"Authentication error"}"#;
const UNAVAILABLE: &str = r#"44{"message":"Session store unavailable"}"#;

// ---------------------------------------------------------------------------------------------
// memcached

async fn memcached_gateway(redis: &Redis, memcached: &Memcached, extra: &[&str]) -> wsgate::Server {
    let url = memcached.url();
    let mut flags = vec!["--session-store", "memcached", "--session-store-url", &url];
    flags.extend_from_slice(extra);
    gateway(&redis.url(), &flags).await
}

#[tokio::test]
async fn memcached_sessions_accept_refuse_expire_like_connect_memcached() {
    let (redis, memcached) = (Redis::start().await, Memcached::start().await);
    // connect-memcached has no default prefix: the key is the bare session id.
    memcached.put(ALICE, &record(Some("42")), 3600).await;
    memcached.put(ANON, &record(None), 3600).await;
    memcached.put(GARBLED, "\u{1}not json", 3600).await;
    memcached.put(BOB, &record(Some(r#"{"id":"b0b"}"#)), 2).await;
    // A connect-redis style key is not a connect-memcached one.
    memcached.put(&format!("sess:{NOBODY}"), &record(Some("1")), 3600).await;
    let server = memcached_gateway(&redis, &memcached, &[]).await;

    let (_alice, answer) = Client::connect_answer(server.local_addr(), &cookie_for(ALICE, SECRET)).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    let nsp = server.gateway().namespace("/").unwrap().clone();
    assert_eq!(nsp.members("user:42").len(), 1, "the user's room");
    let (_bob, answer) = Client::connect_answer(server.local_addr(), &cookie_for(BOB, SECRET)).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    assert_eq!(nsp.members("user:{\"id\":\"b0b\"}").len(), 1);

    for anonymous in [ANON, GARBLED, NOBODY] {
        assert_eq!(
            Client::connect_answer(server.local_addr(), &cookie_for(anonymous, SECRET))
                .await
                .1,
            REFUSED,
            "{anonymous}"
        );
    }
    // memcached enforces the TTL: an expired session is no session.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        Client::connect_answer(server.local_addr(), &cookie_for(BOB, SECRET))
            .await
            .1,
        REFUSED
    );
    let metrics = &server.gateway().metrics;
    assert_eq!(metrics.get(wsgate::metrics::Auth::NoSession), 2);
    assert_eq!(metrics.get(wsgate::metrics::Auth::NoUser), 1);
    assert_eq!(metrics.get(wsgate::metrics::Auth::BadSessionRecord), 1);
}

#[tokio::test]
async fn memcached_revalidation_closes_logged_out_sockets_and_an_outage_refuses() {
    let (redis, memcached) = (Redis::start().await, Memcached::start().await);
    memcached.put(&format!("app:{ALICE}"), &record(Some("42")), 3600).await;
    memcached.put(&format!("app:{BOB}"), &record(Some("7")), 3600).await;
    let server = memcached_gateway(
        &redis,
        &memcached,
        &[
            "--session-prefix",
            "app:",
            "--revalidate-interval",
            "300",
            "--session-lookup-timeout",
            "500",
        ],
    )
    .await;
    let (mut alice, answer) = Client::connect_answer(server.local_addr(), &cookie_for(ALICE, SECRET)).await;
    assert!(answer.starts_with("40{"), "{answer}");
    let (mut bob, answer) = Client::connect_answer(server.local_addr(), &cookie_for(BOB, SECRET)).await;
    assert!(answer.starts_with("40{"), "{answer}");

    // Logout in the web app (connect-memcached's destroy is a delete).
    memcached.delete(&format!("app:{ALICE}")).await;
    assert!(
        closed_within(&mut alice, Duration::from_secs(2)).await,
        "closed at the next round"
    );
    bob.idle(Duration::from_millis(700)).await;
    assert_eq!(
        server.gateway().metrics.get(wsgate::metrics::Revalidation::SessionGone),
        1
    );

    // The store goes away: connected sockets stay, new handshakes are told why they fail.
    drop(memcached);
    bob.idle(Duration::from_millis(700)).await;
    assert_eq!(
        Client::connect_answer(server.local_addr(), &cookie_for(BOB, SECRET))
            .await
            .1,
        UNAVAILABLE
    );
    assert!(
        server
            .gateway()
            .metrics
            .get(wsgate::metrics::Revalidation::StoreUnavailable)
            >= 1
    );
}

#[tokio::test]
async fn memcached_touch_extends_a_session_without_resurrecting_it() {
    let (redis, memcached) = (Redis::start().await, Memcached::start().await);
    // originalMaxAge 3 s: a touch gives the session 3 s more, counted from the touch.
    let short = record(Some("42")).replace("86400000", "3000");
    memcached.put(ALICE, &short, 3).await;
    // Revalidation off: it starts at a random point of its 30 s interval, and landing after the
    // delete below would close the socket this test keeps using (a CI run saw it).
    let flags = ["--touch-sessions", "1000", "--revalidate-interval", "0"];
    let server = memcached_gateway(&redis, &memcached, &flags).await;
    let (mut alice, answer) = Client::connect_answer(server.local_addr(), &cookie_for(ALICE, SECRET)).await;
    assert!(answer.starts_with("40{"), "{answer}");
    // Activity every half second for 4.5 s: past the first TTL, kept alive by touches.
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        alice.send(r#"42["ping"]"#).await;
    }
    let mut client = memcached.client().await;
    assert!(client.get(ALICE).await.unwrap().is_some(), "touched past its first TTL");
    let touches = |outcome: wsgate::metrics::SessionTouch| server.gateway().metrics.get(outcome);
    assert!(
        touches(wsgate::metrics::SessionTouch::Extended) >= 2,
        "extended {} gone {} unavailable {}",
        touches(wsgate::metrics::SessionTouch::Extended),
        touches(wsgate::metrics::SessionTouch::Gone),
        touches(wsgate::metrics::SessionTouch::StoreUnavailable)
    );

    // Logged out meanwhile: activity does not bring the session back.
    memcached.delete(ALICE).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        alice.send(r#"42["ping"]"#).await;
    }
    eventually("a touch of the deleted session", || {
        touches(wsgate::metrics::SessionTouch::Gone) >= 1
    })
    .await;
    assert!(client.get(ALICE).await.unwrap().is_none(), "not resurrected");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

async fn postgres_gateway(redis: &Redis, postgres: &Postgres, extra: &[&str]) -> wsgate::Server {
    let url = postgres.url();
    let mut flags = vec!["--session-store", "postgres", "--session-store-url", &url];
    flags.extend_from_slice(extra);
    gateway(&redis.url(), &flags).await
}

#[tokio::test]
async fn postgres_sessions_accept_refuse_expire_like_connect_pg_simple() {
    let (redis, postgres) = (Redis::start().await, Postgres::start().await);
    postgres.put(ALICE, &record(Some("42")), 3600.0).await;
    postgres.put(ANON, &record(None), 3600.0).await;
    postgres.put(BOB, &record(Some("7")), 1.5).await;
    // Past its expire but not yet pruned: connect-pg-simple's get does not return it.
    postgres.put(NOBODY, &record(Some("9")), -10.0).await;
    let server = postgres_gateway(&redis, &postgres, &[]).await;

    let (_alice, answer) = Client::connect_answer(server.local_addr(), &cookie_for(ALICE, SECRET)).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    assert_eq!(server.gateway().namespace("/").unwrap().members("user:42").len(), 1);
    let (_bob, answer) = Client::connect_answer(server.local_addr(), &cookie_for(BOB, SECRET)).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    for anonymous in [ANON, NOBODY, GARBLED] {
        assert_eq!(
            Client::connect_answer(server.local_addr(), &cookie_for(anonymous, SECRET))
                .await
                .1,
            REFUSED,
            "{anonymous}"
        );
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        Client::connect_answer(server.local_addr(), &cookie_for(BOB, SECRET))
            .await
            .1,
        REFUSED,
        "expired"
    );
}

#[tokio::test]
async fn postgres_schema_and_table_names_are_settings() {
    let (redis, postgres) = (Redis::start().await, Postgres::start().await);
    postgres
        .execute(r#"CREATE SCHEMA "app data"; CREATE TABLE "app data"."web Sessions" (LIKE "session" INCLUDING ALL);"#)
        .await;
    postgres
        .execute(&format!(
            r#"INSERT INTO "app data"."web Sessions" VALUES ('{ALICE}', '{}', now() + interval '1 hour')"#,
            record(Some("42"))
        ))
        .await;
    let server = postgres_gateway(
        &redis,
        &postgres,
        &["--session-schema", "app data", "--session-table", "web Sessions"],
    )
    .await;
    assert!(Client::connect_answer(server.local_addr(), &cookie_for(ALICE, SECRET))
        .await
        .1
        .starts_with("40{"));
    // The default table holds no such session.
    let default = postgres_gateway(&redis, &postgres, &[]).await;
    assert_eq!(
        Client::connect_answer(default.local_addr(), &cookie_for(ALICE, SECRET))
            .await
            .1,
        REFUSED
    );
}

#[tokio::test]
async fn postgres_revalidation_batches_and_an_outage_refuses() {
    let (redis, postgres) = (Redis::start().await, Postgres::start().await);
    postgres.put(ALICE, &record(Some("42")), 3600.0).await;
    postgres.put(BOB, &record(Some("7")), 3600.0).await;
    let server = postgres_gateway(
        &redis,
        &postgres,
        &["--revalidate-interval", "300", "--session-lookup-timeout", "500"],
    )
    .await;
    let (mut alice, _) = Client::connect_answer(server.local_addr(), &cookie_for(ALICE, SECRET)).await;
    let (mut bob, _) = Client::connect_answer(server.local_addr(), &cookie_for(BOB, SECRET)).await;
    // Another user logs into Bob's session (passport rewrites it): his sockets go.
    postgres.put(BOB, &record(Some("8")), 3600.0).await;
    assert!(closed_within(&mut bob, Duration::from_secs(2)).await, "user changed");
    // Logout: connect-pg-simple's destroy deletes the row.
    postgres
        .execute(&format!(r#"DELETE FROM "session" WHERE sid = '{ALICE}'"#))
        .await;
    assert!(closed_within(&mut alice, Duration::from_secs(2)).await, "session gone");
    let metrics = &server.gateway().metrics;
    assert_eq!(metrics.get(wsgate::metrics::Revalidation::UserChanged), 1);
    assert_eq!(metrics.get(wsgate::metrics::Revalidation::SessionGone), 1);

    // The session table disappears (a migration gone wrong): "unavailable", not "anonymous".
    postgres.put(ALICE, &record(Some("42")), 3600.0).await;
    postgres
        .execute(r#"ALTER TABLE "session" RENAME TO "old_session""#)
        .await;
    assert_eq!(
        Client::connect_answer(server.local_addr(), &cookie_for(ALICE, SECRET))
            .await
            .1,
        UNAVAILABLE
    );
    // A server nobody answers on.
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/x", free_port());
    let down = gateway(
        &redis.url(),
        &[
            "--session-store",
            "postgres",
            "--session-store-url",
            &nowhere,
            "--session-lookup-timeout",
            "500",
        ],
    )
    .await;
    assert_eq!(
        Client::connect_answer(down.local_addr(), &cookie_for(ALICE, SECRET))
            .await
            .1,
        UNAVAILABLE
    );
}

#[tokio::test]
async fn postgres_notify_closes_logged_out_sockets_within_a_second() {
    let (redis, postgres) = (Redis::start().await, Postgres::start().await);
    install_notify_trigger(&postgres).await;
    for sid in [ALICE, BOB, ANON] {
        postgres.put(sid, &record(Some("42")), 3600.0).await;
    }
    // No periodic revalidation: only the notifications can close sockets here.
    let server = postgres_gateway(&redis, &postgres, &["--pg-notify", "--revalidate-interval", "0"]).await;
    let (mut alice, _) = Client::connect_answer(server.local_addr(), &cookie_for(ALICE, SECRET)).await;
    let (mut bob, _) = Client::connect_answer(server.local_addr(), &cookie_for(BOB, SECRET)).await;
    let (mut other, _) = Client::connect_answer(server.local_addr(), &cookie_for(ANON, SECRET)).await;
    // The LISTEN connection is set up (its LISTEN is the last thing it does before waiting).
    wait_for_listener(&postgres).await;

    // express-session's touch (only `expire` changes) closes nothing.
    postgres
        .execute(&format!(
            r#"UPDATE "session" SET expire = now() + interval '2 hours' WHERE sid = '{BOB}'"#
        ))
        .await;
    // Logout: the row is deleted.
    postgres
        .execute(&format!(r#"DELETE FROM "session" WHERE sid = '{ALICE}'"#))
        .await;
    assert!(
        closed_within(&mut alice, Duration::from_secs(1)).await,
        "logout within a second"
    );
    // passport's logout without regenerate: the user leaves the record.
    postgres.put(BOB, &record(None), 3600.0).await;
    assert!(
        closed_within(&mut bob, Duration::from_secs(1)).await,
        "user gone within a second"
    );
    other.idle(Duration::from_millis(300)).await;
    assert_eq!(server.gateway().metrics.get(wsgate::metrics::Revoked::SessionGone), 1);
    assert_eq!(server.gateway().metrics.get(wsgate::metrics::Revoked::NoUser), 1);

    // The LISTEN connection is killed (a Postgres restart, a failover): it comes back, and
    // sessions that ended meanwhile are caught by the resync.
    postgres
        .execute(
            // This test's own listener only: the other tests' run beside it.
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'wsgate-session-notify' AND datname = current_database()",
        )
        .await;
    postgres
        .execute(&format!(r#"DELETE FROM "session" WHERE sid = '{ANON}'"#))
        .await;
    assert!(
        closed_within(&mut other, Duration::from_secs(3)).await,
        "caught after reconnect"
    );
}

/// Waits up to 5 s for wsgate's LISTEN connection to this database; returns its backend pid.
async fn wait_for_listener(postgres: &Postgres) -> i32 {
    for _ in 0..250 {
        if let Some((pid, _)) = postgres.listener().await {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no LISTEN connection from wsgate");
}

/// Round 2 finding: the keep-alive query was awaited where the connection was not polled, so it
/// never completed: the LISTEN connection was dropped as dead 10 s out of every 25, and logouts
/// meanwhile waited for the next reconnect. Now its keep-alives complete (the same backend runs
/// them one after the other) and a logout after several periods closes the socket at once.
#[tokio::test]
async fn postgres_notify_listener_stays_up_across_keepalives() {
    let (redis, postgres) = (Redis::start().await, Postgres::start().await);
    install_notify_trigger(&postgres).await;
    postgres.put(ALICE, &record(Some("42")), 3600.0).await;
    let server = postgres_gateway(
        &redis,
        &postgres,
        &[
            "--pg-notify",
            "--pg-notify-keepalive",
            "200ms",
            "--revalidate-interval",
            "0",
        ],
    )
    .await;
    let (mut alice, answer) = Client::connect_answer(server.local_addr(), &cookie_for(ALICE, SECRET)).await;
    assert!(answer.starts_with("40{"), "{answer}");
    let pid = wait_for_listener(&postgres).await;
    // Three keep-alives answered on the same connection (each moves its state_change).
    let mut seen = std::collections::HashSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 4 {
        assert!(tokio::time::Instant::now() < until, "keep-alives seen: {seen:?}");
        let (now, changed) = postgres.listener().await.expect("the LISTEN connection stays");
        assert_eq!(now, pid, "the LISTEN connection was replaced");
        seen.insert(changed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    postgres
        .execute(&format!(r#"DELETE FROM "session" WHERE sid = '{ALICE}'"#))
        .await;
    assert!(
        closed_within(&mut alice, Duration::from_secs(1)).await,
        "logout within a second"
    );
}

/// Round 2 finding: a TRUNCATE of the session table notified nothing (row triggers do not fire
/// on it), so sockets stayed until the next revalidation. The trigger SQL notifies it too, and
/// every session is read again.
#[tokio::test]
async fn postgres_truncate_closes_every_socket_within_a_second() {
    let (redis, postgres) = (Redis::start().await, Postgres::start().await);
    install_notify_trigger(&postgres).await;
    postgres.put(ALICE, &record(Some("42")), 3600.0).await;
    postgres.put(BOB, &record(Some("7")), 3600.0).await;
    let server = postgres_gateway(&redis, &postgres, &["--pg-notify", "--revalidate-interval", "0"]).await;
    let (mut alice, _) = Client::connect_answer(server.local_addr(), &cookie_for(ALICE, SECRET)).await;
    let (mut bob, _) = Client::connect_answer(server.local_addr(), &cookie_for(BOB, SECRET)).await;
    wait_for_listener(&postgres).await;
    postgres.execute(r#"TRUNCATE "session""#).await;
    assert!(closed_within(&mut alice, Duration::from_secs(1)).await);
    assert!(closed_within(&mut bob, Duration::from_secs(1)).await);
}

/// Installs deploy/postgres/session-notify.sql in the test's database, as an operator would.
async fn install_notify_trigger(postgres: &Postgres) {
    let sql = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/postgres/session-notify.sql"
    ));
    postgres.execute(&sql.unwrap()).await;
}
