//! The one conversion of the serving flags into runtime settings ([`Settings`]), checked;
//! `wsgate`, `wsgate demo`, the examples and the tests all start a node through it.

use super::serve::{ServeArgs, SessionStoreKind};
use crate::auth::{OriginPolicy, OutageGrace, SessionAuth, SessionSecrets, SessionStore, StoreError};
use crate::cluster::{ClusterOptions, KeyspaceOptions};
use crate::gateway::{Admission, ClientPolicy, GatewayConfig, NoHooks, RoomPattern, RoomTemplates, SocketHooks};
use crate::http::HttpOptions;
use crate::inbound::{Forwarder, InboundOptions};
use crate::metrics::Metrics;
use crate::redis_connection::{RedisConnection, RedisTarget, TargetError};
use crate::tasks::Tasks;
use crate::transport::TransportConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    #[error("--inbound-redis-url is not a valid Redis URL: {0}")]
    BadInboundRedisUrl(#[source] TargetError),
    #[error("--session-store-url: {0}")]
    BadStoreTarget(#[source] TargetError),
    #[error("session store: {0}")]
    BadStore(#[source] StoreError),
    #[error("--pg-notify needs --session-store postgres")]
    NotifyWithoutPostgres,
    #[error("--recovery-window needs --adapter streams (connection state recovery replays from the Redis Streams adapter's stream; the classic and sharded adapters keep no event log): add --adapter streams on every node, or drop --recovery-window")]
    RecoveryNeedsStreams,
    #[error("--recovery-max-replay must be positive")]
    ZeroMaxReplay,
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
        let streams = self.cluster.redis.adapter == crate::config::publish::AdapterKind::Streams;
        if !streams && self.cluster.recovery_window.is_some_and(|w| !w.is_zero()) {
            return Err(ConfigError::RecoveryNeedsStreams);
        }
        if self.cluster.recovery_max_replay == 0 {
            return Err(ConfigError::ZeroMaxReplay);
        }
        Ok(())
    }

    /// Connection state recovery, if on: 2 minutes by default with the streams adapter.
    fn recovery(&self) -> Option<crate::cluster::RecoverySettings> {
        let c = &self.cluster;
        if c.redis.adapter != crate::config::publish::AdapterKind::Streams {
            return None;
        }
        let defaults = crate::cluster::RecoverySettings::default();
        let window = c.recovery_window.unwrap_or(defaults.window);
        (!window.is_zero()).then_some(crate::cluster::RecoverySettings {
            window,
            max_replay: c.recovery_max_replay,
            ..defaults
        })
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
                    notify_keepalive: s.pg_notify_keepalive,
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
            queue_bytes: i.inbound_queue_bytes,
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
            recovery: self.recovery(),
            // Keyspace events come through the adapter's Redis: only when the sessions are there.
            keyspace: self.sessions_in_adapter_redis().then(|| KeyspaceOptions {
                session_prefix: self.session_prefix(),
                configure: self.cluster.configure_keyspace_events,
            }),
        };
        let store = self.session_store(redis.clone())?;
        let hooks: Arc<dyn SocketHooks> = match self.inbound() {
            None => Arc::new(NoHooks),
            Some(options) => {
                // The stream on a Redis of its own, when asked: client traffic apart from sessions.
                let stream_redis = match &self.inbound.inbound_redis_url {
                    None => redis.clone(),
                    Some(url) => RedisTarget::parse(url, self.cluster.redis.redis_cluster)
                        .map_err(ConfigError::BadInboundRedisUrl)?
                        .connect(self.sessions.session_lookup_timeout)
                        .map_err(ConfigError::RedisClient)?,
                };
                Forwarder::start(options, stream_redis, metrics.clone(), &tasks)
            }
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
                max_room_name_bytes: c.max_room_name_bytes,
                events_per_second: c.max_events_per_second,
                event_burst: c.events_burst.max(1.0),
                max_event_bytes: c.max_event_bytes,
                events_per_second_per_user: c.max_events_per_second_per_user.get(),
                event_bytes_per_second_per_user: c.max_event_bytes_per_second_per_user.get(),
            },
            metrics,
            tasks,
            admission: Admission {
                max_pending_sessions: self.listener.max_pending_sessions.get().unwrap_or(usize::MAX),
                max_pending_sessions_per_ip: self.listener.max_pending_sessions_per_ip.get().unwrap_or(usize::MAX),
                pending_timeout: self.listener.pending_timeout,
                max_connections_per_user: self.listener.max_connections_per_user.get(),
            },
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
            max_handshakes_per_second_per_ip: l.max_handshakes_per_second_per_ip.get(),
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
