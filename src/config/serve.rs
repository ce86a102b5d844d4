//! The flags of the serving mode, in groups that mirror the runtime settings they become
//! (listener and limits, transports, sessions, rooms and clients, cluster, inbound events,
//! lifecycle, operations), each also read from `WSGATE_<FLAG>`. Their conversion into runtime
//! settings is [`super::settings`]'s.

use super::duration::{parse_duration, OffIfZero};
use super::publish::RedisArgs;
use crate::protocol::engineio::TransportKind;
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
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

    /// New sessions per second from one client address at most (bursts of twice as many);
    /// more get HTTP 503 and back off. The default lets an office of several hundred users
    /// behind one address reconnect within seconds. 0: no limit.
    #[arg(long, env = "WSGATE_MAX_HANDSHAKES_PER_SECOND_PER_IP", default_value = "100")]
    pub max_handshakes_per_second_per_ip: OffIfZero<f64>,

    /// Sessions that have not connected a namespace yet (anonymous or unproven), on this node;
    /// past it new sessions get HTTP 503. They never take the capacity of connected sockets.
    /// 0: no limit.
    #[arg(long, env = "WSGATE_MAX_PENDING_SESSIONS", default_value = "4096")]
    pub max_pending_sessions: OffIfZero<usize>,

    /// Sessions that have not connected a namespace yet, from one client address. 0: no limit.
    #[arg(long, env = "WSGATE_MAX_PENDING_SESSIONS_PER_IP", default_value = "256")]
    pub max_pending_sessions_per_ip: OffIfZero<usize>,

    /// Time a session has to connect a namespace before it is closed (or --connect-timeout, if
    /// shorter): a session that sends no CONNECT does not hold its place for long.
    #[arg(long, env = "WSGATE_PENDING_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub pending_timeout: Duration,

    /// Connected sockets of one user on this node, at most (counted in the user's room, so it
    /// needs a --user-room); the next one gets CONNECT_ERROR "Too many connections". 0: no
    /// limit.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS_PER_USER", default_value = "100")]
    pub max_connections_per_user: OffIfZero<usize>,

    /// Session lookups (reads of the session store by handshakes) under way at most; past it
    /// new sessions get HTTP 503, so a reconnect storm cannot pile onto the store. 0: no limit.
    #[arg(long, env = "WSGATE_MAX_PENDING_LOOKUPS", default_value = "2000")]
    pub max_pending_lookups: OffIfZero<usize>,

    /// Connections from one address waiting for a request: before their first, and keep-alive
    /// ones idle between two (slowloris guard). Behind a proxy every connection comes from the proxy's address: proxies send
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

/// Engine.IO heartbeats, sizes and timeouts: what becomes `TransportConfig`.
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
/// `SessionAuth` and the gateway's session upkeep.
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

    /// With --pg-notify: how often the LISTEN connection is checked with a query; one that gets
    /// no answer within the same time is replaced.
    #[arg(long, env = "WSGATE_PG_NOTIFY_KEEPALIVE", default_value = "15s", value_parser = parse_duration)]
    pub pg_notify_keepalive: Duration,

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
/// becomes `RoomTemplates` and `ClientPolicy`.
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

    /// Longest room name a client may join or leave, in bytes; longer ones are refused (ack
    /// "invalid_room").
    #[arg(long, env = "WSGATE_MAX_ROOM_NAME_BYTES", default_value_t = 256)]
    pub max_room_name_bytes: usize,

    /// Sustained client events per second per connection; more are refused (ack
    /// "rate_limited"), and a whole burst refused in a row disconnects the client.
    #[arg(long, env = "WSGATE_MAX_EVENTS_PER_SECOND", default_value_t = 50.0)]
    pub max_events_per_second: f64,

    /// Client events a connection may send at once.
    #[arg(long, env = "WSGATE_EVENTS_BURST", default_value_t = 100.0)]
    pub events_burst: f64,

    /// Largest client event, in bytes (its JSON plus binary attachments); larger ones are
    /// refused (ack "too_large") and not stored.
    #[arg(long, env = "WSGATE_MAX_EVENT_BYTES", default_value_t = 64 << 10)]
    pub max_event_bytes: usize,

    /// Sustained client events per second of one user across all its sockets on this node
    /// (bursts of twice as many); more are refused (ack "rate_limited"). 0: no limit.
    #[arg(long, env = "WSGATE_MAX_EVENTS_PER_SECOND_PER_USER", default_value = "200")]
    pub max_events_per_second_per_user: OffIfZero<f64>,

    /// Sustained client event bytes per second of one user across all its sockets on this node
    /// (bursts of twice as many); more are refused (ack "rate_limited"). 0: no limit.
    #[arg(long, env = "WSGATE_MAX_EVENT_BYTES_PER_SECOND_PER_USER", default_value = "1048576")]
    pub max_event_bytes_per_second_per_user: OffIfZero<f64>,
}

/// Redis, the adapter protocol and what rides on them: what becomes `ClusterOptions`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Longest a broadcast-with-ack from a peer may wait for client acks, whatever timeout it
    /// asks for (each client owes at most 256 acks at once).
    #[arg(long, env = "WSGATE_MAX_ACK_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub max_ack_timeout: Duration,

    /// Connection state recovery (Socket.IO's `maxDisconnectionDuration`): how long after a
    /// dropped connection a client may reconnect with its pid and offset and get its socket id,
    /// rooms and the events it missed back. Default 2m with --adapter streams; 0 turns it off;
    /// other adapters cannot recover (they keep no event log).
    #[arg(long, env = "WSGATE_RECOVERY_WINDOW", value_parser = parse_duration)]
    pub recovery_window: Option<Duration>,

    /// Most events one recovery replays; a client that missed more (or whose offset was trimmed
    /// from the stream) gets a fresh socket instead.
    #[arg(long, env = "WSGATE_RECOVERY_MAX_REPLAY", default_value_t = 10_000)]
    pub recovery_max_replay: usize,

    /// Merge the flags session revocation needs (Kgxe$) into Redis's notify-keyspace-events at
    /// start (and after Redis restarts), so a logout or expiry closes sockets within a second.
    /// Without it a missing setting is reported, and the periodic revalidation still applies.
    #[arg(long, env = "WSGATE_CONFIGURE_KEYSPACE_EVENTS")]
    pub configure_keyspace_events: bool,
}

/// Client events to backends: what becomes `InboundOptions`.
#[derive(Debug, Clone, Args)]
pub struct InboundArgs {
    /// Redis Stream every client event is appended to (XADD), for backends to read with
    /// consumer groups; empty: events are not forwarded (acks say "unhandled").
    #[arg(long, env = "WSGATE_INBOUND_STREAM", default_value = "wsgate:inbound")]
    pub inbound_stream: String,

    /// Approximate length the inbound stream is trimmed to (XADD MAXLEN ~).
    #[arg(long, env = "WSGATE_INBOUND_MAXLEN", default_value_t = 100_000)]
    pub inbound_maxlen: u64,

    /// A Redis of its own for the inbound stream (recommended: with maxmemory and the
    /// noeviction policy, so client traffic can never evict or crowd out the sessions); default:
    /// --redis-url. Put a password in the env variable, not on the command line.
    #[arg(long, env = "WSGATE_INBOUND_REDIS_URL", hide_env_values = true)]
    pub inbound_redis_url: Option<String>,

    /// Bytes of client events waiting to be written to the stream, at most; past it events are
    /// refused (ack "queue_full").
    #[arg(long, env = "WSGATE_INBOUND_QUEUE_BYTES", default_value_t = 16 << 20)]
    pub inbound_queue_bytes: usize,

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
    pub(super) fn kind(self) -> TransportKind {
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
