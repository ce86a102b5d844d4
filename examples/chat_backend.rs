//! A backend for client events, in Rust: it reads wsgate's inbound stream with a consumer group
//! and answers through the emitter. A chat: every `chat` event `{"room", "text"}` a client
//! emits reaches every member of that room, on every node, as `chat` `{"user", "room", "text"}`.
//!
//! `cargo run --example chat_backend -- --redis-url redis://127.0.0.1:6379`, beside gateways
//! started with `--allow-join 'chat:*'` (clients `emit("join", "chat:lobby")` first). Run as many
//! as you like with different `--consumer` names: the group shares the events between them.

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "wsgate:inbound")]
    stream: String,
    #[arg(long, default_value = "chat")]
    group: String,
    #[arg(long, default_value = "chat-1")]
    consumer: String,
    /// The adapter key of the gateways (`--adapter-key`).
    #[arg(long, default_value = "socket.io")]
    adapter_key: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client = redis::Client::open(args.redis_url.as_str())?;
    // Two connections: the blocking reads would hold up the emitter's publishes.
    let reader = wsgate::inbound::reader_connection(&client).await?;
    let emitter = wsgate::cluster::Emitter::new(client.get_connection_manager().await?, &args.adapter_key);
    println!(
        "chat backend: reading {} as {}/{}",
        args.stream, args.group, args.consumer
    );
    wsgate::demo::run_chat(reader, emitter, &args.stream, &args.group, &args.consumer).await?;
    Ok(())
}
