//! One handle for commands on a single Redis or on a Redis Cluster, so the session store, the
//! adapter's publisher, the emitter and the inbound stream are written once for both.
//!
//! Owns connecting (lazily: a node starts while Redis is away and connects when it is back) and
//! nothing else: pub/sub subscriptions live in the cluster adapter's driver.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// Why a Redis address was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no Redis URL")]
    Empty,
    #[error("several Redis URLs need --redis-cluster (they are the seed nodes of a Redis Cluster)")]
    SeveralWithoutCluster,
    #[error("{url:?}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: redis::RedisError,
    },
}

/// Where Redis is: one server, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `redis://` URLs: one server, or any nodes of the cluster (the rest is discovered).
    pub urls: Vec<String>,
    pub cluster: bool,
}

impl RedisTarget {
    /// `urls` comma-separated (several only with `cluster`).
    pub fn parse(urls: &str, cluster: bool) -> Result<RedisTarget, TargetError> {
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(TargetError::Empty);
        }
        if urls.len() > 1 && !cluster {
            return Err(TargetError::SeveralWithoutCluster);
        }
        for url in &urls {
            redis::Client::open(url.as_str()).map_err(|source| TargetError::BadUrl {
                url: url.clone(),
                source,
            })?;
        }
        Ok(RedisTarget { urls, cluster })
    }

    /// The single server's client (the first seed node's, for a cluster).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        redis::Client::open(self.urls[0].as_str())
    }

    /// A cluster client for these seeds; `push` receives RESP3 pushes (pub/sub messages).
    pub fn cluster_client(
        &self,
        timeout: Duration,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> redis::RedisResult<redis::cluster::ClusterClient> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(self.urls.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2);
        if let Some(push) = push {
            builder = builder.use_protocol(redis::ProtocolVersion::RESP3).push_sender(push);
        }
        builder.build()
    }

    /// A command connection that connects on first use and reconnects by itself.
    pub fn connect(&self, timeout: Duration) -> redis::RedisResult<RedisConnection> {
        if self.cluster {
            let client = self.cluster_client(timeout, None)?;
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            Ok(RedisConnection::Cluster(
                client.get_pending_async_connection_with_config(config),
            ))
        } else {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(2));
            Ok(RedisConnection::Single(ConnectionManager::new_lazy_with_config(
                self.client()?,
                config,
            )?))
        }
    }
}

/// Commands on one Redis (a self-reconnecting multiplexed connection) or a Redis Cluster
/// (redirects, topology changes and multi-slot `MGET` handled by the client). Cheap to clone.
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(conn: ConnectionManager) -> Self {
        RedisConnection::Single(conn)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_command(cmd),
            RedisConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(conn) => conn.get_db(),
            RedisConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let one = RedisTarget::parse("redis://127.0.0.1:6379", false).unwrap();
        assert_eq!(one.urls.len(), 1);
        let seeds = RedisTarget::parse("redis://a:7000, redis://b:7001,", true).unwrap();
        assert_eq!(seeds.urls, ["redis://a:7000", "redis://b:7001"]);
        assert!(RedisTarget::parse("redis://a:7000,redis://b:7001", false)
            .unwrap_err()
            .to_string()
            .contains("--redis-cluster"));
        assert!(RedisTarget::parse("", true).is_err());
        assert!(RedisTarget::parse("http://x", false).is_err());
    }
}
