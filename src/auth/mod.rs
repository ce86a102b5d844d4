//! Who is on the other end of a handshake, decided exactly as the Express app would decide it.
//!
//! Owns the express-session cookie (`cookie`), the session record in the app's store (`store`:
//! connect-redis, connect-memcached, connect-pg-simple) and the Origin policy (`origin`). Knows
//! nothing about sockets, rooms or Redis pub/sub: it turns request headers into an [`Identity`]
//! or a typed reason for refusing one.

pub mod cookie;
pub mod origin;
pub mod store;

pub use cookie::{CookieRejection, SessionSecrets};
pub use origin::OriginPolicy;
pub use store::{LookupError, SessionStore, StoreError, StoreEvent};

use serde_json::Value;

/// A logged-in user, bound to the session it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The express-session id (not the Socket.IO id).
    pub session_id: String,
    /// The raw value at the user path (`passport.user`), as `serializeUser` stored it.
    pub user: Value,
    /// Let in from the outage-grace record while the store was unreachable (to be checked again
    /// as soon as it is back).
    pub in_grace: bool,
    /// The TTL a touch gives the session (see [`SessionStore::lookup`]).
    pub ttl_secs: u64,
}

/// Sessions this node verified recently, to let their sockets back in while the store is
/// unreachable (`--store-outage-grace`). Bounded by age (the window) and count: an entry is a
/// session id and its user, about 200 bytes, so the default cap holds about 20 MB at most.
pub struct OutageGrace {
    window: std::time::Duration,
    max_entries: usize,
    verified: parking_lot::Mutex<std::collections::HashMap<String, (Value, std::time::Instant)>>,
}

impl OutageGrace {
    pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

    pub fn new(window: std::time::Duration, max_entries: usize) -> Self {
        OutageGrace {
            window,
            max_entries,
            verified: Default::default(),
        }
    }

    fn remember(&self, session_id: &str, user: &Value) {
        let now = std::time::Instant::now();
        let mut verified = self.verified.lock();
        if verified.len() >= self.max_entries && !verified.contains_key(session_id) {
            verified.retain(|_, (_, at)| now.duration_since(*at) < self.window);
            if verified.len() >= self.max_entries {
                return;
            }
        }
        verified.insert(session_id.to_owned(), (user.clone(), now));
    }

    /// Forgets `session_id` (it was revoked: it must not come back during an outage).
    pub fn forget(&self, session_id: &str) {
        self.verified.lock().remove(session_id);
    }

    /// The user this node verified for `session_id` within the window.
    fn recall(&self, session_id: &str) -> Option<Value> {
        let verified = self.verified.lock();
        let (user, at) = verified.get(session_id)?;
        (at.elapsed() < self.window).then(|| user.clone())
    }
}

/// Why a handshake carries no identity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("anonymous: {0}")]
    Cookie(#[from] CookieRejection),
    #[error("anonymous: {0}")]
    Session(LookupError),
    #[error("{0}")]
    StoreUnavailable(String),
}

impl From<&AuthError> for crate::metrics::Auth {
    fn from(err: &AuthError) -> Self {
        err.label()
    }
}

impl AuthError {
    /// Label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Cookie(c) => c.as_str(),
            AuthError::Session(LookupError::NoSession) => "no_session",
            AuthError::Session(LookupError::NotJson) => "bad_session_record",
            AuthError::Session(_) => "no_user",
            AuthError::StoreUnavailable(_) => "store_unavailable",
        }
    }

    /// The `wsgate_auth_total` label it is counted under.
    pub fn label(&self) -> crate::metrics::Auth {
        use crate::metrics::Auth;
        match self {
            AuthError::Cookie(CookieRejection::Missing) => Auth::NoCookie,
            AuthError::Cookie(CookieRejection::BadSignature) => Auth::BadSignature,
            AuthError::Cookie(_) => Auth::UnsignedCookie,
            AuthError::Session(LookupError::NoSession) => Auth::NoSession,
            AuthError::Session(LookupError::NotJson) => Auth::BadSessionRecord,
            AuthError::Session(_) => Auth::NoUser,
            AuthError::StoreUnavailable(_) => Auth::StoreUnavailable,
        }
    }

    /// The CONNECT_ERROR message a client sees.
    pub fn client_message(&self) -> &'static str {
        match self {
            AuthError::StoreUnavailable(_) => "Session store unavailable",
            _ => "Authentication error",
        }
    }
}

/// Everything needed to authenticate a handshake from its `Cookie` headers.
#[derive(Clone)]
pub struct SessionAuth {
    pub cookie_name: String,
    pub secrets: SessionSecrets,
    pub store: SessionStore,
    /// Off (`None`): a store outage refuses every handshake.
    pub grace: Option<std::sync::Arc<OutageGrace>>,
}

impl SessionAuth {
    /// Cookie, signature, one `GET`, user check. Never lets anyone in on an error.
    pub async fn authenticate<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h str>,
    ) -> Result<Identity, AuthError> {
        let session_id = cookie::session_id(cookie_headers, &self.cookie_name, &self.secrets)?;
        match self.store.lookup(&session_id).await {
            Ok((user, ttl_secs)) => {
                if let Some(grace) = &self.grace {
                    grace.remember(&session_id, &user);
                }
                Ok(Identity {
                    session_id,
                    user,
                    in_grace: false,
                    ttl_secs,
                })
            }
            // Only a session this node verified within the window, with that same user.
            Err(LookupError::Unavailable(why)) => match self.grace.as_ref().and_then(|g| g.recall(&session_id)) {
                Some(user) => Ok(Identity {
                    session_id,
                    user,
                    in_grace: true,
                    ttl_secs: 0,
                }),
                None => Err(AuthError::StoreUnavailable(why)),
            },
            Err(other) => {
                if let Some(grace) = &self.grace {
                    grace.forget(&session_id);
                }
                Err(AuthError::Session(other))
            }
        }
    }
}
