//! Where Redis is and which adapter protocol the cluster speaks (shared by serving and
//! publishing), and the flags of `wsgate emit` / `wsgate disconnect`.

use crate::cluster::{AdapterProtocol, StreamsSettings};
use crate::protocol::sharded::SubscriptionMode;
use crate::redis_connection::{RedisTarget, TargetError};
use clap::{Args, ValueEnum};

/// The Redis shared by the sessions and the cluster, for serving and publishing alike.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis carrying the cluster adapter's channels (and, with --session-store redis, holding
    /// the Express sessions), e.g. redis://:password@host:6379/0; with --redis-cluster, seed nodes
    /// of the Redis Cluster (repeatable or comma-separated). Put a password in the env variable,
    /// not on the command line.
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
    /// The Node adapter the cluster speaks: classic (`@socket.io/redis-adapter` `createAdapter`,
    /// PUBLISH), sharded (`createShardedAdapter`, SPUBLISH, Redis 7+) or streams
    /// (`@socket.io/redis-streams-adapter`, Redis Streams; needed for connection state
    /// recovery). Every node must use the same.
    #[arg(long, env = "WSGATE_ADAPTER", value_enum, default_value = "classic")]
    pub adapter: AdapterKind,
    /// Streams adapter only: the stream key (`streamName`), or its prefix with --stream-count > 1.
    #[arg(long, env = "WSGATE_STREAM_NAME", default_value = "socket.io")]
    pub stream_name: String,
    /// Streams adapter only: how many streams namespaces are spread over (`streamCount`). Node
    /// maps some namespaces to a negative index no Node node reads (a warning names them); 1
    /// is always safe.
    #[arg(long, env = "WSGATE_STREAM_COUNT", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub stream_count: u32,
    /// Streams adapter only: entries kept per stream (`maxLen`, XADD MAXLEN ~). Recovery can only
    /// replay what is still in the stream.
    #[arg(long, env = "WSGATE_STREAM_MAXLEN", default_value_t = 10_000)]
    pub stream_maxlen: u64,
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
    Streams,
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
    pub fn target(&self) -> Result<RedisTarget, TargetError> {
        RedisTarget::parse(&self.redis_url.join(","), self.redis_cluster)
    }

    /// The adapter protocol the flags name.
    pub fn adapter_protocol(&self) -> AdapterProtocol {
        match self.adapter {
            AdapterKind::Classic => AdapterProtocol::Classic,
            AdapterKind::Sharded => AdapterProtocol::Sharded(match self.subscription_mode {
                SubscriptionModeArg::Dynamic => SubscriptionMode::Dynamic,
                SubscriptionModeArg::DynamicPrivate => SubscriptionMode::DynamicPrivate,
                SubscriptionModeArg::Static => SubscriptionMode::Static,
            }),
            AdapterKind::Streams => AdapterProtocol::Streams(StreamsSettings {
                name: self.stream_name.clone(),
                count: self.stream_count,
                max_len: self.stream_maxlen,
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
