//! The gateway under test: started in-process from real CLI flags, or as the real binary, and
//! the cookies its users log in with.

use crate::client::http;
use crate::redis_server::{free_port, Redis};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsgate::auth::SessionSecrets;

pub const SECRET: &str = "new-secret";
pub const OLD_SECRET: &str = "old-secret";

/// The `wsgate` binary cargo built beside the running test (`target/<profile>/wsgate`).
pub fn wsgate_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/wsgate
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    dir.join(format!("wsgate{}", std::env::consts::EXE_SUFFIX))
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

/// Logs `user` in as session `sid` and connects a client to namespace `/` of the gateway at
/// `addr`; returns the client and its socket id.
pub async fn connect_user(redis: &Redis, addr: SocketAddr, sid: &str, user: &str) -> (crate::Client, String) {
    redis.login(sid, user).await;
    crate::Client::connect_as(addr, &cookie_for(sid, SECRET)).await
}

/// Redis with user `user` logged in as session `sid`, and a gateway started with `extra`; the
/// session's cookie.
pub async fn gateway_with_user(sid: &str, user: &str, extra: &[&str]) -> (Redis, wsgate::Server, String) {
    let redis = Redis::start().await;
    redis.login(sid, user).await;
    let server = gateway(&redis.url(), extra).await;
    (redis, server, cookie_for(sid, SECRET))
}

/// A `wsgate` process (the real binary), killed on drop (its log file removed).
pub struct GatewayProcess {
    pub addr: SocketAddr,
    child: Child,
    /// Where stderr goes, when the test reads the log.
    log: Option<std::path::PathBuf>,
}

impl GatewayProcess {
    pub async fn start(redis_url: &str, extra: &[&str]) -> GatewayProcess {
        Self::spawn(redis_url, extra, false).await
    }

    /// As [`GatewayProcess::start`], with the log kept for [`GatewayProcess::log`].
    pub async fn start_logged(redis_url: &str, extra: &[&str]) -> GatewayProcess {
        Self::spawn(redis_url, extra, true).await
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .unwrap_or_default()
    }

    async fn spawn(redis_url: &str, extra: &[&str], logged: bool) -> GatewayProcess {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = logged.then(|| std::env::temp_dir().join(format!("wsgate-test-{}-{port}.log", std::process::id())));
        let stderr = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        let child = Command::new(wsgate_bin())
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
            .stderr(stderr)
            .spawn()
            .unwrap();
        let process = GatewayProcess { addr, child, log };
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
        if let Some(path) = &self.log {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Runs `wsgate <args>` (a subcommand) to completion; returns exit code and stdout + stderr.
pub fn wsgate_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(wsgate_bin()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Whether `/healthz` at `addr` answers 200 `ok` within 3 s.
pub async fn healthz(addr: SocketAddr) -> bool {
    let probe = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        tcp.read_to_end(&mut out).await.ok()?;
        Some(out.starts_with(b"HTTP/1.1 200") && out.ends_with(b"ok"))
    };
    tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
