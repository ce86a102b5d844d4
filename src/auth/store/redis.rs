//! connect-redis: the record is the string at `<prefix><sid>` (default prefix `sess:`), its TTL
//! set by connect-redis. A touch is an `EXPIRE`, which never creates a key.

//! On a Redis Cluster the same commands go through the cluster client, and the batch is one GET
//! per key (never a multi-key command across slots).

use super::error::StoreError;
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

    pub(super) async fn record(&self, sid: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut redis = self.redis.clone();
        redis::cmd("GET")
            .arg(self.key(sid))
            .query_async(&mut redis)
            .await
            .map_err(StoreError::from)
    }

    pub(super) async fn records(&self, sids: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if self.redis.is_cluster() {
            // One GET per key, all in flight at once on the cluster's multiplexed connections,
            // rather than the client's multi-slot MGET: a GET that fails fails the round (nobody
            // is disconnected), where a split MGET retried across a failover could hand back a
            // miss that is not one.
            let gets = sids.iter().map(|sid| {
                let mut redis = self.redis.clone();
                let key = self.key(sid);
                async move {
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<Vec<u8>>>(&mut redis)
                        .await
                }
            });
            return futures_util::future::join_all(gets)
                .await
                .into_iter()
                .map(|got| got.map_err(StoreError::from))
                .collect();
        }
        let mut cmd = redis::cmd("MGET");
        for sid in sids {
            cmd.arg(self.key(sid));
        }
        let mut redis = self.redis.clone();
        Ok(cmd.query_async(&mut redis).await?)
    }

    pub(super) async fn touch(&self, sid: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        let mut redis = self.redis.clone();
        let extended: i64 = redis::cmd("EXPIRE")
            .arg(self.key(sid))
            .arg(ttl_secs)
            .query_async(&mut redis)
            .await?;
        Ok(extended == 1)
    }
}
