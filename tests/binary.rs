//! The `wsgate` binary as an operator runs it: flags from the environment, JSON logs, and no
//! secret in any log line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

#[tokio::test]
async fn flags_come_from_wsgate_env_vars_and_logs_are_json_without_secrets() {
    let redis = Redis::start().await;
    let port = free_port();
    let secret = "very-secret-value-7f3a";
    // A password in the URL must not be logged either (this Redis has none, so lookups fail,
    // which also makes the gateway log a warning we can inspect).
    let redis_url = format!("redis://:hunter2-redis-pass@127.0.0.1:{}", redis.port);
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .env("WSGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("WSGATE_SESSION_SECRET", secret)
            .env("WSGATE_REDIS_URL", &redis_url)
            .env("WSGATE_PING_INTERVAL", "1234")
            .env("WSGATE_LOG_FORMAT", "json")
            .env("RUST_LOG", "wsgate=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let lines = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Flags from the environment took effect.
    let (mut client, open) = Client::open(addr, &[("cookie", &cookie_for("sid1", secret))])
        .await
        .unwrap();
    let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(open["pingInterval"], 1234);
    // The cookie verifies with the env secret; the store refuses the password: "unavailable".
    client.send("40").await;
    assert_eq!(client.text().await, r#"44{"message":"Session store unavailable"}"#);
    drop(client);

    drop(child);
    let lines = lines.join().unwrap();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(json["level"].is_string() && json["fields"].is_object(), "{line}");
        assert!(!line.contains(secret), "the session secret leaked: {line}");
        assert!(!line.contains("hunter2"), "the Redis password leaked: {line}");
    }
    assert!(lines.iter().any(|l| l.contains("wsgate listening")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("session store unavailable")),
        "{lines:?}"
    );
}

/// The gateway process, killed (and reaped) however the test ends: a failed assertion once left
/// it running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
