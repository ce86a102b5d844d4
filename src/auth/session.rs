//! The session record connect-redis writes: `GET <prefix><sid>`, JSON, and the user in it.
//!
//! Read-only but for one thing: with `--touch-sessions`, socket activity extends a session's TTL
//! as express-session's rolling touch would (EXPIRE only: the record is never rewritten, and a
//! deleted key is never brought back). Key existence decides validity; `cookie.expires` is
//! deliberately not checked, because express-session does not check it for external stores.

use redis::aio::ConnectionManager;
use serde_json::Value;
use std::time::Duration;

/// Where sessions live and how to read the user out of them.
#[derive(Clone)]
pub struct SessionStore {
    redis: ConnectionManager,
    prefix: String,
    user_pointer: String,
    timeout: Duration,
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
    /// `redis` is shared by every handshake (one multiplexed connection that reconnects by
    /// itself); `user_pointer` is a JSON pointer such as `/passport/user`.
    pub fn new(redis: ConnectionManager, prefix: String, user_pointer: String, timeout: Duration) -> Self {
        SessionStore {
            redis,
            prefix,
            user_pointer,
            timeout,
        }
    }

    /// The logged-in user of session `sid`: one `GET`, bounded by the lookup timeout.
    pub async fn user(&self, sid: &str) -> Result<Value, LookupError> {
        self.lookup(sid).await.map(|(user, _)| user)
    }

    /// The user of session `sid` and the TTL connect-redis gives it on a touch: the cookie's
    /// `originalMaxAge` in seconds, or connect-redis's default of one day.
    pub async fn lookup(&self, sid: &str) -> Result<(Value, u64), LookupError> {
        let key = format!("{}{}", self.prefix, sid);
        let mut redis = self.redis.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(&key);
        let get = cmd.query_async::<Option<Vec<u8>>>(&mut redis);
        let record = match tokio::time::timeout(self.timeout, get).await {
            Err(_) => return Err(LookupError::Unavailable(format!("no answer within {:?}", self.timeout))),
            Ok(Err(err)) => return Err(LookupError::Unavailable(err.to_string())),
            Ok(Ok(None)) => return Err(LookupError::NoSession),
            Ok(Ok(Some(record))) => record,
        };
        let user = user_of(&record, &self.user_pointer)?;
        Ok((user, touch_ttl(&record)))
    }

    /// Extends session `sid` by `ttl_secs`, if it still exists (EXPIRE never creates a key).
    pub async fn touch(&self, sid: &str, ttl_secs: u64) -> Result<bool, LookupError> {
        let mut redis = self.redis.clone();
        let mut cmd = redis::cmd("EXPIRE");
        cmd.arg(format!("{}{}", self.prefix, sid)).arg(ttl_secs);
        let expire = cmd.query_async::<i64>(&mut redis);
        match tokio::time::timeout(self.timeout, expire).await {
            Ok(Ok(n)) => Ok(n == 1),
            Ok(Err(err)) => Err(LookupError::Unavailable(err.to_string())),
            Err(_) => Err(LookupError::Unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }
}

impl SessionStore {
    /// The users of many sessions at once (one `MGET`), for revalidation. `Err` only when the
    /// store itself is unavailable.
    pub async fn users(&self, sids: &[impl AsRef<str>]) -> Result<Vec<Result<Value, LookupError>>, LookupError> {
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for sid in sids {
            cmd.arg(format!("{}{}", self.prefix, sid.as_ref()));
        }
        let mut redis = self.redis.clone();
        let records =
            match tokio::time::timeout(self.timeout * 2, cmd.query_async::<Vec<Option<Vec<u8>>>>(&mut redis)).await {
                Err(_) => {
                    return Err(LookupError::Unavailable(format!(
                        "no answer within {:?}",
                        self.timeout * 2
                    )))
                }
                Ok(Err(err)) => return Err(LookupError::Unavailable(err.to_string())),
                Ok(Ok(records)) => records,
            };
        Ok(records
            .into_iter()
            .map(|record| match record {
                None => Err(LookupError::NoSession),
                Some(record) => user_of(&record, &self.user_pointer),
            })
            .collect())
    }
}

/// connect-redis's TTL for a record: `cookie.originalMaxAge` in seconds, else one day.
fn touch_ttl(record: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(record)
        .ok()
        .and_then(|json| json.pointer("/cookie/originalMaxAge")?.as_u64())
        .map_or(86_400, |ms| (ms / 1000).max(1))
}

/// The user at `pointer` in a session record, as passport decides: present and not `null`,
/// `false` or `""` (so `0`, `{}` and `[]` are users).
pub fn user_of(record: &[u8], pointer: &str) -> Result<Value, LookupError> {
    let json: Value = serde_json::from_slice(record).map_err(|_| LookupError::NotJson)?;
    match json.pointer(pointer) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Err(LookupError::NoUser),
        Some(Value::String(s)) if s.is_empty() => Err(LookupError::NoUser),
        Some(user) => Ok(user.clone()),
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
}
