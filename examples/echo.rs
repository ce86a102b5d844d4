//! A Socket.IO echo server on wsgate's protocol layer, without session auth, for protocol tests.
//!
//! - on connect, emits `auth` with the CONNECT payload (`{}` when none);
//! - `message` comes back as `message-back` with the same arguments (binary included);
//! - `message-with-ack` is acknowledged with its own arguments.
//!
//! Serves `/` and `/custom`. `cargo run --example echo -- --listen 127.0.0.1:3001`

use clap::Parser;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use wsgate::gateway::{GatewayConfig, RoomTemplates, Socket, SocketHooks};
use wsgate::http::HttpOptions;
use wsgate::protocol::socketio::Packet;
use wsgate::transport::TransportConfig;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 25_000)]
    ping_interval: u64,
    #[arg(long, default_value_t = 20_000)]
    ping_timeout: u64,
    /// Milliseconds a session may stay without connecting a namespace.
    #[arg(long, default_value_t = 45_000)]
    connect_timeout: u64,
}

struct Echo;

impl SocketHooks for Echo {
    fn on_connect(&self, socket: &Arc<Socket>, auth: &Value) {
        socket.emit("auth", vec![auth.clone()], Vec::new());
    }

    fn on_event(&self, socket: &Arc<Socket>, packet: Packet) -> bool {
        let Some(Value::Array(mut data)) = packet.data else {
            return false;
        };
        let name = data.remove(0);
        match (name.as_str(), packet.id) {
            (Some("message"), _) => socket.emit("message-back", data, packet.attachments),
            (Some("message-with-ack"), Some(id)) => socket.ack(id, data, packet.attachments),
            _ => return false,
        };
        true
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let config = GatewayConfig {
        namespaces: vec!["/".into(), "/custom".into()],
        auth: None,
        rooms: RoomTemplates::default(),
        transport: TransportConfig {
            ping_interval: Duration::from_millis(args.ping_interval),
            ping_timeout: Duration::from_millis(args.ping_timeout),
            connect_timeout: Duration::from_millis(args.connect_timeout),
            ..TransportConfig::default()
        },
        hooks: Arc::new(Echo),
        revalidate_interval: None,
        touch_interval: None,
        // A protocol test server: no event limits.
        policy: wsgate::gateway::ClientPolicy {
            events_per_second: 1e9,
            event_burst: 1e9,
            ..Default::default()
        },
        metrics: Default::default(),
        tasks: Default::default(),
        admission: Default::default(),
    };
    // Both transports, as engine.io serves them by default.
    let server = wsgate::Server::start(args.listen, config, HttpOptions::default(), None).await?;
    println!("echo listening on {}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
