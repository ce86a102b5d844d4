//! The sockets of each express-session on this node, and what keeps them honest: revocation
//! (the session ended in the store), rechecks (its record was rewritten), the periodic
//! revalidation of every session, and the rolling touch that extends a session's TTL.
//!
//! Owns the session index and the session store's authentication settings. Knows sockets only
//! through [`Namespaces`] (to disconnect them) and the store only through [`SessionAuth`]; how a
//! revocation is noticed (keyspace events, Postgres NOTIFY, the periodic round) is the caller's.

use super::namespace::Namespaces;
use super::socket::Socket;
use crate::auth::{LookupError, SessionAuth, StoreEvent};
use crate::metrics::{Metrics, Revalidation, Revoked, SessionTouch};
use crate::tasks::{TaskKind, Tasks};
use dashmap::DashMap;
use serde_json::Value;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Why a session's sockets were closed at once: the store said it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Deleted,
    Expired,
    Evicted,
    Renamed,
    /// MOVEd to another database.
    Moved,
}

impl From<Revocation> for Revoked {
    fn from(why: Revocation) -> Self {
        match why {
            Revocation::Deleted => Revoked::Deleted,
            Revocation::Expired => Revoked::Expired,
            Revocation::Evicted => Revoked::Evicted,
            Revocation::Renamed => Revoked::Renamed,
            Revocation::Moved => Revoked::Moved,
        }
    }
}

/// Why a session read again no longer lets its sockets stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    SessionGone,
    NoUser,
    UserChanged,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::SessionGone => "session_gone",
            Verdict::NoUser => "no_user",
            Verdict::UserChanged => "user_changed",
        }
    }

    fn revoked(self) -> Revoked {
        match self {
            Verdict::SessionGone => Revoked::SessionGone,
            Verdict::NoUser => Revoked::NoUser,
            Verdict::UserChanged => Revoked::UserChanged,
        }
    }

    fn revalidation(self) -> Revalidation {
        match self {
            Verdict::SessionGone => Revalidation::SessionGone,
            Verdict::NoUser => Revalidation::NoUser,
            Verdict::UserChanged => Revalidation::UserChanged,
        }
    }
}

/// The authenticated sockets of this node by express-session, and their upkeep.
pub struct Sessions {
    auth: Option<SessionAuth>,
    namespaces: Arc<Namespaces>,
    /// Sockets by express-session id (held weakly; pruned as they go).
    index: DashMap<Arc<str>, Vec<Weak<Socket>>>,
    /// Socket activity extends its session's TTL at most this often (`None`: never).
    touch_interval: Option<Duration>,
    /// When each session was last touched, and the TTL a touch gives it.
    touched: DashMap<Arc<str>, (Instant, u64)>,
    /// Sessions revoked lately, and when: a CONNECT whose lookup began before a revocation is
    /// refused (its socket was not indexed yet for the revocation to reach). Bounded by age.
    revoked: parking_lot::Mutex<std::collections::VecDeque<(Instant, Arc<str>)>>,
    metrics: Arc<Metrics>,
    tasks: Tasks,
}

/// How long a revocation is remembered for CONNECTs whose lookup was under way.
const REVOKED_MEMORY: Duration = Duration::from_secs(10);

impl Sessions {
    pub(super) fn new(
        auth: Option<SessionAuth>,
        namespaces: Arc<Namespaces>,
        touch_interval: Option<Duration>,
        metrics: Arc<Metrics>,
        tasks: Tasks,
    ) -> Arc<Self> {
        Arc::new(Sessions {
            auth,
            namespaces,
            index: DashMap::new(),
            touch_interval,
            touched: DashMap::new(),
            revoked: Default::default(),
            metrics,
            tasks,
        })
    }

    pub fn auth(&self) -> Option<&SessionAuth> {
        self.auth.as_ref()
    }

    /// Starts the upkeep tasks: revalidation every `every`, and the store's change reports.
    pub(super) fn start(self: &Arc<Self>, every: Option<Duration>) {
        let Some(auth) = &self.auth else { return };
        if let Some(every) = every {
            // Holds only a weak reference: the task ends with the gateway, or at shutdown.
            let weak = Arc::downgrade(self);
            let stop = self.tasks.stopping();
            self.tasks.spawn(TaskKind::SessionCheck, async move {
                // Each node starts at a random point of the interval, so the nodes of a cluster
                // do not all read every session at the same moment.
                let offset = every.mul_f64(rand::random::<f64>());
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while stop.run_until_cancelled(tick.tick()).await.is_some() {
                    let Some(sessions) = weak.upgrade() else { return };
                    stop.run_until_cancelled(sessions.revalidate()).await;
                }
            });
        }
        if let Some(mut changes) = auth.store.watch(&self.tasks) {
            let weak = Arc::downgrade(self);
            let stop = self.tasks.stopping();
            self.tasks.spawn(TaskKind::StoreListener, async move {
                while let Some(Some(change)) = stop.run_until_cancelled(changes.recv()).await {
                    let Some(sessions) = weak.upgrade() else { return };
                    sessions.on_store_change(change);
                }
            });
        }
    }

    /// A change the session store reported (Postgres NOTIFY): the session is read again, as for
    /// a rewritten Redis key; after missed reports, every session is.
    fn on_store_change(self: &Arc<Self>, change: StoreEvent) {
        match change {
            StoreEvent::Changed(session) => {
                if !self.sockets_of(&session).is_empty() {
                    let sessions = self.clone();
                    self.tasks
                        .spawn(TaskKind::SessionCheck, async move { sessions.recheck(&session).await });
                }
            }
            StoreEvent::Resync => self.revalidate_soon(),
        }
    }

    /// Revalidates every session on a task of its own (after missed store events).
    pub fn revalidate_soon(self: &Arc<Self>) {
        let sessions = self.clone();
        self.tasks
            .spawn(TaskKind::SessionCheck, async move { sessions.revalidate().await });
    }

    /// The open sockets of express-session `session` on this node.
    pub fn sockets_of(&self, session: &str) -> Vec<Arc<Socket>> {
        self.index
            .get(session)
            .map(|sockets| {
                sockets
                    .iter()
                    .filter_map(Weak::upgrade)
                    .filter(|s| s.is_connected())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Indexes a socket that just connected; `ttl_secs` is what a touch gives its session.
    pub(super) fn add(&self, socket: &Arc<Socket>, ttl_secs: u64) {
        let Some(session) = &socket.session else { return };
        if self.touch_interval.is_some() {
            // A session's first socket starts its touch clock: the handshake just read it.
            self.touched
                .entry(session.clone())
                .or_insert((Instant::now(), ttl_secs));
        }
        let mut sockets = self.index.entry(session.clone()).or_default();
        sockets.retain(|s| s.upgrade().is_some_and(|s| s.is_connected()));
        sockets.push(Arc::downgrade(socket));
    }

    /// Extends the session of `socket` after client activity, as express-session's rolling touch
    /// does, at most once per touch interval per session (and never for a session let in
    /// during a store outage: its TTL is unknown).
    pub(super) fn touch(self: &Arc<Self>, socket: &Socket) {
        let (Some(every), Some(session)) = (self.touch_interval, &socket.session) else {
            return;
        };
        let now = Instant::now();
        let ttl = match self.touched.get_mut(session) {
            Some(mut entry) if entry.1 > 0 && now.duration_since(entry.0) >= every => {
                entry.0 = now;
                entry.1
            }
            _ => return,
        };
        let (sessions, session) = (self.clone(), session.clone());
        self.tasks.spawn(TaskKind::SessionCheck, async move {
            let Some(auth) = &sessions.auth else { return };
            sessions.metrics.inc(match auth.store.touch(&session, ttl).await {
                Ok(true) => SessionTouch::Extended,
                // The key is gone: nothing is resurrected (revocation closes the sockets).
                Ok(false) => SessionTouch::Gone,
                Err(_) => SessionTouch::StoreUnavailable,
            });
        });
    }

    /// Whether `session` was revoked at or after `since`.
    pub fn revoked_since(&self, session: &str, since: Instant) -> bool {
        self.revoked
            .lock()
            .iter()
            .rev()
            .take_while(|(at, _)| *at >= since)
            .any(|(_, revoked)| &**revoked == session)
    }

    /// Remembers that `session` ended, for CONNECTs whose lookup is under way, and forgets it
    /// in the outage-grace memory: it must not come back during a later store outage.
    fn remember_revoked(&self, session: &str) {
        if let Some(grace) = self.auth.as_ref().and_then(|a| a.grace.as_ref()) {
            grace.forget(session);
        }
        let now = Instant::now();
        let mut revoked = self.revoked.lock();
        while revoked
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > REVOKED_MEMORY)
        {
            revoked.pop_front();
        }
        // Bounded by count too: a flood of revocations keeps the latest.
        if revoked.len() >= 100_000 {
            revoked.pop_front();
        }
        revoked.push_back((now, session.into()));
    }

    /// Disconnects every socket of `session` on this node, because the store says it ended.
    /// Returns how many.
    pub fn revoke(&self, session: &str, why: Revocation) -> usize {
        self.remember_revoked(session);
        let sockets = self.sockets_of(session);
        if !sockets.is_empty() {
            self.metrics.inc(Revoked::from(why));
            tracing::debug!(why = ?why, sockets = sockets.len(), "session ended in the store; disconnecting its sockets");
        }
        for socket in &sockets {
            self.namespaces.disconnect(socket, true);
        }
        sockets.len()
    }

    /// Reads `session` again (its record was rewritten) and disconnects its sockets if it has
    /// no user any more, or another one.
    pub async fn recheck(&self, session: &str) {
        let Some(auth) = &self.auth else { return };
        let sockets = self.sockets_of(session);
        if sockets.is_empty() {
            return;
        }
        match auth.store.users(&[session]).await {
            Ok(users) => {
                if let Some(user) = users.into_iter().next() {
                    if let Some(verdict) = self.judge(&sockets, &user) {
                        self.metrics.inc(verdict.revoked());
                    }
                }
            }
            // Not a reason to disconnect: the periodic round will look again.
            Err(err) => tracing::debug!(error = %err, "session recheck skipped: store unavailable"),
        }
    }

    /// Disconnects `sockets` of one session if its record says so; returns why it did.
    fn judge(&self, sockets: &[Arc<Socket>], user: &Result<Value, LookupError>) -> Option<Verdict> {
        let verdict = match user {
            Err(LookupError::NoSession) => Verdict::SessionGone,
            Err(_) => Verdict::NoUser,
            Ok(user) if sockets.iter().any(|s| s.user.as_ref() != Some(user)) => Verdict::UserChanged,
            Ok(_) => return None,
        };
        if let Some(session) = sockets.first().and_then(|s| s.session.as_deref()) {
            self.remember_revoked(session);
        }
        tracing::debug!(
            reason = verdict.as_str(),
            sockets = sockets.len(),
            "session no longer valid; disconnecting its sockets"
        );
        for socket in sockets {
            self.namespaces.disconnect(socket, true);
        }
        Some(verdict)
    }

    /// Checks every authenticated socket's session against the store, as Express would on its
    /// next request: sockets whose session is gone (logout, expiry, destroy), has no user any
    /// more, or has another user are disconnected. One `MGET` per 1000 sessions. When the store
    /// is unavailable nobody is disconnected (the next round tries again).
    pub async fn revalidate(&self) {
        let Some(auth) = &self.auth else { return };
        // Sessions whose sockets are all gone leave the index here.
        self.index.retain(|_, sockets| {
            sockets.retain(|s| s.upgrade().is_some_and(|s| s.is_connected()));
            !sockets.is_empty()
        });
        self.touched.retain(|session, _| self.index.contains_key(session));
        let sessions: Vec<Arc<str>> = self.index.iter().map(|e| e.key().clone()).collect();
        let mut gone = 0usize;
        for chunk in sessions.chunks(1000) {
            let users = match auth.store.users(chunk).await {
                Ok(users) => users,
                Err(err) => {
                    self.metrics.inc(Revalidation::StoreUnavailable);
                    tracing::warn!(error = %err, "session revalidation skipped: store unavailable; nobody is disconnected");
                    return;
                }
            };
            for (session, user) in chunk.iter().zip(users) {
                let sockets = self.sockets_of(session);
                if sockets.is_empty() {
                    continue;
                }
                if let Some(verdict) = self.judge(&sockets, &user) {
                    self.metrics.inc(verdict.revalidation());
                    gone += 1;
                }
            }
        }
        if gone >= 100 && gone * 2 >= sessions.len() {
            tracing::warn!(
                gone,
                sessions = sessions.len(),
                "most sessions vanished at once and their sockets were disconnected: if the session store was flushed or restarted empty, everyone has to log in again"
            );
        }
    }
}
