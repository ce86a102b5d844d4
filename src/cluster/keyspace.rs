//! Revocation through Redis keyspace notifications on the session keys: a logout, an expiry or
//! an eviction closes the session's sockets on this node within a second, and a rewritten
//! session is read again.
//!
//! Owns the notification channel, the `notify-keyspace-events` check (and its merge with
//! `--configure-keyspace-events`), and the mapping of events onto the gateway's session index.
//! Rides on the adapter's subscriber connection; knows nothing of adapter messages.

use crate::gateway::{Gateway, Revocation};
use crate::redis_connection::RedisConnection;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The flags `notify-keyspace-events` needs for revocation: keyspace channel (K), generic
/// commands such as DEL (g), expiry (x), eviction (e) and string commands such as SET ($).
const KEYSPACE_FLAGS: &str = "Kgxe$";

/// Revocation through keyspace notifications on the session keys.
#[derive(Debug, Clone)]
pub struct KeyspaceOptions {
    /// The session keys' prefix (`--session-prefix`, e.g. `sess:`).
    pub session_prefix: String,
    /// Merge the needed `notify-keyspace-events` flags into Redis's setting at start.
    pub configure: bool,
}

/// The keyspace channel of the session keys, and whether to configure Redis to send it.
pub(super) struct Keyspace {
    /// `__keyspace@<db>__:<session prefix>`
    channel: String,
    configure: bool,
}

/// Whether a `notify-keyspace-events` setting sends every event revocation needs.
fn flags_enough(flags: &str) -> bool {
    flags.contains('K') && (flags.contains('A') || "gxe$".chars().all(|f| flags.contains(f)))
}

/// A glob pattern matching `literal` exactly (for PSUBSCRIBE).
fn glob_escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Keyspace {
    pub fn new(options: KeyspaceOptions, db: i64) -> Self {
        Keyspace {
            channel: format!("__keyspace@{db}__:{}", options.session_prefix),
            configure: options.configure,
        }
    }

    /// The pattern to PSUBSCRIBE to.
    pub fn pattern(&self) -> String {
        format!("{}*", glob_escape(&self.channel))
    }

    /// Handles `channel` if it is a session key's notification; returns whether it was.
    pub fn on_message(&self, gateway: &Arc<Gateway>, channel: &str, event: &[u8]) -> bool {
        let Some(session) = channel.strip_prefix(self.channel.as_str()) else {
            return false;
        };
        let revoked = match event {
            b"del" => Revocation::Deleted,
            b"expired" => Revocation::Expired,
            b"evicted" => Revocation::Evicted,
            b"rename_from" => Revocation::Renamed,
            // MOVE to another database: gone from this one.
            b"move_from" => Revocation::Moved,
            // Rewritten (passport's login into an existing session, a changed user, a COPY or
            // RESTORE with REPLACE, a MOVE into this database): read it.
            b"set" | b"rename_to" | b"copy_to" | b"restore" | b"move_to" => {
                if !gateway.sessions().sockets_of(session).is_empty() {
                    let (gateway, session) = (gateway.clone(), session.to_owned());
                    tokio::spawn(async move { gateway.sessions().recheck(&session).await });
                }
                return true;
            }
            // EXPIRE (express-session's touch) and the rest change nothing.
            _ => return true,
        };
        gateway.revoke_session(session, revoked);
        true
    }

    /// FLUSHDB, FLUSHALL and SWAPDB send no keyspace events: a key of wsgate's own (no session
    /// data, no TTL) is checked every second, and when it has vanished every session is
    /// checked at once (then the key is set again). Runs until `stop`.
    pub async fn watch_flushes(
        gateway: Arc<Gateway>,
        mut conn: RedisConnection,
        stop: tokio_util::sync::CancellationToken,
    ) {
        const SENTINEL: &str = "wsgate:flush-sentinel";
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut seen = false;
        while stop.run_until_cancelled(tick.tick()).await.is_some() {
            let exists: redis::RedisResult<bool> = redis::cmd("EXISTS").arg(SENTINEL).query_async(&mut conn).await;
            match exists {
                Ok(true) => seen = true,
                Ok(false) => {
                    if seen {
                        tracing::warn!("the session database was flushed or swapped (FLUSHDB, FLUSHALL, SWAPDB, or an empty restart): checking every session now");
                        gateway.revalidate_sessions_soon();
                    }
                    let set: redis::RedisResult<()> =
                        redis::cmd("SET").arg(SENTINEL).arg("1").query_async(&mut conn).await;
                    seen = set.is_ok();
                }
                // Redis away: the subscriber's reconnect revalidates when it is back.
                Err(_) => seen = false,
            }
        }
    }

    /// Makes sure Redis sends the keyspace events revocation needs, merging the flags in with
    /// `--configure-keyspace-events`; otherwise says loudly that logouts wait for the periodic
    /// check. `wsgate_keyspace_notifications` shows the outcome (1 on, 0 off, -1 unknown).
    pub async fn check_redis(&self, gateway: &Gateway, mut conn: RedisConnection) {
        let metrics = &gateway.metrics;
        let current: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut conn)
            .await;
        let flags = match current {
            Ok(pair) => pair.get(1).cloned().unwrap_or_default(),
            Err(err) => {
                metrics.keyspace_notifications.store(-1, Ordering::Relaxed);
                tracing::warn!(error = %err, "cannot read notify-keyspace-events (CONFIG refused?): if Redis does not send keyspace events for session keys, logouts close sockets only at the next --revalidate-interval");
                return;
            }
        };
        if flags_enough(&flags) {
            metrics.keyspace_notifications.store(1, Ordering::Relaxed);
            return;
        }
        if self.configure {
            let mut merged = flags.clone();
            merged.extend(KEYSPACE_FLAGS.chars().filter(|f| !flags.contains(*f)));
            let set: redis::RedisResult<()> = redis::cmd("CONFIG")
                .arg("SET")
                .arg("notify-keyspace-events")
                .arg(&merged)
                .query_async(&mut conn)
                .await;
            match set {
                Ok(()) => {
                    metrics.keyspace_notifications.store(1, Ordering::Relaxed);
                    tracing::info!(from = %flags, to = %merged, "notify-keyspace-events set for session revocation");
                }
                Err(err) => {
                    metrics.keyspace_notifications.store(0, Ordering::Relaxed);
                    tracing::error!(error = %err, "could not set notify-keyspace-events: logouts close sockets only at the next --revalidate-interval");
                }
            }
            return;
        }
        metrics.keyspace_notifications.store(0, Ordering::Relaxed);
        tracing::error!(
            setting = %flags,
            "Redis sends no keyspace events for session keys (notify-keyspace-events lacks {KEYSPACE_FLAGS}): a logout or expiry closes sockets only at the next --revalidate-interval. Run with --configure-keyspace-events, or set notify-keyspace-events {KEYSPACE_FLAGS} in redis.conf"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_patterns() {
        assert!(flags_enough("KA"));
        assert!(flags_enough("Kgxe$"));
        assert!(!flags_enough("Egx$"));
        assert!(!flags_enough("Kgx"));
        assert_eq!(glob_escape("sess:[a]*?"), "sess:\\[a\\]\\*\\?");
    }
}
