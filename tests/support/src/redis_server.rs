//! A real redis-server per test (optionally persistent, or paused), sessions written as
//! connect-redis writes them, and what the adapter's subscribers look like from Redis.

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wsgate::cluster::driver::{PubSub, Publisher};
use wsgate::redis_connection::RedisConnection;

/// A redis-server on a free port, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
}

/// Waits (up to about 10 s, several servers may be starting) until a redis-server on `port`
/// answers PING.
pub async fn wait_for_redis(port: u16) {
    for _ in 0..500 {
        if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING").query_async::<String>(&mut c).await.is_ok() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server did not start on port {port}");
}

/// A `redis-server` on `port` of 127.0.0.1 that keeps nothing on disk (later arguments, such as
/// `--appendonly yes`, override these).
pub(crate) fn redis_server(port: u16) -> Command {
    let mut command = Command::new("redis-server");
    command.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    command
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Redis {
        Self::start_with(port, &[]).await
    }

    /// A redis-server with extra configuration (e.g. `--maxmemory`).
    pub async fn start_with(port: u16, extra: &[&str]) -> Redis {
        let child = redis_server(port)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see .ci/run)");
        let redis = Redis { port, child };
        wait_for_redis(port).await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = self.client().get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// A redis-server that keeps its data across restarts on the same `port` and `data`, as a
    /// production one does (AOF, fsync on every write).
    pub async fn start_persistent(port: u16, data: &RedisData) -> Redis {
        let dir = data.0.to_str().unwrap().to_owned();
        Self::start_with(port, &["--appendonly", "yes", "--appendfsync", "always", "--dir", &dir]).await
    }

    /// Freezes the server (SIGSTOP): it accepts nothing and answers nothing until resumed.
    pub fn pause(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGSTOP);
        }
    }

    pub fn resume(&self) {
        // SAFETY: as above.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGCONT);
        }
    }

    /// Stores a session record exactly as connect-redis does: `SET sess:<sid> <json> EX <ttl>`.
    pub async fn put_session(&self, sid: &str, json: &str) {
        let key = format!("sess:{sid}");
        let _: () = self.cmd(&["SET", &key, json, "EX", "3600"]).await;
    }

    /// A logged-in passport session for `user` (raw JSON), as express-session + passport write it.
    pub async fn login(&self, sid: &str, user: &str) {
        let json = format!(
            r#"{{"cookie":{{"originalMaxAge":3600000,"expires":"2026-11-21T13:27:23.409Z","httpOnly":true,"path":"/"}},"passport":{{"user":{user}}}}}"#
        );
        self.put_session(sid, &json).await;
    }
}

/// Where a persistent redis-server keeps its data; removed on drop.
pub struct RedisData(std::path::PathBuf);

impl RedisData {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("wsgate-redis-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        RedisData(dir)
    }
}

impl Default for RedisData {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RedisData {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    /// Appends a Redis Streams adapter entry to stream `socket.io`, as a backend or the streams
    /// emitter does (`XADD socket.io * uid … nsp … type … data …`); returns its id.
    pub async fn append_entry(&self, uid: &str, nsp: &str, kind: &str, data: &str) -> String {
        self.cmd(&[
            "XADD",
            "socket.io",
            "*",
            "uid",
            uid,
            "nsp",
            nsp,
            "type",
            kind,
            "data",
            data,
        ])
        .await
    }

    /// How many nodes subscribe to the request channel of `nsp` (Node's server count).
    pub async fn servers(&self, nsp: &str) -> i64 {
        let channel = format!("socket.io-request#{nsp}#");
        let reply: Vec<redis::Value> = self.cmd(&["PUBSUB", "NUMSUB", &channel]).await;
        match reply.get(1) {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        }
    }

    pub async fn wait_for_servers(&self, nsp: &str, count: i64) {
        for _ in 0..500 {
            if self.servers(nsp).await == count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "expected {count} subscribed nodes on {nsp}, have {}",
            self.servers(nsp).await
        );
    }
}

/// Subscribers of a shard channel (`PUBSUB SHARDNUMSUB`; summed over a cluster's nodes).
pub async fn shard_subscribers(conn: impl Into<RedisConnection>, channel: &str) -> i64 {
    Publisher::new(conn.into(), PubSub::Sharded)
        .subscribers(channel)
        .await
        .unwrap()
}

/// Waits up to 5 s until shard channel `channel` has `count` subscribers.
pub async fn wait_for_shard_subscribers(conn: impl Into<RedisConnection>, channel: &str, count: i64) {
    let conn = conn.into();
    for _ in 0..250 {
        if shard_subscribers(conn.clone(), channel).await == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "expected {count} subscribers of {channel}, have {}",
        shard_subscribers(conn, channel).await
    );
}
