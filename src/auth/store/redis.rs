//! connect-redis: the record is the string at `<prefix><sid>` (default prefix `sess:`), its TTL
//! set by connect-redis. A touch is an `EXPIRE`, which never creates a key.

//! On a Redis Cluster the same commands go through the cluster client; the batch `MGET` is split
//! by slot there (one `MGET` per shard), never sent across slots.

use crate::redis_connection::RedisConnection;

#[derive(Clone)]
pub(super) struct RedisStore {
    redis: RedisConnection,
    prefix: String,
}

impl RedisStore {
    pub(super) fn new(redis: RedisConnection, prefix: String) -> Self {
        RedisStore { redis, prefix }
    }

    fn key(&self, sid: &str) -> String {
        format!("{}{}", self.prefix, sid)
    }

    pub(super) async fn record(&self, sid: &str) -> Result<Option<Vec<u8>>, String> {
        let mut redis = self.redis.clone();
        redis::cmd("GET")
            .arg(self.key(sid))
            .query_async(&mut redis)
            .await
            .map_err(|e| e.to_string())
    }

    pub(super) async fn records(&self, sids: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
        let mut cmd = redis::cmd("MGET");
        for sid in sids {
            cmd.arg(self.key(sid));
        }
        let mut redis = self.redis.clone();
        cmd.query_async(&mut redis).await.map_err(|e| e.to_string())
    }

    pub(super) async fn touch(&self, sid: &str, ttl_secs: u64) -> Result<bool, String> {
        let mut redis = self.redis.clone();
        let extended: i64 = redis::cmd("EXPIRE")
            .arg(self.key(sid))
            .arg(ttl_secs)
            .query_async(&mut redis)
            .await
            .map_err(|e| e.to_string())?;
        Ok(extended == 1)
    }
}
