//! What a session store reports besides records: why it could not answer, and the changes it
//! reported by itself.

use std::time::Duration;

/// Why a session store could not answer, or could not be set up. Lookups report it as
/// [`LookupError::Unavailable`] with this message; configuration reports it as it is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("memcached: {0}")]
    Memcached(#[from] async_memcached::Error),
    #[error("memcached: no connection: {0}")]
    MemcachedPool(#[from] deadpool::managed::PoolError<async_memcached::Error>),
    #[error("cannot build the connection pool: {0}")]
    PoolSetup(#[from] deadpool::managed::BuildError),
    #[error("postgres: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres: no connection: {0}")]
    PostgresPool(#[from] deadpool_postgres::PoolError),
    #[error("{0}")]
    Address(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A change the store reported by itself (Postgres `LISTEN/NOTIFY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// The record of this session was rewritten or deleted: read it again.
    Changed(String),
    /// Reports may have been missed (the listening connection was lost and is back): every
    /// session should be read again.
    Resync,
}

/// A Postgres error with its server message (tokio-postgres's `Display` alone says only "db
/// error"), e.g. a missing table.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}
