//! Command-line flags (each also read from `WSGATE_<FLAG>`), their defaults and validation.

use crate::auth::{OriginPolicy, SessionAuth, SessionSecrets, SessionStore};
use crate::gateway::{GatewayConfig, NoHooks, RoomTemplates};
use crate::http::HttpOptions;
use crate::protocol::engineio::TransportKind;
use crate::transport::TransportConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "wsgate",
    version,
    about = "Socket.IO gateway for Express apps: authenticates WebSockets from the express-session cookie and the connect-redis session record",
    long_about = None
)]
pub struct Cli {
    /// Without a subcommand, wsgate serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// One-shot publishing into the cluster, as `@socket.io/redis-emitter` does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Emit an event to sockets, on every node of the cluster.
    ///
    /// wsgate emit --room user:42 --event notice --data '{"text":"hi"}'
    Emit(EmitArgs),
    /// Disconnect sockets, on every node of the cluster (e.g. on logout: --room session:SID).
    Disconnect(DisconnectArgs),
    /// See wsgate work in five minutes: a login page, a live page and an embedded redis-server
    /// (needs redis-server on PATH). `--join` starts a second node of the same demo.
    Demo(crate::demo::DemoArgs),
}

impl Command {
    /// Where a publishing command publishes (`None` for the demo).
    pub fn target(&self) -> Option<&PublishArgs> {
        match self {
            Command::Emit(a) => Some(&a.target),
            Command::Disconnect(a) => Some(&a.target),
            Command::Demo(_) => None,
        }
    }
}

/// The Redis shared by the sessions and the cluster, for serving and publishing alike.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis holding the Express sessions (connect-redis) and carrying the cluster adapter's
    /// channels, e.g. redis://:password@host:6379/0; with --redis-cluster, seed nodes of the
    /// Redis Cluster (repeatable or comma-separated).
    #[arg(
        long,
        env = "WSGATE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub redis_url: Vec<String>,
    /// --redis-url names nodes of a Redis Cluster: sessions, the adapter and the emitter go
    /// through the cluster (redirects, topology changes, failovers).
    #[arg(long, env = "WSGATE_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Key prefix of the cluster adapter's Redis channels (the Node adapter's and emitter's `key`,
    /// the sharded adapter's `channelPrefix`).
    #[arg(long, env = "WSGATE_ADAPTER_KEY", default_value = "socket.io")]
    pub adapter_key: String,
    /// The Node adapter the cluster speaks: classic (`createAdapter`, PUBLISH) or sharded
    /// (`createShardedAdapter`, SPUBLISH, Redis 7+). Every node must use the same.
    #[arg(long, env = "WSGATE_ADAPTER", value_enum, default_value = "classic")]
    pub adapter: AdapterKind,
    /// Sharded adapter only: which rooms get channels of their own (`subscriptionMode`):
    /// dynamic (rooms other than socket ids), dynamic-private (every room) or static (none).
    /// Every node must use the same.
    #[arg(long, env = "WSGATE_SUBSCRIPTION_MODE", value_enum, default_value = "dynamic")]
    pub subscription_mode: SubscriptionModeArg,
}

/// A value of `--adapter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AdapterKind {
    Classic,
    Sharded,
}

/// A value of `--subscription-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubscriptionModeArg {
    Dynamic,
    DynamicPrivate,
    Static,
}

impl RedisArgs {
    /// Where Redis is, checked.
    pub fn target(&self) -> Result<crate::redis_connection::RedisTarget, String> {
        crate::redis_connection::RedisTarget::parse(&self.redis_url.join(","), self.redis_cluster)
    }

    /// The adapter protocol the flags name.
    pub fn adapter_protocol(&self) -> crate::cluster::AdapterProtocol {
        use crate::protocol::sharded::SubscriptionMode;
        match self.adapter {
            AdapterKind::Classic => crate::cluster::AdapterProtocol::Classic,
            AdapterKind::Sharded => crate::cluster::AdapterProtocol::Sharded(match self.subscription_mode {
                SubscriptionModeArg::Dynamic => SubscriptionMode::Dynamic,
                SubscriptionModeArg::DynamicPrivate => SubscriptionMode::DynamicPrivate,
                SubscriptionModeArg::Static => SubscriptionMode::Static,
            }),
        }
    }
}

/// Where to publish.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Namespace to publish into.
    #[arg(long, default_value = "/")]
    pub namespace: String,
    /// Only sockets in this room (repeatable: any of them). Default: every socket.
    #[arg(long = "room")]
    pub rooms: Vec<String>,
    /// Not sockets in this room (repeatable).
    #[arg(long = "except")]
    pub except: Vec<String>,
}

#[derive(Debug, Args)]
pub struct EmitArgs {
    #[command(flatten)]
    pub target: PublishArgs,
    /// Event name.
    #[arg(long)]
    pub event: String,
    /// One JSON argument of the event (repeatable, in order).
    #[arg(long = "data")]
    pub data: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    #[command(flatten)]
    pub target: PublishArgs,
    /// Only leave the namespace; keep the underlying connection open.
    #[arg(long)]
    pub keep_connection: bool,
}

/// A transport of `--transports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Polling,
    Websocket,
}

impl Transport {
    fn kind(self) -> TransportKind {
        match self {
            Transport::Polling => TransportKind::Polling,
            Transport::Websocket => TransportKind::WebSocket,
        }
    }
}

/// A session store of `--session-store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionStoreKind {
    Redis,
    Memcached,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of the serving mode.
#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WSGATE_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// HTTP path of the Socket.IO endpoint (the client's `path` option).
    #[arg(long, env = "WSGATE_PATH", default_value = "/socket.io/")]
    pub path: String,

    #[command(flatten)]
    pub redis: RedisArgs,

    /// express-session secret; repeat for rotation (every one verifies, in order). The env
    /// variable holds one secret; use --session-secret-file for several.
    #[arg(long = "session-secret", env = "WSGATE_SESSION_SECRET", hide_env_values = true)]
    pub session_secrets: Vec<String>,

    /// File with one express-session secret per line (tried after --session-secret).
    #[arg(long, env = "WSGATE_SESSION_SECRET_FILE")]
    pub session_secret_file: Option<PathBuf>,

    /// Name of the session cookie (express-session's `name`).
    #[arg(long, env = "WSGATE_COOKIE_NAME", default_value = "connect.sid")]
    pub cookie_name: String,

    /// Where the Express app's session store keeps sessions: redis (connect-redis),
    /// memcached (connect-memcached) or postgres (connect-pg-simple). The cluster adapter uses
    /// --redis-url whatever the store.
    #[arg(long, env = "WSGATE_SESSION_STORE", value_enum, default_value = "redis")]
    pub session_store: SessionStoreKind,

    /// The session store's address when it is not --redis-url: memcache://host:port (one
    /// server) or postgres://user@host:port/database (put a password in the env variable, not
    /// on the command line).
    #[arg(long, env = "WSGATE_SESSION_STORE_URL", hide_env_values = true)]
    pub session_store_url: Option<String>,

    /// Key prefix of session records: connect-redis `prefix` (plus any client keyPrefix;
    /// default sess:) or connect-memcached `prefix` (connect-memcached has none by default, so
    /// neither do we with --session-store memcached). Not used by postgres.
    #[arg(long, env = "WSGATE_SESSION_PREFIX")]
    pub session_prefix: Option<String>,

    /// connect-pg-simple's table (`tableName`).
    #[arg(long, env = "WSGATE_SESSION_TABLE", default_value = "session")]
    pub session_table: String,

    /// connect-pg-simple's schema (`schemaName`); none: Postgres's search path decides.
    #[arg(long, env = "WSGATE_SESSION_SCHEMA")]
    pub session_schema: Option<String>,

    /// Connections to memcached or Postgres for session lookups, at most.
    #[arg(long, env = "WSGATE_SESSION_STORE_POOL", default_value_t = 16)]
    pub session_store_pool: usize,

    /// Postgres: LISTEN for the notifications of the trigger in
    /// deploy/postgres/session-notify.sql, so a logout or session change closes sockets within
    /// a second (without it: at the next --revalidate-interval).
    #[arg(long, env = "WSGATE_PG_NOTIFY")]
    pub pg_notify: bool,

    /// JSON pointer to the user inside the session record; a session without a user there
    /// (or with null, false or "") is anonymous.
    #[arg(long, env = "WSGATE_USER_PATH", default_value = "/passport/user")]
    pub user_path: String,

    /// Origin allowed to open sockets, exact (scheme://host[:port]); repeatable. Without any,
    /// only same-origin requests and requests without Origin are allowed.
    #[arg(long = "allowed-origin", env = "WSGATE_ALLOWED_ORIGIN", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Namespace to serve besides `/`; repeatable.
    #[arg(long = "namespace", env = "WSGATE_NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Room every socket of a user joins; {user} is the session's user. Empty: none.
    #[arg(long, env = "WSGATE_USER_ROOM", default_value = "user:{user}")]
    pub user_room: String,

    /// Room every socket of a session joins; {sid} is the express-session id. Empty: none.
    #[arg(long, env = "WSGATE_SESSION_ROOM", default_value = "session:{sid}")]
    pub session_room: String,

    /// Milliseconds between server pings.
    #[arg(long, env = "WSGATE_PING_INTERVAL", default_value_t = 25_000)]
    pub ping_interval: u64,

    /// Milliseconds a client has to answer a ping before it is disconnected.
    #[arg(long, env = "WSGATE_PING_TIMEOUT", default_value_t = 20_000)]
    pub ping_timeout: u64,

    /// Largest message accepted from a client, in bytes; a larger one closes the connection.
    #[arg(long, env = "WSGATE_MAX_PAYLOAD", default_value_t = 1_000_000)]
    pub max_payload: usize,

    /// Milliseconds a polling client has to complete its upgrade to WebSocket once the WebSocket
    /// is open (engine.io's upgradeTimeout).
    #[arg(long, env = "WSGATE_UPGRADE_TIMEOUT", default_value_t = 10_000)]
    pub upgrade_timeout: u64,

    /// Milliseconds a connection may stay open without connecting a namespace.
    #[arg(long, env = "WSGATE_CONNECT_TIMEOUT", default_value_t = 45_000)]
    pub connect_timeout: u64,

    /// Milliseconds a session lookup may take before the store counts as unavailable.
    #[arg(long, env = "WSGATE_SESSION_LOOKUP_TIMEOUT", default_value_t = 2_000)]
    pub session_lookup_timeout: u64,

    /// Redis Stream every client event is appended to (XADD), for backends to read with
    /// consumer groups; empty: events are not forwarded (acks say "unhandled").
    #[arg(long, env = "WSGATE_INBOUND_STREAM", default_value = "wsgate:inbound")]
    pub inbound_stream: String,

    /// Approximate length the inbound stream is trimmed to (XADD MAXLEN ~).
    #[arg(long, env = "WSGATE_INBOUND_MAXLEN", default_value_t = 100_000)]
    pub inbound_maxlen: u64,

    /// Only these client events are forwarded (comma-separated); empty: all.
    #[arg(long, env = "WSGATE_INBOUND_EVENTS", value_delimiter = ',')]
    pub inbound_events: Vec<String>,

    /// This node's name in forwarded events (default: the --listen address).
    #[arg(long, env = "WSGATE_NODE_ID")]
    pub node_id: Option<String>,

    /// The event a client joins a room with: ["join", "<room>"].
    #[arg(long, env = "WSGATE_JOIN_EVENT", default_value = "join")]
    pub join_event: String,

    /// The event a client leaves a room with.
    #[arg(long, env = "WSGATE_LEAVE_EVENT", default_value = "leave")]
    pub leave_event: String,

    /// Room a client may join, as a pattern: * is any text, {user} the session's user (e.g.
    /// public:*, inbox:{user}); repeatable. None: clients may join no room.
    #[arg(long = "allow-join", env = "WSGATE_ALLOW_JOIN", value_delimiter = ',')]
    pub allow_join: Vec<String>,

    /// Rooms a client may join on its own, at most (server- and backend-made joins are not
    /// counted).
    #[arg(long, env = "WSGATE_MAX_ROOMS_PER_SOCKET", default_value_t = 100)]
    pub max_rooms_per_socket: usize,

    /// Sustained client events per second per connection; more are refused (ack
    /// "rate_limited"), and a whole burst refused in a row disconnects the client.
    #[arg(long, env = "WSGATE_MAX_EVENTS_PER_SECOND", default_value_t = 50.0)]
    pub max_events_per_second: f64,

    /// Client events a connection may send at once.
    #[arg(long, env = "WSGATE_EVENTS_BURST", default_value_t = 100.0)]
    pub events_burst: f64,

    /// Merge the flags session revocation needs (Kgxe$) into Redis's notify-keyspace-events at
    /// start (and after Redis restarts), so a logout or expiry closes sockets within a second.
    /// Without it a missing setting is reported, and the periodic revalidation still applies.
    #[arg(long, env = "WSGATE_CONFIGURE_KEYSPACE_EVENTS")]
    pub configure_keyspace_events: bool,

    /// Milliseconds within which a session this node verified may connect again while Redis
    /// is unreachable (let in from memory, at most 100,000 sessions, checked again as soon as
    /// Redis is back). 0: off, everyone gets "Session store unavailable" during an outage.
    #[arg(long, env = "WSGATE_STORE_OUTAGE_GRACE", default_value_t = 0)]
    pub store_outage_grace: u64,

    /// Milliseconds: socket activity extends the session's TTL at most this often per session,
    /// as express-session's rolling touch would (EXPIRE to the cookie's maxAge; the record is
    /// never rewritten, a deleted session never comes back). 0: off (TTLs belong to Express).
    #[arg(long, env = "WSGATE_TOUCH_SESSIONS", default_value_t = 0)]
    pub touch_sessions: u64,

    /// Milliseconds between checks of every socket's session in Redis: sockets whose session
    /// was logged out, expired or destroyed in the web app are disconnected. 0 disables.
    #[arg(long, env = "WSGATE_REVALIDATE_INTERVAL", default_value_t = 30_000)]
    pub revalidate_interval: u64,

    /// Open connections allowed at once (WebSockets and HTTP connections alike): more are
    /// refused at accept, and handshakes beyond it in sessions get HTTP 503. 0: the open-file
    /// limit (raised to its hard limit at start) minus 128 descriptors kept for Redis, the admin
    /// listener and logs.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// New sessions per second this node opens at most; more get HTTP 503 with engine.io's
    /// body, and clients back off. 0: no limit.
    #[arg(long, env = "WSGATE_MAX_HANDSHAKES_PER_SECOND", default_value_t = 5000.0)]
    pub max_handshakes_per_second: f64,

    /// Session lookups (Redis GETs of handshakes) under way at most; past it new sessions get
    /// HTTP 503, so a reconnect storm cannot pile onto Redis. 0: no limit.
    #[arg(long, env = "WSGATE_MAX_PENDING_LOOKUPS", default_value_t = 2000)]
    pub max_pending_lookups: usize,

    /// Connections from one address that have not yet sent a complete request (slowloris
    /// guard). Behind a proxy every connection comes from the proxy's address: proxies send
    /// complete requests at once, so the default still fits; 0 disables it.
    #[arg(long, env = "WSGATE_MAX_PENDING_PER_IP", default_value_t = 64)]
    pub max_pending_per_ip: usize,

    /// Milliseconds a client has to send a request's headers (each request of a keep-alive
    /// connection, the WebSocket handshake included), and a polling POST its body.
    #[arg(long, env = "WSGATE_HANDSHAKE_TIMEOUT", default_value_t = 10_000)]
    pub handshake_timeout: u64,

    /// Serve /healthz and /metrics on this second address as well, outside --max-connections,
    /// so they answer when the public port is saturated; /metrics is then served there only.
    #[arg(long, env = "WSGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Hard cap on the bytes queued for one client: a queue past it is disconnected, a single
    /// larger message is dropped for that client (counted). Far above one message: slow clients
    /// are caught by --slow-consumer-timeout first.
    #[arg(long, env = "WSGATE_MAX_QUEUE_BYTES", default_value_t = 16 << 20)]
    pub max_queue_bytes: usize,

    /// Milliseconds a client's writes may stay blocked (it does not read) before it is
    /// disconnected as a slow consumer.
    #[arg(long, env = "WSGATE_SLOW_CONSUMER_TIMEOUT", default_value_t = 10_000)]
    pub slow_consumer_timeout: u64,

    /// Transports served, comma-separated. The official client starts with polling and upgrades
    /// to WebSocket; polling needs a sticky load balancer (nginx ip_hash, or --sticky-cookie).
    /// `websocket` alone needs no stickiness, but then clients must use transports:["websocket"].
    #[arg(
        long,
        env = "WSGATE_TRANSPORTS",
        value_enum,
        value_delimiter = ',',
        default_value = "polling,websocket"
    )]
    pub transports: Vec<Transport>,

    /// Believe the X-Forwarded-Proto header of a proxy in front (TLS terminated there) for the
    /// scheme of the same-origin check. Only with a proxy that sets it on every request.
    #[arg(long, env = "WSGATE_TRUST_PROXY")]
    pub trust_proxy: bool,

    /// Set a cookie of this name to the Engine.IO session id on every handshake (engine.io's
    /// `cookie` option, e.g. `io`), for load balancers that pin a session to a node by cookie.
    #[arg(long, env = "WSGATE_STICKY_COOKIE")]
    pub sticky_cookie: Option<String>,

    /// Milliseconds a broadcast-with-ack from a peer may wait for client acks at most, whatever
    /// timeout it asks for (each client owes at most 256 acks at once).
    #[arg(long, env = "WSGATE_MAX_ACK_TIMEOUT", default_value_t = 60_000)]
    pub max_ack_timeout: u64,

    /// Serve client-js, wsgate's tiny Socket.IO client, at {path}socket.io.js (and .min.js,
    /// .esm.min.js), as Node socket.io serves its client.
    #[arg(long, env = "WSGATE_SERVE_CLIENT", default_value_t = true, action = clap::ArgAction::Set)]
    pub serve_client: bool,

    /// Refuse anonymous handshakes with HTTP 401 before upgrading (cheaper under attack; but
    /// browsers then retry forever and cannot tell why).
    #[arg(long, env = "WSGATE_REJECT_AT_UPGRADE")]
    pub reject_at_upgrade: bool,

    /// Milliseconds over which a node stopping (SIGTERM) closes its connections, in batches,
    /// so clients reconnect to the other nodes without a thundering herd. /readyz turns 503
    /// first. 0 closes them all at once.
    #[arg(long, env = "WSGATE_DRAIN_TIMEOUT", default_value_t = 10_000)]
    pub drain_timeout: u64,

    /// Refuse to start when Redis does not answer (exit 2). Without it the node starts, reports
    /// not ready on /readyz, and logs what to check until Redis answers.
    #[arg(long, env = "WSGATE_REQUIRE_REDIS")]
    pub require_redis: bool,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "WSGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl std::fmt::Debug for ServeArgs {
    // Secrets and the Redis URL (it may hold a password) stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("path", &self.path)
            .field(
                "session_secrets",
                &format_args!("{} redacted", self.session_secrets.len()),
            )
            .field("namespaces", &self.namespaces)
            .field("allowed_origins", &self.allowed_origins)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no session secret: pass --session-secret (or WSGATE_SESSION_SECRET) or --session-secret-file with the secret(s) of the Express app's express-session")]
    NoSecret,
    #[error("cannot read --session-secret-file {path}: {source}")]
    SecretFile { path: PathBuf, source: std::io::Error },
    #[error("namespace {0:?} must start with '/'")]
    BadNamespace(String),
    #[error("--path {0:?} must start with '/'")]
    BadPath(String),
    #[error("--user-path {0:?} must be a JSON pointer starting with '/' (e.g. /passport/user)")]
    BadUserPath(String),
    #[error("--ping-interval, --ping-timeout, --connect-timeout, --handshake-timeout, --slow-consumer-timeout and --max-payload must be positive")]
    ZeroLimit,
    #[error("--transports must name at least one of polling, websocket")]
    NoTransport,
    #[error("--sticky-cookie {0:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only)")]
    BadCookieName(String),
    #[error("--redis-url is not a valid Redis URL: {0}")]
    BadRedisUrl(String),
    #[error("--session-store {0} needs --session-store-url (e.g. {1})")]
    NoStoreUrl(&'static str, &'static str),
    #[error("session store: {0}")]
    BadStore(String),
    #[error("--pg-notify needs --session-store postgres")]
    NotifyWithoutPostgres,
}

impl ServeArgs {
    /// All secrets, flags first, then the file.
    pub fn secrets(&self) -> Result<SessionSecrets, ConfigError> {
        let mut secrets: Vec<Vec<u8>> = self.session_secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        if let Some(path) = &self.session_secret_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                path: path.clone(),
                source,
            })?;
            secrets.extend(
                text.lines()
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| !l.is_empty())
                    .map(|l| l.as_bytes().to_vec()),
            );
        }
        SessionSecrets::new(secrets).ok_or(ConfigError::NoSecret)
    }

    pub fn transport(&self) -> TransportConfig {
        TransportConfig {
            ping_interval: Duration::from_millis(self.ping_interval),
            ping_timeout: Duration::from_millis(self.ping_timeout),
            max_payload: self.max_payload,
            max_queue_bytes: self.max_queue_bytes,
            connect_timeout: Duration::from_millis(self.connect_timeout),
            upgrade_timeout: Duration::from_millis(self.upgrade_timeout),
            slow_consumer_timeout: Duration::from_millis(self.slow_consumer_timeout),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self.namespaces.iter().find(|n| !n.starts_with('/')) {
            return Err(ConfigError::BadNamespace(bad.clone()));
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::BadPath(self.path.clone()));
        }
        if !self.user_path.starts_with('/') {
            return Err(ConfigError::BadUserPath(self.user_path.clone()));
        }
        if [
            self.ping_interval,
            self.ping_timeout,
            self.connect_timeout,
            self.handshake_timeout,
            self.slow_consumer_timeout,
            self.max_payload as u64,
        ]
        .contains(&0)
        {
            return Err(ConfigError::ZeroLimit);
        }
        if self.transports.is_empty() {
            return Err(ConfigError::NoTransport);
        }
        if let Some(name) = self.sticky_cookie.as_ref().filter(|n| !is_cookie_name(n)) {
            return Err(ConfigError::BadCookieName(name.clone()));
        }
        Ok(())
    }

    fn redis_target(&self) -> Result<crate::redis_connection::RedisTarget, ConfigError> {
        self.redis.target().map_err(ConfigError::BadRedisUrl)
    }

    /// A Redis (or Redis Cluster) connection that connects on first use and reconnects by
    /// itself.
    pub fn redis(&self) -> Result<crate::redis_connection::RedisConnection, ConfigError> {
        self.redis_target()?
            .connect(Duration::from_millis(self.session_lookup_timeout))
            .map_err(|e| ConfigError::BadRedisUrl(e.to_string()))
    }

    /// The key prefix of session records: the flag, else the store's own default.
    fn session_prefix(&self) -> String {
        self.session_prefix.clone().unwrap_or_else(|| match self.session_store {
            SessionStoreKind::Redis => "sess:".into(),
            SessionStoreKind::Memcached | SessionStoreKind::Postgres => String::new(),
        })
    }

    /// The session store `--session-store` names; `redis` is the connection to --redis-url.
    pub fn session_store(&self, redis: crate::redis_connection::RedisConnection) -> Result<SessionStore, ConfigError> {
        let timeout = Duration::from_millis(self.session_lookup_timeout);
        let user = self.user_path.clone();
        if self.pg_notify && self.session_store != SessionStoreKind::Postgres {
            return Err(ConfigError::NotifyWithoutPostgres);
        }
        match self.session_store {
            // connect-redis on another Redis than the adapter's is a URL away.
            SessionStoreKind::Redis => {
                let redis = match &self.session_store_url {
                    None => redis,
                    Some(url) => crate::redis_connection::RedisTarget::parse(url, self.redis.redis_cluster)
                        .map_err(ConfigError::BadStore)?
                        .connect(timeout)
                        .map_err(|e| ConfigError::BadStore(e.to_string()))?,
                };
                Ok(SessionStore::new(redis, self.session_prefix(), user, timeout))
            }
            SessionStoreKind::Memcached => {
                let url = self
                    .session_store_url
                    .clone()
                    .ok_or(ConfigError::NoStoreUrl("memcached", "memcache://127.0.0.1:11211"))?;
                let options = crate::auth::store::MemcachedOptions {
                    url,
                    prefix: self.session_prefix(),
                    pool_size: self.session_store_pool,
                };
                SessionStore::memcached(options, user, timeout).map_err(ConfigError::BadStore)
            }
            SessionStoreKind::Postgres => {
                let url = self
                    .session_store_url
                    .clone()
                    .ok_or(ConfigError::NoStoreUrl("postgres", "postgres://app@127.0.0.1:5432/app"))?;
                let options = crate::auth::store::PostgresOptions {
                    url,
                    table: self.session_table.clone(),
                    schema: self.session_schema.clone(),
                    pool_size: self.session_store_pool,
                    notify: self.pg_notify,
                };
                SessionStore::postgres(options, user, timeout).map_err(ConfigError::BadStore)
            }
        }
    }

    /// Everything the serving mode needs, checked.
    pub fn build(&self) -> Result<(GatewayConfig, HttpOptions, crate::ClusterOptions), ConfigError> {
        self.validate()?;
        let secrets = self.secrets()?;
        let redis = self.redis()?;
        let cluster = crate::ClusterOptions {
            redis: self.redis_target()?,
            publisher: redis.clone(),
            prefix: self.redis.adapter_key.clone(),
            max_ack_timeout: Duration::from_millis(self.max_ack_timeout),
            protocol: self.redis.adapter_protocol(),
            // Keyspace events come through the adapter's Redis: only when the sessions are there.
            keyspace: (self.session_store == SessionStoreKind::Redis && self.session_store_url.is_none()).then(|| {
                crate::KeyspaceOptions {
                    session_prefix: self.session_prefix(),
                    configure: self.configure_keyspace_events,
                }
            }),
        };
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let redis_for_inbound = redis.clone();
        let store = self.session_store(redis)?;
        let gateway = GatewayConfig {
            namespaces: self.namespaces.clone(),
            auth: Some(SessionAuth {
                cookie_name: self.cookie_name.clone(),
                secrets,
                store,
                grace: (self.store_outage_grace > 0).then(|| {
                    Arc::new(crate::auth::OutageGrace::new(
                        Duration::from_millis(self.store_outage_grace),
                        crate::auth::OutageGrace::DEFAULT_MAX_ENTRIES,
                    ))
                }),
            }),
            rooms: RoomTemplates {
                user: self.user_room.clone(),
                session: self.session_room.clone(),
            },
            transport: self.transport(),
            hooks: match self.inbound_stream.as_str() {
                "" => Arc::new(NoHooks),
                stream => crate::inbound::Forwarder::start(
                    crate::inbound::InboundOptions {
                        stream: stream.into(),
                        max_len: self.inbound_maxlen,
                        events: self.inbound_events.clone(),
                        node: self.node_id.clone().unwrap_or_else(|| self.listen.to_string()),
                        queue: 10_000,
                    },
                    redis_for_inbound,
                    metrics.clone(),
                ),
            },
            revalidate_interval: (self.revalidate_interval > 0)
                .then(|| Duration::from_millis(self.revalidate_interval)),
            touch_interval: (self.touch_sessions > 0).then(|| Duration::from_millis(self.touch_sessions)),
            policy: crate::gateway::ClientPolicy {
                join_event: self.join_event.clone(),
                leave_event: self.leave_event.clone(),
                allow_join: self
                    .allow_join
                    .iter()
                    .map(|p| crate::gateway::RoomPattern::parse(p))
                    .collect(),
                max_rooms_per_socket: self.max_rooms_per_socket,
                events_per_second: self.max_events_per_second,
                event_burst: self.events_burst.max(1.0),
            },
            metrics: metrics.clone(),
        };
        let http = HttpOptions {
            path: self.path.clone(),
            origins: OriginPolicy::new(self.allowed_origins.clone()),
            reject_at_upgrade: self.reject_at_upgrade,
            max_connections: (self.max_connections > 0).then_some(self.max_connections),
            max_pending_per_ip: if self.max_pending_per_ip == 0 {
                usize::MAX
            } else {
                self.max_pending_per_ip
            },
            handshake_timeout: Duration::from_millis(self.handshake_timeout),
            max_handshakes_per_second: (self.max_handshakes_per_second > 0.0).then_some(self.max_handshakes_per_second),
            max_pending_lookups: if self.max_pending_lookups == 0 {
                usize::MAX
            } else {
                self.max_pending_lookups
            },
            admin_listen: self.admin_listen,
            serve_client: self.serve_client,
            app: None,
            transports: self.transports.iter().map(|t| t.kind()).collect(),
            sticky_cookie: self.sticky_cookie.clone(),
            trust_proxy: self.trust_proxy,
        };
        Ok((gateway, http, cluster))
    }
}

/// An RFC 6265 cookie name: a non-empty token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Sets up logging to stderr in the chosen format; the level comes from `RUST_LOG`.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
