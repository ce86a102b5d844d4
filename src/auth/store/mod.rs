//! Where express-session keeps its records, and the user in them: one small interface over the
//! stores Express apps use (connect-redis, connect-memcached, connect-pg-simple).
//!
//! A store answers "what is the record of session `sid`, or is there none" (one at a time for
//! handshakes, many at once for revalidation) and, with `--touch-sessions`, extends a session's
//! life as express-session's rolling touch would, without ever rewriting or resurrecting it.
//! Existence in the store decides validity; `cookie.expires` inside the record is deliberately
//! not checked, because express-session does not check it for external stores either.
//!
//! Owns the store connections and nothing else: it knows nothing of sockets or Redis pub/sub.
//! A store that can tell when records change ([`SessionStore::watch`]) reports session ids; the
//! gateway decides what that means for its sockets.

mod error;
mod memcached;
mod postgres;
mod redis;

pub use error::{StoreError, StoreEvent};
pub use memcached::MemcachedOptions;
pub use postgres::PostgresOptions;

use serde_json::Value;
use std::time::Duration;

/// Where sessions live and how to read the user out of them. Cheap to clone (pools inside).
#[derive(Clone)]
pub struct SessionStore {
    backend: Backend,
    user_pointer: String,
    timeout: Duration,
}

#[derive(Clone)]
enum Backend {
    Redis(redis::RedisStore),
    Memcached(memcached::MemcachedStore),
    Postgres(postgres::PostgresStore),
}

/// What a session lookup found, short of a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no session record (expired, destroyed or never saved)")]
    NoSession,
    #[error("session record is not JSON")]
    NotJson,
    #[error("session has no logged-in user")]
    NoUser,
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

impl SessionStore {
    /// Sessions written by connect-redis: `GET <prefix><sid>` on `redis`, one multiplexed
    /// connection shared by every handshake that reconnects by itself. `user_pointer` is a JSON
    /// pointer such as `/passport/user`.
    pub fn new(
        redis: impl Into<crate::redis_connection::RedisConnection>,
        prefix: String,
        user_pointer: String,
        timeout: Duration,
    ) -> Self {
        let store = redis::RedisStore::new(redis.into(), prefix);
        Self::with_backend(Backend::Redis(store), user_pointer, timeout)
    }

    /// Sessions written by connect-memcached: `get <prefix><sid>` on one memcached server.
    pub fn memcached(options: MemcachedOptions, user_pointer: String, timeout: Duration) -> Result<Self, StoreError> {
        let store = memcached::MemcachedStore::new(options, timeout)?;
        Ok(Self::with_backend(Backend::Memcached(store), user_pointer, timeout))
    }

    /// Sessions written by connect-pg-simple: a row of the session table, unexpired.
    pub fn postgres(options: PostgresOptions, user_pointer: String, timeout: Duration) -> Result<Self, StoreError> {
        let store = postgres::PostgresStore::new(options, timeout)?;
        Ok(Self::with_backend(Backend::Postgres(store), user_pointer, timeout))
    }

    fn with_backend(backend: Backend, user_pointer: String, timeout: Duration) -> Self {
        SessionStore {
            backend,
            user_pointer,
            timeout,
        }
    }

    /// The store's name, for logs: `redis`, `memcached` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Redis(_) => "redis",
            Backend::Memcached(_) => "memcached",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The logged-in user of session `sid`.
    pub async fn user(&self, sid: &str) -> Result<Value, LookupError> {
        self.lookup(sid).await.map(|(user, _)| user)
    }

    /// The user of session `sid` and the TTL the store gives it on a touch: the cookie's
    /// `originalMaxAge` in seconds, or one day (connect-redis's and connect-memcached's default).
    /// One round trip, bounded by the lookup timeout.
    ///
    /// The future is boxed: it lives inside every connection's task while its handshake waits,
    /// and inline its timer and query state (up to about 4 KB with the pools of memcached and
    /// Postgres) would make every task that much larger for its whole life.
    pub fn lookup<'a>(
        &'a self,
        sid: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(Value, u64), LookupError>> {
        Box::pin(async move {
            let record = bounded(self.timeout, async {
                match &self.backend {
                    Backend::Redis(store) => store.record(sid).await,
                    Backend::Memcached(store) => store.record(sid).await,
                    Backend::Postgres(store) => store.record(sid).await,
                }
            })
            .await?
            .ok_or(LookupError::NoSession)?;
            let user = user_of(&record, &self.user_pointer)?;
            Ok((user, touch_ttl(&record)))
        })
    }

    /// Extends session `sid` by `ttl_secs`, if it still exists (a touch never creates a record).
    pub async fn touch(&self, sid: &str, ttl_secs: u64) -> Result<bool, LookupError> {
        bounded(self.timeout, async {
            match &self.backend {
                Backend::Redis(store) => store.touch(sid, ttl_secs).await,
                Backend::Memcached(store) => store.touch(sid, ttl_secs).await,
                Backend::Postgres(store) => store.touch(sid, ttl_secs).await,
            }
        })
        .await
    }

    /// The users of many sessions at once, for revalidation, in the order of `sids`: one round
    /// trip per batch (Redis `MGET`, memcached multi-get, Postgres `sid = ANY($1)`). `Err` only
    /// when the store itself is unavailable.
    pub async fn users(&self, sids: &[impl AsRef<str>]) -> Result<Vec<Result<Value, LookupError>>, LookupError> {
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let sids: Vec<&str> = sids.iter().map(AsRef::as_ref).collect();
        let records = bounded(self.timeout * 2, async {
            match &self.backend {
                Backend::Redis(store) => store.records(&sids).await,
                Backend::Memcached(store) => store.records(&sids).await,
                Backend::Postgres(store) => store.records(&sids).await,
            }
        })
        .await?;
        Ok(records
            .into_iter()
            .map(|record| match record {
                None => Err(LookupError::NoSession),
                Some(record) => user_of(&record, &self.user_pointer),
            })
            .collect())
    }

    /// Changes the store reports by itself, when it can and was asked to (`--pg-notify`); the
    /// listening task (tracked by `tasks`) runs until the receiver is dropped. Redis reports through keyspace
    /// notifications on the adapter's pub/sub connection instead, which the cluster module owns.
    pub fn watch(&self, tasks: &crate::tasks::Tasks) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        match &self.backend {
            Backend::Postgres(store) => store.watch(tasks),
            _ => None,
        }
    }
}

/// `work` bounded by `timeout`; an error or no answer in time is [`LookupError::Unavailable`].
async fn bounded<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, LookupError> {
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(LookupError::Unavailable(StoreError::Timeout(timeout).to_string())),
        Ok(Err(err)) => Err(LookupError::Unavailable(err.to_string())),
        Ok(Ok(value)) => Ok(value),
    }
}

/// The TTL a touch gives a record: `cookie.originalMaxAge` in seconds, else one day.
fn touch_ttl(record: &[u8]) -> u64 {
    seek(record, "/cookie/originalMaxAge")
        .ok()
        .flatten()
        .and_then(|ms| ms.as_u64())
        .map_or(86_400, |ms| (ms / 1000).max(1))
}

/// The user at `pointer` in a session record, as passport decides: present and not `null`,
/// `false` or `""` (so `0`, `{}` and `[]` are users).
pub fn user_of(record: &[u8], pointer: &str) -> Result<Value, LookupError> {
    match seek(record, pointer).map_err(|_| LookupError::NotJson)? {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Err(LookupError::NoUser),
        Some(Value::String(s)) if s.is_empty() => Err(LookupError::NoUser),
        Some(user) => Ok(user),
    }
}

/// The value at JSON pointer `pointer` (object keys only, e.g. `/passport/user`) in the JSON
/// document `json`, which is validated whole. Only that value is built: the rest of a session
/// record (its cookie, flash messages, whatever the app keeps there) is skipped without
/// allocating, which halved what reading a record cost per handshake.
fn seek(json: &[u8], pointer: &str) -> Result<Option<Value>, serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let path: Vec<std::borrow::Cow<'_, str>> = pointer
        .split('/')
        .skip(1)
        .map(|segment| match segment.contains('~') {
            true => segment.replace("~1", "/").replace("~0", "~").into(),
            false => segment.into(),
        })
        .collect();
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let found = Seek(&path).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(found)
}

/// Finds the value under a path of object keys while deserializing, ignoring everything else.
struct Seek<'p>(&'p [std::borrow::Cow<'p, str>]);

impl<'de> serde::de::DeserializeSeed<'de> for Seek<'_> {
    type Value = Option<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        if self.0.is_empty() {
            return serde::Deserialize::deserialize(deserializer).map(Some);
        }
        deserializer.deserialize_any(self)
    }
}

/// Whether a map key equals the wanted one, without allocating the key.
struct KeyIs<'p>(&'p str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

impl<'de> serde::de::Visitor<'de> for Seek<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::IgnoredAny;
        let (wanted, rest) = (&self.0[0], &self.0[1..]);
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(wanted))? {
            if matches && found.is_none() {
                found = map.next_value_seed(Seek(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn passport_user_rules() {
        let rec = |user: &str| {
            format!(
                r#"{{"cookie":{{"originalMaxAge":3600000,"expires":"2000-01-01T00:00:00.000Z","httpOnly":true,"path":"/"}},"passport":{{"user":{user}}}}}"#
            )
        };
        let p = "/passport/user";
        assert_eq!(user_of(rec("42").as_bytes(), p), Ok(json!(42)));
        assert_eq!(user_of(rec("0").as_bytes(), p), Ok(json!(0)), "0 is a user");
        assert_eq!(user_of(rec(r#""0""#).as_bytes(), p), Ok(json!("0")));
        assert_eq!(user_of(rec("{}").as_bytes(), p), Ok(json!({})));
        assert_eq!(user_of(rec("[]").as_bytes(), p), Ok(json!([])));
        assert_eq!(
            user_of(rec(r#"{"id":"a1b2","role":"admin"}"#).as_bytes(), p),
            Ok(json!({"id":"a1b2","role":"admin"}))
        );
        for anon in ["null", "false", r#""""#] {
            assert_eq!(user_of(rec(anon).as_bytes(), p), Err(LookupError::NoUser), "{anon}");
        }
        assert_eq!(user_of(br#"{"cookie":{},"passport":{}}"#, p), Err(LookupError::NoUser));
        assert_eq!(user_of(br#"{"cookie":{}}"#, p), Err(LookupError::NoUser));
        assert_eq!(user_of(b"\x82\xa1a", p), Err(LookupError::NotJson));
        // Apps without passport: the user path is a setting.
        assert_eq!(user_of(br#"{"user":{"id":"u1"}}"#, "/user"), Ok(json!({"id":"u1"})));
    }

    #[test]
    fn seeking_a_path_agrees_with_a_json_pointer() {
        let docs = [
            r#"{"cookie":{"originalMaxAge":3600000,"path":"/"},"passport":{"user":"u1"},"flash":[1,{"a":null}]}"#,
            r#"{"passport":{"user":{"id":7,"roles":["a","b"]}},"passport":{"user":"second"}}"#,
            r#"{"a/b":{"c~d":true},"e\"f":"escaped key","list":[{"x":1}],"n":-1.5}"#,
            r#"{"passport":"not an object"}"#,
            r#"[1,2,3]"#,
            r#""just a string""#,
        ];
        let pointers = [
            "/passport/user",
            "/cookie/originalMaxAge",
            "/a~1b/c~0d",
            "/e\"f",
            "/list",
            "/n",
            "/missing",
            "",
        ];
        for doc in docs {
            let whole: Value = serde_json::from_str(doc).unwrap();
            for pointer in pointers {
                // serde_json's pointer keeps the last of duplicate keys; express-session never
                // writes duplicates, and the first is as good an answer.
                if doc.contains(r#""second""#) {
                    continue;
                }
                assert_eq!(
                    seek(doc.as_bytes(), pointer).unwrap(),
                    whole.pointer(pointer).cloned(),
                    "{doc} {pointer}"
                );
            }
        }
        assert_eq!(
            seek(docs[1].as_bytes(), "/passport/user").unwrap(),
            Some(json!({"id":7,"roles":["a","b"]}))
        );
        for bad in [&b"{\"a\":1"[..], b"{\"a\":1} x", b"\x82\xa1a", b""] {
            assert!(seek(bad, "/a").is_err(), "{bad:?} is not JSON");
        }
        assert_eq!(touch_ttl(docs[0].as_bytes()), 3600);
        assert_eq!(touch_ttl(b"{}"), 86_400);
    }
}
