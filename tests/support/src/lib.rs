//! What the integration tests share: real servers (redis-server, Redis Cluster, memcached,
//! PostgreSQL), the gateway under test (in-process from CLI flags, or the real binary), a minimal
//! Socket.IO client over a real WebSocket, plain HTTP, and waits with deadlines. A crate of its
//! own, so it is built once for every test binary and its helpers are shared, not copied.

pub mod client;
pub mod node;
pub mod redis_cluster;
pub mod redis_server;
pub mod stores;
pub mod wait;

pub use client::{http, http_request, http_request_from, tcp_from, Client, HttpResponse, Received};
pub use node::{
    connect_user, cookie_for, gateway, gateway_with_user, healthz, wsgate_bin, wsgate_cli, GatewayProcess, OLD_SECRET,
    SECRET,
};
pub use redis_cluster::RedisCluster;
pub use redis_server::{free_port, shard_subscribers, wait_for_redis, wait_for_shard_subscribers, Redis, RedisData};
pub use stores::{Memcached, Postgres};
pub use wait::{closed_within, eventually, eventually_within, tcp_closed_within};

/// Sockets in any of `rooms` (none excepted), as the emitter and adapter select them.
pub fn selector(rooms: &[&str]) -> wsgate::protocol::adapter::Selector {
    wsgate::protocol::adapter::Selector {
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        except: vec![],
    }
}
