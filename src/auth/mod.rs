//! Who is on the other end of a handshake, decided exactly as the Express app would decide it.
//!
//! Owns the express-session cookie (`cookie`), the connect-redis session record (`session`) and
//! the Origin policy (`origin`). Knows nothing about sockets, rooms or Redis pub/sub: it turns
//! request headers into an [`Identity`] or a typed reason for refusing one.

pub mod cookie;
pub mod origin;
pub mod session;

pub use cookie::{CookieRejection, SessionSecrets};
pub use origin::OriginPolicy;
pub use session::{LookupError, SessionStore};

use serde_json::Value;

/// A logged-in user, bound to the session it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The express-session id (not the Socket.IO id).
    pub session_id: String,
    /// The raw value at the user path (`passport.user`), as `serializeUser` stored it.
    pub user: Value,
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
}

impl SessionAuth {
    /// Cookie, signature, one `GET`, user check. Never lets anyone in on an error.
    pub async fn authenticate<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h str>,
    ) -> Result<Identity, AuthError> {
        let session_id = cookie::session_id(cookie_headers, &self.cookie_name, &self.secrets)?;
        match self.store.user(&session_id).await {
            Ok(user) => Ok(Identity { session_id, user }),
            Err(LookupError::Unavailable(why)) => Err(AuthError::StoreUnavailable(why)),
            Err(other) => Err(AuthError::Session(other)),
        }
    }
}
