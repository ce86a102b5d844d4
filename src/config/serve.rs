//! The flags of the serving mode, in groups that mirror the runtime settings they become
//! (listener and limits, transports, sessions, rooms and clients, cluster, inbound events,
//! lifecycle, operations), each also read from `WSGATE_<FLAG>`; and the one conversion of the
//! flags into [`Settings`], which `wsgate`, `wsgate demo` and the examples share.

use super::duration::{parse_duration, OffIfZero};
use super::publish::RedisArgs;
use crate::auth::{OriginPolicy, OutageGrace, SessionAuth, SessionSecrets, SessionStore, StoreError};
use crate::cluster::{ClusterOptions, KeyspaceOptions};
use crate::gateway::{ClientPolicy, GatewayConfig, NoHooks, RoomPattern, RoomTemplates, SocketHooks};
use crate::http::HttpOptions;
use crate::inbound::{Forwarder, InboundOptions};
use crate::metrics::Metrics;
use crate::protocol::engineio::TransportKind;
use crate::redis_connection::{RedisConnection, RedisTarget, TargetError};
use crate::tasks::Tasks;
use crate::transport::TransportConfig;
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Flags of the serving mode.
#[derive(Clone, Args)]
pub struct ServeArgs {
    #[command(flatten, next_help_heading = "Listener and limits")]
    pub listener: ListenerArgs,
    #[command(flatten, next_help_heading = "Transports")]
    pub transport: TransportArgs,
    #[command(flatten, next_help_heading = "Sessions (the Express app's cookie and store)")]
    pub sessions: SessionArgs,
    #[command(flatten, next_help_heading = "Rooms and client policy")]
    pub clients: ClientArgs,
    #[command(flatten, next_help_heading = "Cluster (Redis)")]
    pub cluster: ClusterArgs,
    #[command(flatten, next_help_heading = "Inbound events (client events to a Redis Stream)")]
    pub inbound: InboundArgs,
    #[command(flatten, next_help_heading = "Lifecycle")]
    pub lifecycle: LifecycleArgs,
    #[command(flatten, next_help_heading = "Operations")]
    pub operations: OperationsArgs,
}

/// The listener, the endpoint and admission: what becomes [`HttpOptions`].
#[derive(Debug, Clone, Args)]
pub struct ListenerArgs {
    /// Address to listen on.
    #[arg(long, env = "WSGATE_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// HTTP path of the Socket.IO endpoint (the client's `path` option).
    #[arg(long, env = "WSGATE_PATH", default_value = "/socket.io/")]
    pub path: String,

    /// Origin allowed to open sockets, exact (scheme://host[:port]); repeatable. Without any,
    /// only same-origin requests and requests without Origin are allowed.
    #[arg(long = "allowed-origin", env = "WSGATE_ALLOWED_ORIGIN", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Open connections allowed at once (WebSockets and HTTP connections alike): more are
    /// refused at accept, and handshakes beyond it in sessions get HTTP 503. 0: the open-file
    /// limit (raised to its hard limit at start) minus 128 descriptors kept for Redis, the admin
    /// listener and logs.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS", default_value = "0")]
    pub max_connections: OffIfZero<usize>,

    /// New sessions per second this node opens at most; more get HTTP 503 with engine.io's
    /// body, and clients back off. 0: no limit.
    #[arg(long, env = "WSGATE_MAX_HANDSHAKES_PER_SECOND", default_value = "5000")]
    pub max_handshakes_per_second: OffIfZero<f64>,

    /// Session lookups (reads of the session store by handshakes) under way at most; past it
    /// new sessions get HTTP 503, so a reconnect storm cannot pile onto the store. 0: no limit.
    #[arg(long, env = "WSGATE_MAX_PENDING_LOOKUPS", default_value = "2000")]
    pub max_pending_lookups: OffIfZero<usize>,

    /// Connections from one address that have not yet sent a complete request (slowloris
    /// guard). Behind a proxy every connection comes from the proxy's address: proxies send
    /// complete requests at once, so the default still fits; 0 disables it.
    #[arg(long, env = "WSGATE_MAX_PENDING_PER_IP", default_value = "64")]
    pub max_pending_per_ip: OffIfZero<usize>,

    /// Time a client has to send a request's headers (each request of a keep-alive
    /// connection, the WebSocket handshake included), and a polling POST its body.
    #[arg(long, env = "WSGATE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Refuse anonymous handshakes with HTTP 401 before upgrading (cheaper under attack; but
    /// browsers then retry forever and cannot tell why).
    #[arg(long, env = "WSGATE_REJECT_AT_UPGRADE")]
    pub reject_at_upgrade: bool,

    /// Believe the X-Forwarded-Proto header of a proxy in front (TLS terminated there) for the
    /// scheme of the same-origin check. Only with a proxy that sets it on every request.
    #[arg(long, env = "WSGATE_TRUST_PROXY")]
    pub trust_proxy: bool,

    /// Set a cookie of this name to the Engine.IO session id on every handshake (engine.io's
    /// `cookie` option, e.g. `io`), for load balancers that pin a session to a node by cookie.
    #[arg(long, env = "WSGATE_STICKY_COOKIE")]
    pub sticky_cookie: Option<String>,

    /// Serve client-js, wsgate's tiny Socket.IO client, at {path}socket.io.js (and .min.js,
    /// .esm.min.js), as Node socket.io serves its client.
    #[arg(long, env = "WSGATE_SERVE_CLIENT", default_value_t = true, action = clap::ArgAction::Set)]
    pub serve_client: bool,
}

/// Engine.IO heartbeats, sizes and timeouts: what becomes [`TransportConfig`].
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
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

    /// Time between server pings (e.g. 25s; a plain number is milliseconds).
    #[arg(long, env = "WSGATE_PING_INTERVAL", default_value = "25s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Time a client has to answer a ping before it is disconnected.
    #[arg(long, env = "WSGATE_PING_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub ping_timeout: Duration,

    /// Largest message accepted from a client, in bytes; a larger one closes the connection.
    #[arg(long, env = "WSGATE_MAX_PAYLOAD", default_value_t = 1_000_000)]
    pub max_payload: usize,

    /// Time a polling client has to complete its upgrade to WebSocket once the WebSocket is
    /// open (engine.io's upgradeTimeout).
    #[arg(long, env = "WSGATE_UPGRADE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub upgrade_timeout: Duration,

    /// Time a connection may stay open without connecting a namespace.
    #[arg(long, env = "WSGATE_CONNECT_TIMEOUT", default_value = "45s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Hard cap on the bytes queued for one client: a queue past it is disconnected, a single
    /// larger message is dropped for that client (counted). Far above one message: slow clients
    /// are caught by --slow-consumer-timeout first.
    #[arg(long, env = "WSGATE_MAX_QUEUE_BYTES", default_value_t = 16 << 20)]
    pub max_queue_bytes: usize,

    /// Time a client's writes may stay blocked (it does not read) before it is disconnected as a
    /// slow consumer.
    #[arg(long, env = "WSGATE_SLOW_CONSUMER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub slow_consumer_timeout: Duration,
}

/// The Express app's session cookie and store, and how sessions are kept honest: what becomes
/// [`SessionAuth`] and the gateway's session upkeep.
#[derive(Clone, Args)]
pub struct SessionArgs {
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

    /// Time a session lookup may take before the store counts as unavailable.
    #[arg(long, env = "WSGATE_SESSION_LOOKUP_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub session_lookup_timeout: Duration,

    /// Window within which a session this node verified may connect again while the session
    /// store is unreachable (let in from memory, at most 100,000 sessions, checked again as
    /// soon as the store is back). 0: off, everyone gets "Session store unavailable" during an
    /// outage.
    #[arg(long, env = "WSGATE_STORE_OUTAGE_GRACE", default_value = "0")]
    pub store_outage_grace: OffIfZero<Duration>,

    /// Socket activity extends the session's TTL at most this often per session, as
    /// express-session's rolling touch would (to the cookie's maxAge; the record is never
    /// rewritten, a deleted session never comes back). 0: off (TTLs belong to Express).
    #[arg(long, env = "WSGATE_TOUCH_SESSIONS", default_value = "0")]
    pub touch_sessions: OffIfZero<Duration>,

    /// Time between checks of every socket's session in the session store: sockets whose
    /// session was logged out, expired or destroyed in the web app are disconnected. 0
    /// disables.
    #[arg(long, env = "WSGATE_REVALIDATE_INTERVAL", default_value = "30s")]
    pub revalidate_interval: OffIfZero<Duration>,
}

/// Namespaces, the rooms every socket joins, and what clients may do on their own: what
/// becomes [`RoomTemplates`] and [`ClientPolicy`].
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Namespace to serve besides `/`; repeatable.
    #[arg(long = "namespace", env = "WSGATE_NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Room every socket of a user joins; {user} is the session's user. Empty: none.
    #[arg(long, env = "WSGATE_USER_ROOM", default_value = "user:{user}")]
    pub user_room: String,

    /// Room every socket of a session joins; {sid} is the express-session id. Empty: none.
    #[arg(long, env = "WSGATE_SESSION_ROOM", default_value = "session:{sid}")]
    pub session_room: String,

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
}

/// Redis, the adapter protocol and what rides on them: what becomes [`ClusterOptions`].
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Longest a broadcast-with-ack from a peer may wait for client acks, whatever timeout it
    /// asks for (each client owes at most 256 acks at once).
    #[arg(long, env = "WSGATE_MAX_ACK_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub max_ack_timeout: Duration,

    /// Merge the flags session revocation needs (Kgxe$) into Redis's notify-keyspace-events at
    /// start (and after Redis restarts), so a logout or expiry closes sockets within a second.
    /// Without it a missing setting is reported, and the periodic revalidation still applies.
    #[arg(long, env = "WSGATE_CONFIGURE_KEYSPACE_EVENTS")]
    pub configure_keyspace_events: bool,
}

/// Client events to backends: what becomes [`InboundOptions`].
#[derive(Debug, Clone, Args)]
pub struct InboundArgs {
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
}

/// Start and stop.
#[derive(Debug, Clone, Args)]
pub struct LifecycleArgs {
    /// Time over which a node stopping (SIGTERM) closes its connections, in batches, so clients
    /// reconnect to the other nodes without a thundering herd. /readyz turns 503 first. 0 closes
    /// them all at once.
    #[arg(long, env = "WSGATE_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Refuse to start when Redis does not answer (exit 2). Without it the node starts, reports
    /// not ready on /readyz, and logs what to check until Redis answers.
    #[arg(long, env = "WSGATE_REQUIRE_REDIS")]
    pub require_redis: bool,
}

/// Health, metrics and logs.
#[derive(Debug, Clone, Args)]
pub struct OperationsArgs {
    /// Serve /healthz and /metrics on this second address as well, outside --max-connections,
    /// so they answer when the public port is saturated; /metrics is then served there only.
    #[arg(long, env = "WSGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "WSGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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

impl std::fmt::Debug for ServeArgs {
    // Secrets and the Redis URL (it may hold a password) stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listener.listen)
            .field("path", &self.listener.path)
            .field(
                "session_secrets",
                &format_args!("{} redacted", self.sessions.session_secrets.len()),
            )
            .field("namespaces", &self.clients.namespaces)
            .field("allowed_origins", &self.listener.allowed_origins)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no session secret: pass --session-secret (or WSGATE_SESSION_SECRET) or --session-secret-file with the secret(s) of the Express app's express-session")]
    NoSecret,
    #[error("cannot read --session-secret-file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    BadRedisUrl(#[source] TargetError),
    #[error("--redis-url: {0}")]
    RedisClient(#[source] redis::RedisError),
    #[error("--session-store {0} needs --session-store-url (e.g. {1})")]
    NoStoreUrl(&'static str, &'static str),
    #[error("--session-store-url: {0}")]
    BadStoreTarget(#[source] TargetError),
    #[error("session store: {0}")]
    BadStore(#[source] StoreError),
    #[error("--pg-notify needs --session-store postgres")]
    NotifyWithoutPostgres,
}

/// Everything a node needs to start, built from the flags.
pub struct Settings {
    pub listen: SocketAddr,
    pub gateway: GatewayConfig,
    pub http: HttpOptions,
    pub cluster: ClusterOptions,
}

impl ServeArgs {
    /// Every flag at its default, ignoring the environment (for the demo and tests that start
    /// from the defaults and change a few).
    pub fn defaults() -> ServeArgs {
        use clap::{Args as _, FromArgMatches as _};
        let command = ServeArgs::augment_args(clap::Command::new("wsgate")).mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["wsgate"]);
        match ServeArgs::from_arg_matches(&matches) {
            Ok(args) => args,
            Err(err) => unreachable!("the defaults parse: {err}"),
        }
    }

    /// All secrets, flags first, then the file.
    pub fn secrets(&self) -> Result<SessionSecrets, ConfigError> {
        let sessions = &self.sessions;
        let mut secrets: Vec<Vec<u8>> = sessions.session_secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        if let Some(path) = &sessions.session_secret_file {
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
        let t = &self.transport;
        TransportConfig {
            ping_interval: t.ping_interval,
            ping_timeout: t.ping_timeout,
            max_payload: t.max_payload,
            max_queue_bytes: t.max_queue_bytes,
            connect_timeout: t.connect_timeout,
            upgrade_timeout: t.upgrade_timeout,
            slow_consumer_timeout: t.slow_consumer_timeout,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self.clients.namespaces.iter().find(|n| !n.starts_with('/')) {
            return Err(ConfigError::BadNamespace(bad.clone()));
        }
        if !self.listener.path.starts_with('/') {
            return Err(ConfigError::BadPath(self.listener.path.clone()));
        }
        if !self.sessions.user_path.starts_with('/') {
            return Err(ConfigError::BadUserPath(self.sessions.user_path.clone()));
        }
        let t = &self.transport;
        let durations = [
            t.ping_interval,
            t.ping_timeout,
            t.connect_timeout,
            t.slow_consumer_timeout,
            self.listener.handshake_timeout,
        ];
        if durations.iter().any(Duration::is_zero) || t.max_payload == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        if t.transports.is_empty() {
            return Err(ConfigError::NoTransport);
        }
        if let Some(name) = self.listener.sticky_cookie.as_ref().filter(|n| !is_cookie_name(n)) {
            return Err(ConfigError::BadCookieName(name.clone()));
        }
        Ok(())
    }

    fn redis_target(&self) -> Result<RedisTarget, ConfigError> {
        self.cluster.redis.target().map_err(ConfigError::BadRedisUrl)
    }

    /// A Redis (or Redis Cluster) connection that connects on first use and reconnects by
    /// itself.
    pub fn redis(&self) -> Result<RedisConnection, ConfigError> {
        self.redis_target()?
            .connect(self.sessions.session_lookup_timeout)
            .map_err(ConfigError::RedisClient)
    }

    /// The key prefix of session records: the flag, else the store's own default.
    fn session_prefix(&self) -> String {
        self.sessions
            .session_prefix
            .clone()
            .unwrap_or_else(|| match self.sessions.session_store {
                SessionStoreKind::Redis => "sess:".into(),
                SessionStoreKind::Memcached | SessionStoreKind::Postgres => String::new(),
            })
    }

    /// Whether the sessions live in the adapter's Redis (so keyspace events reach the adapter).
    fn sessions_in_adapter_redis(&self) -> bool {
        self.sessions.session_store == SessionStoreKind::Redis && self.sessions.session_store_url.is_none()
    }

    /// The session store `--session-store` names; `redis` is the connection to --redis-url.
    pub fn session_store(&self, redis: RedisConnection) -> Result<SessionStore, ConfigError> {
        let s = &self.sessions;
        let timeout = s.session_lookup_timeout;
        let user = s.user_path.clone();
        if s.pg_notify && s.session_store != SessionStoreKind::Postgres {
            return Err(ConfigError::NotifyWithoutPostgres);
        }
        match s.session_store {
            // connect-redis on another Redis than the adapter's is a URL away.
            SessionStoreKind::Redis => {
                let redis = match &s.session_store_url {
                    None => redis,
                    Some(url) => RedisTarget::parse(url, self.cluster.redis.redis_cluster)
                        .map_err(ConfigError::BadStoreTarget)?
                        .connect(timeout)
                        .map_err(|e| ConfigError::BadStore(StoreError::Redis(e)))?,
                };
                Ok(SessionStore::new(redis, self.session_prefix(), user, timeout))
            }
            SessionStoreKind::Memcached => {
                let url = s
                    .session_store_url
                    .clone()
                    .ok_or(ConfigError::NoStoreUrl("memcached", "memcache://127.0.0.1:11211"))?;
                let options = crate::auth::store::MemcachedOptions {
                    url,
                    prefix: self.session_prefix(),
                    pool_size: s.session_store_pool,
                };
                SessionStore::memcached(options, user, timeout).map_err(ConfigError::BadStore)
            }
            SessionStoreKind::Postgres => {
                let url = s
                    .session_store_url
                    .clone()
                    .ok_or(ConfigError::NoStoreUrl("postgres", "postgres://app@127.0.0.1:5432/app"))?;
                let options = crate::auth::store::PostgresOptions {
                    url,
                    table: s.session_table.clone(),
                    schema: s.session_schema.clone(),
                    pool_size: s.session_store_pool,
                    notify: s.pg_notify,
                };
                SessionStore::postgres(options, user, timeout).map_err(ConfigError::BadStore)
            }
        }
    }

    /// The inbound writer the flags ask for (`None` with an empty `--inbound-stream`).
    fn inbound(&self) -> Option<InboundOptions> {
        let i = &self.inbound;
        (!i.inbound_stream.is_empty()).then(|| InboundOptions {
            stream: i.inbound_stream.clone(),
            max_len: i.inbound_maxlen,
            events: i.inbound_events.clone(),
            node: i.node_id.clone().unwrap_or_else(|| self.listener.listen.to_string()),
            queue: 10_000,
        })
    }

    /// Everything the serving mode needs, checked: the one conversion of flags into runtime
    /// settings.
    pub fn build(&self) -> Result<Settings, ConfigError> {
        self.validate()?;
        let secrets = self.secrets()?;
        let redis = self.redis()?;
        let metrics: Arc<Metrics> = Arc::default();
        let tasks = Tasks::new();
        let cluster = ClusterOptions {
            redis: self.redis_target()?,
            publisher: redis.clone(),
            prefix: self.cluster.redis.adapter_key.clone(),
            max_ack_timeout: self.cluster.max_ack_timeout,
            protocol: self.cluster.redis.adapter_protocol(),
            // Keyspace events come through the adapter's Redis: only when the sessions are there.
            keyspace: self.sessions_in_adapter_redis().then(|| KeyspaceOptions {
                session_prefix: self.session_prefix(),
                configure: self.cluster.configure_keyspace_events,
            }),
        };
        let store = self.session_store(redis.clone())?;
        let hooks: Arc<dyn SocketHooks> = match self.inbound() {
            None => Arc::new(NoHooks),
            Some(options) => Forwarder::start(options, redis.clone(), metrics.clone(), &tasks),
        };
        let s = &self.sessions;
        let c = &self.clients;
        let gateway = GatewayConfig {
            namespaces: c.namespaces.clone(),
            auth: Some(SessionAuth {
                cookie_name: s.cookie_name.clone(),
                secrets,
                store,
                grace: s
                    .store_outage_grace
                    .get()
                    .map(|window| Arc::new(OutageGrace::new(window, OutageGrace::DEFAULT_MAX_ENTRIES))),
            }),
            rooms: RoomTemplates {
                user: c.user_room.clone(),
                session: c.session_room.clone(),
            },
            transport: self.transport(),
            hooks,
            revalidate_interval: s.revalidate_interval.get(),
            touch_interval: s.touch_sessions.get(),
            policy: ClientPolicy {
                join_event: c.join_event.clone(),
                leave_event: c.leave_event.clone(),
                allow_join: c.allow_join.iter().map(|p| RoomPattern::parse(p)).collect(),
                max_rooms_per_socket: c.max_rooms_per_socket,
                events_per_second: c.max_events_per_second,
                event_burst: c.events_burst.max(1.0),
            },
            metrics,
            tasks,
        };
        let l = &self.listener;
        let http = HttpOptions {
            path: l.path.clone(),
            origins: OriginPolicy::new(l.allowed_origins.clone()),
            reject_at_upgrade: l.reject_at_upgrade,
            max_connections: l.max_connections.get(),
            max_pending_per_ip: l.max_pending_per_ip.get().unwrap_or(usize::MAX),
            handshake_timeout: l.handshake_timeout,
            max_handshakes_per_second: l.max_handshakes_per_second.get(),
            max_pending_lookups: l.max_pending_lookups.get().unwrap_or(usize::MAX),
            admin_listen: self.operations.admin_listen,
            serve_client: l.serve_client,
            app: None,
            transports: self.transport.transports.iter().map(|t| t.kind()).collect(),
            sticky_cookie: l.sticky_cookie.clone(),
            trust_proxy: l.trust_proxy,
        };
        Ok(Settings {
            listen: l.listen,
            gateway,
            http,
            cluster,
        })
    }
}

/// An RFC 6265 cookie name: a non-empty token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
