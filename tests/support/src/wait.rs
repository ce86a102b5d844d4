//! Waiting for conditions with deadlines, never fixed sleeps.

use crate::client::{Client, Received};
use std::time::Duration;
use tokio::io::AsyncReadExt;

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

/// Polls `check` every 20 ms for up to `within`.
pub async fn eventually_within(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + within;
    while !check() {
        assert!(tokio::time::Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to `within` for the server to close the client's connection, reading (and
/// dropping) whatever arrives before.
pub async fn closed_within(client: &mut Client, within: Duration) -> bool {
    let closing = async {
        loop {
            if let Received::Closed(_) = client.recv().await {
                return true;
            }
        }
    };
    tokio::time::timeout(within, closing).await.unwrap_or(false)
}

/// Waits up to `within` for the server to close a raw TCP connection (reading and dropping
/// whatever arrives before).
pub async fn tcp_closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}
