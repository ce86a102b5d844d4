//! The other session stores, real servers: a memcached per test, and a database of the test's
//! own on the machine's PostgreSQL.

use crate::redis_server::free_port;
use async_memcached::AsciiProtocol;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A memcached on a free port, killed on drop.
pub struct Memcached {
    port: u16,
    child: Child,
}

impl Memcached {
    pub async fn start() -> Memcached {
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

    pub fn url(&self) -> String {
        format!("memcache://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> async_memcached::Client {
        async_memcached::Client::new(format!("tcp://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }

    /// What connect-memcached writes: the JSON text with the memcached client's JSON flag (2).
    pub async fn put(&self, key: &str, json: &str, ttl_secs: i64) {
        self.client()
            .await
            .set(key, json, Some(ttl_secs), Some(2))
            .await
            .unwrap();
    }

    pub async fn delete(&self, key: &str) {
        self.client().await.delete(key).await.unwrap();
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database of this test's own on the machine's PostgreSQL (`WSGATE_TEST_PG_URL`, default the
/// local server's `postgres` database), with connect-pg-simple's table; dropped on drop.
pub struct Postgres {
    admin_url: String,
    name: String,
    client: tokio_postgres::Client,
}

pub fn admin_url() -> String {
    std::env::var("WSGATE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at WSGATE_TEST_PG_URL ({e}); .ci/run installs it"));
    tokio::spawn(connection);
    client
}

impl Postgres {
    pub async fn start() -> Postgres {
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

    pub fn url_of(admin_url: &str, database: &str) -> String {
        let (base, _) = admin_url.rsplit_once('/').expect("URL with a database");
        format!("{base}/{database}")
    }

    pub fn url(&self) -> String {
        Self::url_of(&self.admin_url, &self.name)
    }

    /// What connect-pg-simple's `set` writes: the session and its expiry (seconds from now).
    pub async fn put(&self, sid: &str, json: &str, expires_in_secs: f64) {
        self.client
            .execute(
                r#"INSERT INTO "session" (sess, expire, sid) SELECT $1::text::json, now() + make_interval(secs => $2), $3
                   ON CONFLICT (sid) DO UPDATE SET sess = $1::text::json, expire = now() + make_interval(secs => $2)"#,
                &[&json, &expires_in_secs, &sid],
            )
            .await
            .unwrap();
    }

    pub async fn execute(&self, sql: &str) {
        self.client.batch_execute(sql).await.unwrap();
    }

    /// The rows `sql` returns, in this test's database.
    pub async fn rows(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        self.client.query(sql, &[]).await.unwrap()
    }

    /// The backend pid and last state change of wsgate's LISTEN connection to this database,
    /// when it has one.
    pub async fn listener(&self) -> Option<(i32, String)> {
        self.rows(
            "SELECT pid, state_change::text FROM pg_stat_activity \
             WHERE application_name = 'wsgate-session-notify' AND datname = current_database()",
        )
        .await
        .first()
        .map(|row| (row.get(0), row.get::<_, Option<String>>(1).unwrap_or_default()))
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
