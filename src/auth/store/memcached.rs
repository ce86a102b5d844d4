//! connect-memcached: the record is the value at `<prefix><sid>` (connect-memcached has no
//! default prefix), the session object as JSON text (the `memcached` npm client stores it with
//! its JSON flag, 2, or as a string, 0: both read the same), its TTL enforced by memcached.
//!
//! One server: the `memcached` npm client spreads keys over several servers with its own
//! consistent hashing, which this store does not reproduce, so a list of servers is refused at
//! start rather than read from the wrong one.
//!
//! Connections come from a bounded pool; a connection whose request was cut short (a timeout)
//! is closed by the client and never handed out again, so no reply can reach the wrong request.

use super::error::StoreError;
use async_memcached::{AsciiProtocol, Client, MetaProtocol};
use std::time::Duration;

/// Where connect-memcached keeps sessions.
#[derive(Debug, Clone)]
pub struct MemcachedOptions {
    /// `memcache://host:port`, `tcp://host:port`, `host:port` or `unix:///path/to.sock`.
    pub url: String,
    /// connect-memcached's `prefix` (none by default).
    pub prefix: String,
    /// Connections open at most.
    pub pool_size: usize,
}

#[derive(Clone)]
pub(super) struct MemcachedStore {
    pool: deadpool::managed::Pool<Connector>,
    prefix: String,
}

/// Opens pooled connections and throws away broken ones.
struct Connector {
    dsn: String,
}

impl deadpool::managed::Manager for Connector {
    type Type = Client;
    type Error = async_memcached::Error;

    async fn create(&self) -> Result<Client, Self::Error> {
        Client::new(&self.dsn).await
    }

    async fn recycle(
        &self,
        client: &mut Client,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Self::Error> {
        if client.is_closed() {
            return Err(deadpool::managed::RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// Memcached's key rules: at most 250 bytes, no whitespace or control characters. No session
/// can be stored under another key, so such an id has no record.
fn valid_key(key: &str) -> bool {
    key.len() <= 250 && !key.is_empty() && key.bytes().all(|b| b > b' ' && b != 0x7f)
}

/// The DSN the client understands, from the URL forms users write.
fn dsn(url: &str) -> Result<String, StoreError> {
    if url.contains(',') {
        return Err(StoreError::Address("several memcached servers are not supported: the memcached npm client spreads keys over them with its own hashing; give the one server connect-memcached uses".into()));
    }
    let rest = url
        .strip_prefix("memcache://")
        .or_else(|| url.strip_prefix("memcached://"))
        .or_else(|| url.strip_prefix("tcp://"));
    match rest {
        Some(host) => Ok(format!("tcp://{}", host.trim_end_matches('/'))),
        None if url.starts_with("unix://") => Ok(url.into()),
        None if url.contains("://") => Err(StoreError::Address(format!(
            "unsupported memcached URL {url:?}: use memcache://host:port or unix:///path"
        ))),
        None => Ok(format!("tcp://{url}")),
    }
}

impl MemcachedStore {
    pub(super) fn new(options: MemcachedOptions, timeout: Duration) -> Result<Self, StoreError> {
        let pool = deadpool::managed::Pool::builder(Connector {
            dsn: dsn(&options.url)?,
        })
        .max_size(options.pool_size.max(1))
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()?;
        Ok(MemcachedStore {
            pool,
            prefix: options.prefix,
        })
    }

    async fn client(&self) -> Result<deadpool::managed::Object<Connector>, StoreError> {
        Ok(self.pool.get().await?)
    }

    pub(super) async fn record(&self, sid: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = format!("{}{}", self.prefix, sid);
        if !valid_key(&key) {
            return Ok(None);
        }
        let mut client = self.client().await?;
        match client.get(&key).await {
            Ok(value) => Ok(value.and_then(|v| v.data)),
            Err(e) => Err(broken(client, e)),
        }
    }

    pub(super) async fn records(&self, sids: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let keys: Vec<String> = sids.iter().map(|sid| format!("{}{}", self.prefix, sid)).collect();
        let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
        let mut client = self.client().await?;
        // Bounded batches keep each request line and reply modest.
        for batch in keys.chunks(200) {
            let valid: Vec<&[u8]> = batch.iter().filter(|k| valid_key(k)).map(|k| k.as_bytes()).collect();
            if valid.is_empty() {
                continue;
            }
            match client.get_multi(&valid).await {
                Ok(values) => found.extend(values.into_iter().filter_map(|v| Some((v.key, v.data?)))),
                // Every key missed.
                Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound)) => {}
                Err(e) => return Err(broken(client, e)),
            }
        }
        Ok(keys.iter().map(|k| found.remove(k.as_bytes())).collect())
    }

    /// `mg <key> T<ttl> t`: memcached's touch, which never creates an item.
    pub(super) async fn touch(&self, sid: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        let key = format!("{}{}", self.prefix, sid);
        if !valid_key(&key) {
            return Ok(false);
        }
        let ttl = format!("T{ttl_secs}");
        let mut client = self.client().await?;
        // `t` asks for the remaining TTL back: a bare hit ("HD") reads the same as a miss here.
        match client.meta_get(&key, false, None, Some(&[ttl.as_str(), "t"])).await {
            Ok(hit) => Ok(hit.is_some()),
            Err(e) => Err(broken(client, e)),
        }
    }
}

/// A failed request: the connection may hold half a reply, so it leaves the pool for good.
fn broken(client: deadpool::managed::Object<Connector>, error: async_memcached::Error) -> StoreError {
    drop(deadpool::managed::Object::take(client));
    StoreError::Memcached(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keys() {
        assert_eq!(dsn("memcache://127.0.0.1:11211").unwrap(), "tcp://127.0.0.1:11211");
        assert_eq!(dsn("127.0.0.1:11211").unwrap(), "tcp://127.0.0.1:11211");
        assert_eq!(dsn("unix:///run/memcached.sock").unwrap(), "unix:///run/memcached.sock");
        assert!(dsn("a:1,b:2").unwrap_err().to_string().contains("several"));
        assert!(dsn("redis://x").is_err());
        assert!(valid_key("sess:abc"));
        assert!(!valid_key("sess:a b"));
        assert!(!valid_key("sess:a\r\nflush_all"));
        assert!(!valid_key(&"k".repeat(251)));
    }
}
