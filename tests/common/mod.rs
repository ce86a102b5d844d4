//! Test harness: a real redis-server per test, the gateway started from real CLI flags, and a
//! minimal Engine.IO/Socket.IO client over a real WebSocket.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use wsgate::auth::SessionSecrets;

pub const SECRET: &str = "new-secret";
pub const OLD_SECRET: &str = "old-secret";

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
fn redis_server(port: u16) -> Command {
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

/// The `Cookie` header express-session would make the browser send, signed with `secret`.
pub fn cookie_for(sid: &str, secret: &str) -> String {
    let secrets = SessionSecrets::new(vec![secret.as_bytes().to_vec()]).unwrap();
    let signed = secrets.sign(sid);
    // express-session percent-encodes with encodeURIComponent.
    let encoded = signed.replace(':', "%3A").replace('+', "%2B").replace('/', "%2F");
    format!("connect.sid={encoded}")
}

/// Starts a gateway from CLI flags (on a free port) plus `extra`.
pub async fn gateway(redis_url: &str, extra: &[&str]) -> wsgate::Server {
    let mut argv = vec![
        "wsgate",
        "--redis-url",
        redis_url,
        "--session-secret",
        SECRET,
        "--session-secret",
        OLD_SECRET,
    ];
    argv.extend_from_slice(extra);
    let cli = <wsgate::config::Cli as clap::Parser>::try_parse_from(argv).expect("valid flags");
    let wsgate::config::Settings {
        gateway: config,
        http,
        cluster,
        ..
    } = cli.serve.build().expect("valid config");
    wsgate::Server::start("127.0.0.1:0".parse().unwrap(), config, http, Some(cluster))
        .await
        .unwrap()
}

/// A raw Engine.IO client over a WebSocket.
pub struct Client {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// Answer server pings automatically.
    pub auto_pong: bool,
}

pub enum Received {
    Text(String),
    Binary(Vec<u8>),
    /// The server closed the connection (close frame code, if any).
    Closed(Option<u16>),
}

impl Client {
    /// Opens `/socket.io/?EIO=4&transport=websocket` with extra headers; returns the client and
    /// the open packet, or the HTTP status and body of a refused handshake.
    pub async fn open(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<(Client, String), (u16, String)> {
        Self::open_path(addr, "/socket.io/?EIO=4&transport=websocket", headers).await
    }

    pub async fn open_path(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Client, String), (u16, String)> {
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        for (k, v) in headers {
            request.headers_mut().append(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => {
                let mut client = Client { ws, auto_pong: true };
                let open = client.text().await;
                assert!(open.starts_with("0{"), "open packet first, got {open:?}");
                Ok((client, open))
            }
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((resp.status().as_u16(), body))
            }
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// Opens a connection with a session cookie and connects namespace `/`; returns the socket id.
    pub async fn connect_as(addr: SocketAddr, cookie: &str) -> (Client, String) {
        let (mut client, _) = Client::open(addr, &[("cookie", cookie)]).await.expect("upgrade");
        client.send("40").await;
        let reply = client.text().await;
        let sid = reply
            .strip_prefix("40")
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .and_then(|v| v["sid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("expected 40{{\"sid\":…}}, got {reply:?}"));
        (client, sid)
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws.send(Message::binary(data.to_vec())).await.unwrap();
    }

    /// The next frame within 5 s, answering pings when `auto_pong`.
    pub async fn recv(&mut self) -> Received {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("no frame within 5 s");
            match next {
                None | Some(Err(_)) => return Received::Closed(None),
                Some(Ok(Message::Close(frame))) => return Received::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(Message::Text(t))) if t.as_str() == "2" && self.auto_pong => {
                    let _ = self.ws.send(Message::text("3")).await;
                }
                Some(Ok(Message::Text(t))) => return Received::Text(t.as_str().to_owned()),
                Some(Ok(Message::Binary(b))) => return Received::Binary(b.to_vec()),
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn text(&mut self) -> String {
        match self.recv().await {
            Received::Text(t) => t,
            Received::Binary(b) => panic!("expected text, got binary {b:?}"),
            Received::Closed(code) => panic!("expected text, connection closed ({code:?})"),
        }
    }

    /// Stays connected for `duration`, answering pings; fails on any other frame.
    pub async fn idle(&mut self, duration: Duration) {
        let until = tokio::time::Instant::now() + duration;
        loop {
            let next = tokio::time::timeout_at(until, self.ws.next()).await;
            match next {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                    let _ = self.ws.send(Message::text("3")).await;
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("unexpected {other:?} while idle"),
            }
        }
    }

    /// Waits for the server to close the connection, failing on any other frame but pings.
    pub async fn closed(&mut self) -> Option<u16> {
        match self.recv().await {
            Received::Closed(code) => code,
            Received::Text(t) => panic!("expected close, got {t:?}"),
            Received::Binary(b) => panic!("expected close, got binary {b:?}"),
        }
    }
}

/// A plain HTTP/1.1 request; returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let response = http_request(addr, method, path, headers, b"").await;
    (response.status, response.text())
}

/// An HTTP response as a client sees it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with a body over a fresh TCP connection.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")) {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut raw_req = req.into_bytes();
    raw_req.extend_from_slice(body);
    stream.write_all(&raw_req).await.unwrap();
    // Read the head, then exactly Content-Length bytes: the server may keep the connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
        if let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    while raw.len() < head_end + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the body");
        raw.extend_from_slice(&buf[..n]);
    }
    HttpResponse {
        status,
        headers,
        body: raw[head_end..head_end + length].to_vec(),
    }
}

/// Polls `check` for up to 3 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A `wsgate` process (the real binary), killed on drop.
pub struct GatewayProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl GatewayProcess {
    pub async fn start(redis_url: &str, extra: &[&str]) -> GatewayProcess {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args([
                "--listen",
                &addr.to_string(),
                "--redis-url",
                redis_url,
                "--session-secret",
                SECRET,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let process = GatewayProcess { addr, child };
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("wsgate did not start on {addr}");
    }

    pub async fn metrics(&self) -> String {
        http(self.addr, "GET", "/metrics", &[]).await.1
    }

    /// Sends SIGTERM, as systemd does on stop.
    pub fn signal_term(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// The exit code, if the process ends within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let until = std::time::Instant::now() + within;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `wsgate <args>` (a subcommand) to completion; returns exit code and stdout + stderr.
pub fn wsgate_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate")).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

impl Redis {
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

/// A Redis Cluster of real `redis-server` processes on free ports (`masters` masters, each with
/// `replicas` replicas), created with `redis-cli --cluster create`; killed and its directory
/// removed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: std::path::PathBuf,
}

/// A port whose cluster bus port (port + 10000) is free too. Ports come from 10000–15999 (bus
/// 20000–25999): below the kernel's ephemeral range, where the tests' other listeners and
/// clients get theirs, and never one cluster's bus port another's node port. Handed out once
/// per process, since clusters of parallel tests start at the same time.
fn free_cluster_port() -> u16 {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = 10_000 + rand::random::<u16>() % 6_000;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        let mut taken = TAKEN.lock().unwrap();
        if !taken.contains(&port) && free(port) && free(port + 10_000) {
            taken.push(port);
            return port;
        }
    }
}

impl RedisCluster {
    pub async fn start(masters: usize, replicas: usize) -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "wsgate-cluster-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let count = masters * (1 + replicas);
        let ports: Vec<u16> = (0..count).map(|_| free_cluster_port()).collect();
        let children = ports
            .iter()
            .map(|port| {
                Some(
                    redis_server(*port)
                        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                        .arg("--dir")
                        .arg(&dir)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("redis-server must be installed (see .ci/run)"),
                )
            })
            .collect();
        let cluster = RedisCluster { ports, children, dir };
        for port in &cluster.ports {
            wait_for_redis(*port).await;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (see .ci/run)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok().await;
        // A replica that never synced with its master refuses to take over from it.
        for port in &cluster.ports {
            for attempt in 0.. {
                let info: String = Self::node_command(*port, &["INFO", "replication"])
                    .await
                    .unwrap_or_default();
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(attempt < 400, "replica {port} did not sync: {info}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        cluster
    }

    /// Waits until a node other than `old` serves `key`'s slot (a replica took over).
    pub async fn wait_for_new_master(&self, key: &str, old: u16) -> u16 {
        for _ in 0..400 {
            let master = self.master_of(key).await;
            if master != old {
                return master;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no replica took over from {old}");
    }

    /// Seed URLs, comma-separated, as `--redis-url` takes them with `--redis-cluster`.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A command connection to the whole cluster.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        let seeds: Vec<String> = self.urls().split(',').map(str::to_owned).collect();
        redis::cluster::ClusterClient::new(seeds)
            .unwrap()
            .get_async_connection()
            .await
            .unwrap()
    }

    async fn node_command<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await
    }

    /// Waits until every live node reports `cluster_state:ok`.
    pub async fn wait_ok(&self) {
        for _ in 0..600 {
            let mut ok = true;
            for (port, child) in self.ports.iter().zip(&self.children) {
                if child.is_none() {
                    continue;
                }
                let info: String = Self::node_command(*port, &["CLUSTER", "INFO"])
                    .await
                    .unwrap_or_default();
                ok &= info.contains("cluster_state:ok");
            }
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Redis Cluster did not reach cluster_state:ok");
    }

    /// The port of the master serving `key`'s slot (asked of a live node).
    pub async fn master_of(&self, key: &str) -> u16 {
        let live = self
            .ports
            .iter()
            .zip(&self.children)
            .find(|(_, c)| c.is_some())
            .unwrap()
            .0;
        let slot: i64 = Self::node_command(*live, &["CLUSTER", "KEYSLOT", key]).await.unwrap();
        let slots: Vec<Vec<redis::Value>> = Self::node_command(*live, &["CLUSTER", "SLOTS"]).await.unwrap();
        for range in slots {
            let (Some(redis::Value::Int(from)), Some(redis::Value::Int(to)), Some(redis::Value::Array(master))) =
                (range.first(), range.get(1), range.get(2))
            else {
                continue;
            };
            if (*from..=*to).contains(&slot) {
                if let Some(redis::Value::Int(port)) = master.get(1) {
                    return *port as u16;
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Waits until every replica of the master on `port` has acknowledged all its writes
    /// (`slaveN:…,offset=` up to `master_repl_offset`; replicas acknowledge once a second).
    pub async fn wait_replicated(&self, port: u16) {
        for _ in 0..200 {
            let info: String = Self::node_command(port, &["INFO", "replication"])
                .await
                .unwrap_or_default();
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<i64>().ok())
            };
            let master = field("master_repl_offset:");
            let replicas: Vec<i64> = info
                .lines()
                .filter(|l| l.starts_with("slave"))
                .filter_map(|l| l.split(',').find_map(|kv| kv.strip_prefix("offset=")))
                .filter_map(|v| v.parse().ok())
                .collect();
            if master.is_some() && !replicas.is_empty() && replicas.iter().all(|r| Some(*r) >= master) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the replicas of {port} did not catch up");
    }

    /// Kills the node on `port` (SIGKILL: a crash, not a shutdown).
    pub fn kill(&mut self, port: u16) {
        let index = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
