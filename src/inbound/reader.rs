//! The backend side of the inbound stream, for Rust backends: read events with a consumer group,
//! acknowledge them. Any language with a Redis client does the same with `XREADGROUP` and
//! `XACK` (README, "Client events"). Used by backends and the demo, never by the gateway.

use serde_json::Value;

/// One client event as a backend reads it from the stream (the fields above, decoded).
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEvent {
    /// The stream entry id, to acknowledge with [`ack_events`].
    pub id: String,
    pub nsp: String,
    pub socket: String,
    pub user: Value,
    pub session: String,
    pub event: String,
    /// The arguments, binary ones as `{"_placeholder":true,"num":N}`.
    pub args: Vec<Value>,
    /// The bytes of `bin0`, `bin1`, … in order.
    pub attachments: Vec<Vec<u8>>,
    pub node: String,
    pub ts: u64,
}

/// Reads up to `count` new events for `consumer` of consumer group `group` (see
/// [`create_group`]), waiting up to `block_ms` for one. For Rust backends; any language
/// with a Redis client does the same with `XREADGROUP`. Give it a connection of its own: a
/// blocking read holds a multiplexed connection, and everything else on it waits.
pub async fn read_events(
    redis: &mut redis::aio::ConnectionManager,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
    block_ms: u64,
) -> redis::RedisResult<Vec<InboundEvent>> {
    // [[stream, [[id, [field, value, …]], …]]], or nil when nothing came.
    type Reply = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;
    let reply: Reply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(redis)
        .await?;
    let mut events = Vec::new();
    for (_, entries) in reply.unwrap_or_default() {
        for (id, flat) in entries {
            let mut fields: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
            for pair in flat.chunks(2) {
                if let [name, value] = pair {
                    fields.insert(String::from_utf8_lossy(name).into_owned(), value.clone());
                }
            }
            let text = |name: &str| String::from_utf8_lossy(fields.get(name).map_or(&[][..], |v| v)).into_owned();
            let json = |name: &str| serde_json::from_str::<Value>(&text(name)).unwrap_or(Value::Null);
            let attachments = (0..10).map_while(|n| fields.get(&format!("bin{n}")).cloned()).collect();
            events.push(InboundEvent {
                nsp: text("nsp"),
                socket: text("socket"),
                user: json("user"),
                session: text("session"),
                event: text("event"),
                args: match json("args") {
                    Value::Array(args) => args,
                    _ => Vec::new(),
                },
                attachments,
                node: text("node"),
                ts: text("ts").parse().unwrap_or(0),
                id,
            });
        }
    }
    Ok(events)
}

/// A connection for [`read_events`]: its own, reconnecting by itself, with a response timeout
/// longer than the blocking reads (the default one would cut every quiet read short).
pub async fn reader_connection(client: &redis::Client) -> redis::RedisResult<redis::aio::ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(30)))
        .set_connection_timeout(Some(std::time::Duration::from_secs(5)));
    client.get_connection_manager_with_config(config).await
}

/// Creates consumer group `group` at the end of `stream` (and the stream), unless it exists.
pub async fn create_group(
    redis: &mut redis::aio::ConnectionManager,
    stream: &str,
    group: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(redis)
        .await;
    match created {
        Err(err) if !err.to_string().contains("BUSYGROUP") => Err(err),
        _ => Ok(()),
    }
}

/// Acknowledges handled events (`XACK`), so the group does not hand them out again.
pub async fn ack_events(
    redis: &mut redis::aio::ConnectionManager,
    stream: &str,
    group: &str,
    events: &[InboundEvent],
) -> redis::RedisResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut cmd = redis::cmd("XACK");
    cmd.arg(stream).arg(group);
    for event in events {
        cmd.arg(&event.id);
    }
    cmd.query_async::<i64>(redis).await.map(|_| ())
}
