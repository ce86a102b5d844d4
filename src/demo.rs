//! `wsgate demo`: the whole product in one command, on an embedded Redis.
//!
//! Owns what a newcomer needs to see wsgate work in five minutes: a `redis-server` child (no
//! persistence, stopped with wsgate), a random session secret, a login page that writes the
//! session exactly as express-session + connect-redis + passport would (any name logs in), a page
//! built on client-js, and a publisher that sends a message every two seconds through the
//! cluster emitter, so a second node started with `--join` shows messages crossing nodes.
//! Demo only: the secret is kept in that Redis so joining nodes can verify the same cookies.
//! It uses the gateway's public API and nothing inside it.

use crate::auth::SessionSecrets;
use crate::cluster::Emitter;
use crate::config::duration::OffIfZero;
use crate::config::{DemoArgs, ServeArgs};
use crate::gateway::{Socket, SocketHooks};
use crate::tasks::TaskKind;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use rand::RngCore as _;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where the demo's secret is kept, for `--join` (demo only: never do this with a real secret).
const SECRET_KEY: &str = "wsgate:demo:secret";
const COOKIE: &str = "connect.sid";
/// The demo's inbound stream: its chat messages.
const CHAT_STREAM: &str = "wsgate:demo:inbound";
const SESSION_TTL: u64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("redis-server is not installed; install it (Debian/Ubuntu: sudo apt-get install redis-server, macOS: brew install redis) or pass --redis-url")]
    NoRedisServer,
    #[error("could not start redis-server: {0}")]
    RedisStart(String),
    #[error("Redis at --redis-url does not answer: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no wsgate demo runs on that Redis (start one with `wsgate demo` first)")]
    NothingToJoin,
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

/// A `redis-server` child on a free port, stopped with this process (also when it is killed).
struct EmbeddedRedis {
    _child: tokio::process::Child,
    url: String,
}

async fn start_redis() -> Result<EmbeddedRedis, DemoError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| DemoError::RedisStart(e.to_string()))?
        .port();
    let mut command = tokio::process::Command::new("redis-server");
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // SAFETY: prctl only sets a flag of the child about to exec: it gets SIGTERM when its parent
    // dies, so a killed wsgate leaves no Redis behind.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DemoError::NoRedisServer,
        _ => DemoError::RedisStart(e.to_string()),
    })?;
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str())?;
    for _ in 0..100 {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                return Ok(EmbeddedRedis { _child: child, url });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DemoError::RedisStart("it did not answer within 5 s".into()))
}

fn random_token(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

struct Demo {
    redis: redis::aio::ConnectionManager,
    secrets: SessionSecrets,
    emitter: Emitter,
    node: String,
}

/// Tells each socket, on connect, who and where it is (the page shows it), and forwards client
/// events to the inbound stream (the chat).
struct Welcome {
    node: String,
    /// The inbound stream writer the flags set up.
    forward: Arc<dyn SocketHooks>,
}

impl SocketHooks for Welcome {
    fn on_event(&self, socket: &Arc<Socket>, packet: crate::protocol::socketio::Packet) -> bool {
        self.forward.on_event(socket, packet)
    }

    fn on_connect(&self, socket: &Arc<Socket>, _auth: &Value) {
        let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
        rooms.sort();
        let welcome = json!({ "node": self.node, "user": socket.user, "rooms": rooms });
        socket.emit("welcome", vec![welcome], Vec::new());
    }
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let embedded = match &args.redis_url {
        Some(_) => None,
        None => Some(start_redis().await?),
    };
    let url = args
        .redis_url
        .clone()
        .or_else(|| embedded.as_ref().map(|r| r.url.clone()))
        .unwrap_or_default();
    let client = redis::Client::open(url.as_str())?;
    let mut redis = tokio::time::timeout(Duration::from_secs(5), client.get_connection_manager())
        .await
        .map_err(|_| DemoError::Redis(redis::RedisError::from((redis::ErrorKind::Io, "no answer within 5 s"))))??;
    let secret: String = if args.join {
        redis::cmd("GET")
            .arg(SECRET_KEY)
            .query_async::<Option<String>>(&mut redis)
            .await?
            .ok_or(DemoError::NothingToJoin)?
    } else {
        let secret = random_token(32);
        redis::cmd("SET")
            .arg(SECRET_KEY)
            .arg(&secret)
            .query_async::<()>(&mut redis)
            .await?;
        secret
    };
    let secrets = SessionSecrets::new(vec![secret.clone().into_bytes()]).ok_or(DemoError::NothingToJoin)?;
    let node = args.listen.to_string();
    let demo = Arc::new(Demo {
        redis: redis.clone(),
        secrets,
        emitter: Emitter::new(redis.clone(), "socket.io"),
        node: node.clone(),
    });
    // The demo is `wsgate` with a few flags changed, built by the same conversion.
    let mut flags = ServeArgs::defaults();
    flags.listener.listen = args.listen;
    flags.cluster.redis.redis_url = vec![url.clone()];
    flags.cluster.configure_keyspace_events = true;
    flags.sessions.session_secrets = vec![secret];
    flags.sessions.revalidate_interval = OffIfZero(Some(Duration::from_secs(5)));
    flags.clients.allow_join = vec!["demo:*".into()];
    flags.inbound.inbound_stream = CHAT_STREAM.into();
    flags.inbound.inbound_maxlen = 10_000;
    flags.inbound.inbound_events = vec!["chat".into()];
    let mut settings = flags.build()?;
    // Every node reads the chat: the consumer group hands each message to one of them.
    // Its blocking reads get a connection of their own.
    let reader = crate::inbound::reader_connection(&client).await?;
    let tasks = settings.gateway.tasks.clone();
    let chat = tasks.spawn(TaskKind::Application, {
        let (emitter, consumer) = (Emitter::new(redis.clone(), "socket.io"), node.clone());
        async move {
            if let Err(err) = run_chat(reader, emitter, CHAT_STREAM, "demo-chat", &consumer).await {
                tracing::warn!(error = %err, "the demo's chat backend stopped");
            }
        }
    });
    settings.gateway.hooks = Arc::new(Welcome {
        node: node.clone(),
        forward: settings.gateway.hooks.clone(),
    });
    settings.http.app = Some(
        Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/me", get(me))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .with_state(demo.clone()),
    );
    let server = crate::server::Server::start(settings.listen, settings.gateway, settings.http, Some(settings.cluster))
        .await
        .map_err(|e| DemoError::Listen(args.listen, e))?;
    let publisher = (!args.join).then(|| tasks.spawn(TaskKind::Application, publish(demo.clone())));
    println!("wsgate demo: open http://{} in a browser", server.local_addr());
    if embedded.is_some() {
        println!("  Redis: {url} (embedded: no persistence, stopped with this demo)");
    }
    println!(
        "  a second node: wsgate demo --join --redis-url {url} --listen 127.0.0.1:{}",
        server.local_addr().port() + 1
    );
    println!("  stop: Ctrl-C");
    stopped().await;
    if let Some(publisher) = publisher {
        publisher.abort();
    }
    chat.abort();
    server.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stopped() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A message every two seconds to every socket of every node, through the cluster emitter.
async fn publish(demo: Arc<Demo>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    for n in 1u64.. {
        tick.tick().await;
        let text = format!("message #{n}, published by node {}", demo.node);
        let _ = demo
            .emitter
            .of("/")
            .emit("news", vec![rmpv::Value::from(text.as_str())])
            .await;
    }
}

fn session_id(demo: &Demo, headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    crate::auth::cookie::session_id(cookies, COOKIE, &demo.secrets).ok()
}

async fn me(State(demo): State<Arc<Demo>>, headers: HeaderMap) -> Json<serde_json::Value> {
    let user = match session_id(&demo, &headers) {
        Some(sid) => {
            let mut redis = demo.redis.clone();
            let record: Option<String> = redis::cmd("GET")
                .arg(format!("sess:{sid}"))
                .query_async(&mut redis)
                .await
                .unwrap_or(None);
            record
                .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
                .map(|r| r["passport"]["user"].clone())
        }
        None => None,
    };
    Json(json!({ "user": user, "node": demo.node }))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    name: String,
}

/// Logs anyone in, writing what express-session + connect-redis + passport write.
async fn login(State(demo): State<Arc<Demo>>, Form(form): Form<LoginForm>) -> Response {
    let name: String = form.name.trim().chars().take(40).collect();
    if name.is_empty() {
        return Redirect::to("/").into_response();
    }
    let sid = random_token(24);
    let expires = std::time::SystemTime::now() + Duration::from_secs(SESSION_TTL);
    let expires_ms = expires
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let record = json!({
        "cookie": {
            "originalMaxAge": SESSION_TTL * 1000,
            "expires": iso_date(expires_ms),
            "httpOnly": true,
            "path": "/"
        },
        "passport": { "user": name }
    });
    let mut redis = demo.redis.clone();
    let stored: redis::RedisResult<()> = redis::cmd("SET")
        .arg(format!("sess:{sid}"))
        .arg(record.to_string())
        .arg("EX")
        .arg(SESSION_TTL)
        .query_async(&mut redis)
        .await;
    if stored.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "Redis is unavailable").into_response();
    }
    // express-session's cookie: `s:<sid>.<signature>`, percent-encoded.
    let value = demo
        .secrets
        .sign(&sid)
        .replace(':', "%3A")
        .replace('+', "%2B")
        .replace('/', "%2F");
    let cookie = format!("{COOKIE}={value}; Path=/; Max-Age={SESSION_TTL}; HttpOnly; SameSite=Lax");
    let mut response = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Logs out as passport ≥ 0.6 does (the session is destroyed), and kicks the session's sockets
/// on every node at once, as the README tells apps to do.
async fn logout(State(demo): State<Arc<Demo>>, headers: HeaderMap) -> Response {
    if let Some(sid) = session_id(&demo, &headers) {
        let mut redis = demo.redis.clone();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(format!("sess:{sid}"))
            .query_async(&mut redis)
            .await;
        let _ = demo
            .emitter
            .of("/")
            .to(format!("session:{sid}"))
            .disconnect_sockets(true)
            .await;
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("connect.sid=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
    );
    response
}

/// `Date.prototype.toISOString()` of epoch milliseconds.
fn iso_date(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let (year, month, day) = crate::protocol::civil_from_days((secs / 86_400) as i64);
    let in_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60,
        epoch_ms % 1000
    )
}

const PAGE: &str = include_str!("demo.html");

/// The chat of the demo and of `examples/chat_backend.rs`: every `chat` event
/// `{"room": …, "text": …}` is sent to that room as `chat` `{"user", "room", "text"}`, through
/// the cluster emitter, so every member on every node gets it. Runs until the connection fails.
/// `redis` must be a connection of its own ([`crate::inbound::reader_connection`]), not the emitter's.
pub async fn run_chat(
    mut redis: redis::aio::ConnectionManager,
    emitter: crate::cluster::Emitter,
    stream: &str,
    group: &str,
    consumer: &str,
) -> redis::RedisResult<()> {
    crate::inbound::create_group(&mut redis, stream, group).await?;
    loop {
        let events = crate::inbound::read_events(&mut redis, stream, group, consumer, 100, 5000).await?;
        for event in events.iter().filter(|e| e.event == "chat") {
            let message = event.args.first().cloned().unwrap_or(Value::Null);
            let (Some(room), Some(text)) = (message["room"].as_str(), message["text"].as_str()) else {
                continue;
            };
            let reply = json!({ "user": event.user, "room": room, "text": text });
            let arg = crate::protocol::adapter::from_client_value(&reply, &[]);
            if let Err(err) = emitter.of(&event.nsp).to(room).emit("chat", vec![arg]).await {
                tracing::warn!(error = %err, "chat message not published");
            }
        }
        crate::inbound::ack_events(&mut redis, stream, group, &events).await?;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_dates_match_javascript() {
        // new Date(1795264087848).toISOString()
        assert_eq!(super::iso_date(1_795_264_087_848), "2026-11-21T12:28:07.848Z");
    }
}
