//! The Origin check that protects cookie-authenticated WebSockets from cross-site hijacking.
//!
//! CORS does not apply to a WebSocket upgrade and browsers attach cookies to it, so any page on
//! any site could open a socket as the logged-in user. Browsers always send `Origin` on a
//! WebSocket handshake and on cross-origin requests; a request without one comes from a
//! non-browser client or from the same origin. Anything doubtful is refused: an origin is the
//! same only when scheme, host and port all match the request's.

/// Which origins may open sockets.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// An exact allow-list (`https://app.example.com`). Empty: same-origin only.
    pub fn new(allowed: impl IntoIterator<Item = String>) -> Self {
        OriginPolicy {
            allowed: allowed.into_iter().map(|o| normalize(&o)).collect(),
        }
    }

    /// Whether a request with these `Origin` and `Host` headers, made over `scheme` (`http` or
    /// `https`, as the browser used it), may proceed.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>, scheme: &str) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = normalize(origin);
        if !self.allowed.is_empty() {
            return self.allowed.contains(&origin);
        }
        let Some((origin_scheme, authority)) = origin.split_once("://") else {
            return false; // "null" and other opaque origins
        };
        if origin_scheme != scheme.to_ascii_lowercase() {
            return false;
        }
        match host {
            Some(host) => {
                strip_default_port(origin_scheme, authority)
                    == strip_default_port(origin_scheme, &host.to_ascii_lowercase())
            }
            None => false,
        }
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

fn strip_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return authority,
    };
    authority.strip_suffix(default).unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_without_allow_list() {
        let p = OriginPolicy::default();
        assert!(
            p.allows(None, Some("gw:3000"), "http"),
            "non-browser clients send no Origin"
        );
        assert!(p.allows(Some("http://gw:3000"), Some("gw:3000"), "http"));
        assert!(p.allows(Some("http://GW:3000"), Some("gw:3000"), "http"));
        assert!(p.allows(Some("https://app.test"), Some("app.test:443"), "https"));
        assert!(p.allows(Some("http://app.test"), Some("app.test"), "http"));
        assert!(!p.allows(Some("http://evil.test"), Some("gw:3000"), "http"));
        assert!(!p.allows(Some("http://gw:3001"), Some("gw:3000"), "http"));
        assert!(!p.allows(Some("null"), Some("gw:3000"), "http"));
        assert!(!p.allows(Some("http://gw:3000"), None, "http"));
        // The scheme is part of the origin: an https page is not the same origin as http.
        assert!(!p.allows(Some("https://gw:3000"), Some("gw:3000"), "http"));
        assert!(!p.allows(Some("http://gw:3000"), Some("gw:3000"), "https"));
    }

    #[test]
    fn allow_list_is_exact() {
        let p = OriginPolicy::new(["https://app.test/".to_string(), "http://localhost:8080".to_string()]);
        assert!(p.allows(Some("https://app.test"), Some("gw.test"), "http"));
        assert!(p.allows(Some("http://localhost:8080"), Some("gw.test"), "http"));
        assert!(!p.allows(Some("https://app.test.evil.test"), Some("gw.test"), "http"));
        assert!(!p.allows(Some("http://app.test"), Some("gw.test"), "http"));
        assert!(
            !p.allows(Some("https://gw.test"), Some("gw.test"), "https"),
            "the list replaces same-origin"
        );
    }
}
