//! wsgate: a Socket.IO gateway for Express apps.
//!
//! Browsers keep using the official `socket.io-client`; each handshake is authenticated from
//! the same signed `express-session` cookie and the same session record (connect-redis,
//! connect-memcached, connect-pg-simple) the Express app uses; rooms span every node through
//! Redis, wire-compatible with the Node adapters and emitters.
//!
//! The map: one line per module, from the bottom layer up. Each depends only on those above it
//! in this list (`scripts/import-graph` checks there is no circle).
//! - [`metrics`]: typed counters and gauges, the Prometheus text. Imports nothing of ours.
//! - [`tasks`]: every task a node spawns, and how they stop. Imports nothing of ours.
//! - [`redis_connection`]: one Redis or a Redis Cluster behind one connection type.
//! - [`protocol`]: pure codecs: Engine.IO, Socket.IO, the adapters' wire formats, handshakes.
//! - [`transport`]: Engine.IO sessions over WebSocket or long-polling, bounded outboxes.
//! - [`auth`]: express-session cookie, session stores (Redis, memcached, Postgres), Origin.
//! - [`gateway`]: namespaces, sockets, rooms, the connection loop, the session index, who may
//!   recover a socket.
//! - [`cluster`]: the Redis adapter (classic, sharded, streams), connection state recovery,
//!   keyspace revocation, the emitter.
//! - [`inbound`]: client events to a Redis Stream (the writer) and the backend-side reader.
//! - [`listener`]: accepting connections under the connection cap and per-address limits.
//! - [`http`]: the Socket.IO endpoint, `/healthz`, `/readyz`, `/metrics`, the served client.
//! - [`server`]: a running node: start-up and structured shutdown.
//! - [`config`]: command-line flags in groups, and their one conversion into runtime settings.
//! - [`demo`]: `wsgate demo`, a complete app on an embedded Redis.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod http;
pub mod inbound;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod redis_connection;
pub mod server;
pub mod tasks;
pub mod transport;

pub use cluster::{ClusterOptions, KeyspaceOptions};
pub use server::Server;
