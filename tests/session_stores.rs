//! Sessions kept by connect-memcached (a real memcached) and connect-pg-simple (a real
//! PostgreSQL, in a database of the test's own): the same accept and refuse rules as with
//! connect-redis, expiry, revalidation, the store outage, and Postgres LISTEN/NOTIFY revocation.
//! The cluster adapter keeps its own Redis.

mod common;

use async_memcached::AsciiProtocol;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// Waits up to `within` for the server to close the connection.
async fn closed_within(client: &mut Client, within: Duration) -> bool {
    let closing = async {
        loop {
            if let Received::Closed(_) = client.recv().await {
                return true;
            }
        }
    };
    tokio::time::timeout(within, closing).await.unwrap_or(false)
}

/// The answer to CONNECT of namespace `/` for `sid`'s cookie.
async fn connect_answer(server: &wsgate::Server, sid: &str) -> (Client, String) {
    let cookie = cookie_for(sid, SECRET);
    let (mut client, _) = Client::open(server.local_addr(), &[("cookie", &cookie)])
        .await
        .expect("upgrade");
    client.send("40").await;
    let answer = client.text().await;
    (client, answer)
}

const REFUSED: &str = r#"44{"message":"Authentication error"}"#;
const UNAVAILABLE: &str = r#"44{"message":"Session store unavailable"}"#;

// ---------------------------------------------------------------------------------------------
// memcached

/// A memcached on a free port, killed on drop.
struct Memcached {
    port: u16,
    child: Child,
}

impl Memcached {
    async fn start() -> Memcached {
        let port = free_port();
        let child = Command::new("memcached")
            // memcached refuses to run as root unless told which user to be.
            .args([
                "-p",
                &port.to_string(),
                "-l",
                "127.0.0.1",
                "-U",
                "0",
                "-m",
                "16",
                "-u",
                "root",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached must be installed (see .ci/run)");
        let memcached = Memcached { port, child };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return memcached;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("memcached did not start on {port}");
    }

    fn url(&self) -> String {
        format!("memcache://127.0.0.1:{}", self.port)
    }

    async fn client(&self) -> async_memcached::Client {
        async_memcached::Client::new(format!("tcp://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }

    /// What connect-memcached writes: the JSON text with the memcached client's JSON flag (2).
    async fn put(&self, key: &str, json: &str, ttl_secs: i64) {
        self.client()
            .await
            .set(key, json, Some(ttl_secs), Some(2))
            .await
            .unwrap();
    }

    async fn delete(&self, key: &str) {
        self.client().await.delete(key).await.unwrap();
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

    let (_alice, answer) = connect_answer(&server, ALICE).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    let nsp = server.gateway().namespace("/").unwrap().clone();
    assert_eq!(nsp.members("user:42").len(), 1, "the user's room");
    let (_bob, answer) = connect_answer(&server, BOB).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    assert_eq!(nsp.members("user:{\"id\":\"b0b\"}").len(), 1);

    for anonymous in [ANON, GARBLED, NOBODY] {
        assert_eq!(connect_answer(&server, anonymous).await.1, REFUSED, "{anonymous}");
    }
    // memcached enforces the TTL: an expired session is no session.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(connect_answer(&server, BOB).await.1, REFUSED);
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
    let (mut alice, answer) = connect_answer(&server, ALICE).await;
    assert!(answer.starts_with("40{"), "{answer}");
    let (mut bob, answer) = connect_answer(&server, BOB).await;
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
    assert_eq!(connect_answer(&server, BOB).await.1, UNAVAILABLE);
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
    let (mut alice, answer) = connect_answer(&server, ALICE).await;
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

/// A database of this test's own on the machine's PostgreSQL (`WSGATE_TEST_PG_URL`, default the
/// local server's `postgres` database), with connect-pg-simple's table; dropped on drop.
struct Postgres {
    admin_url: String,
    name: String,
    client: tokio_postgres::Client,
}

fn admin_url() -> String {
    std::env::var("WSGATE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at WSGATE_TEST_PG_URL ({e}); .ci/run installs it"));
    tokio::spawn(connection);
    client
}

impl Postgres {
    async fn start() -> Postgres {
        let admin_url = admin_url();
        let name = format!("wsgate_test_{}_{:08x}", std::process::id(), rand::random::<u32>());
        pg_connect(&admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let client = pg_connect(&Self::url_of(&admin_url, &name)).await;
        // connect-pg-simple 10's table.sql.
        client
            .batch_execute(
                r#"CREATE TABLE "session" ("sid" varchar NOT NULL COLLATE "default", "sess" json NOT NULL, "expire" timestamp(6) NOT NULL);
                   ALTER TABLE "session" ADD CONSTRAINT "session_pkey" PRIMARY KEY ("sid") NOT DEFERRABLE INITIALLY IMMEDIATE;
                   CREATE INDEX "IDX_session_expire" ON "session" ("expire");"#,
            )
            .await
            .unwrap();
        Postgres {
            admin_url,
            name,
            client,
        }
    }

    fn url_of(admin_url: &str, database: &str) -> String {
        let (base, _) = admin_url.rsplit_once('/').expect("URL with a database");
        format!("{base}/{database}")
    }

    fn url(&self) -> String {
        Self::url_of(&self.admin_url, &self.name)
    }

    /// What connect-pg-simple's `set` writes: the session and its expiry (seconds from now).
    async fn put(&self, sid: &str, json: &str, expires_in_secs: f64) {
        self.client
            .execute(
                r#"INSERT INTO "session" (sess, expire, sid) SELECT $1::text::json, now() + make_interval(secs => $2), $3
                   ON CONFLICT (sid) DO UPDATE SET sess = $1::text::json, expire = now() + make_interval(secs => $2)"#,
                &[&json, &expires_in_secs, &sid],
            )
            .await
            .unwrap();
    }

    async fn execute(&self, sql: &str) {
        self.client.batch_execute(sql).await.unwrap();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // The test's runtime may be shutting down: drop the database from a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

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

    let (_alice, answer) = connect_answer(&server, ALICE).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    assert_eq!(server.gateway().namespace("/").unwrap().members("user:42").len(), 1);
    let (_bob, answer) = connect_answer(&server, BOB).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    for anonymous in [ANON, NOBODY, GARBLED] {
        assert_eq!(connect_answer(&server, anonymous).await.1, REFUSED, "{anonymous}");
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(connect_answer(&server, BOB).await.1, REFUSED, "expired");
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
    assert!(connect_answer(&server, ALICE).await.1.starts_with("40{"));
    // The default table holds no such session.
    let default = postgres_gateway(&redis, &postgres, &[]).await;
    assert_eq!(connect_answer(&default, ALICE).await.1, REFUSED);
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
    let (mut alice, _) = connect_answer(&server, ALICE).await;
    let (mut bob, _) = connect_answer(&server, BOB).await;
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
    assert_eq!(connect_answer(&server, ALICE).await.1, UNAVAILABLE);
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
    assert_eq!(connect_answer(&down, ALICE).await.1, UNAVAILABLE);
}

#[tokio::test]
async fn postgres_notify_closes_logged_out_sockets_within_a_second() {
    let (redis, postgres) = (Redis::start().await, Postgres::start().await);
    postgres
        .execute(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/postgres/session-notify.sql"
            ))
            .unwrap(),
        )
        .await;
    for sid in [ALICE, BOB, ANON] {
        postgres.put(sid, &record(Some("42")), 3600.0).await;
    }
    // No periodic revalidation: only the notifications can close sockets here.
    let server = postgres_gateway(&redis, &postgres, &["--pg-notify", "--revalidate-interval", "0"]).await;
    let (mut alice, _) = connect_answer(&server, ALICE).await;
    let (mut bob, _) = connect_answer(&server, BOB).await;
    let (mut other, _) = connect_answer(&server, ANON).await;
    // The LISTEN connection is up once a change is seen: give it a moment on a busy machine.
    tokio::time::sleep(Duration::from_millis(300)).await;

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
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'wsgate-session-notify'",
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
