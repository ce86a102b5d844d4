//! The express-session cookie: finding it in a `Cookie` header exactly as `cookie@0.7.2` does,
//! and checking its signature exactly as `cookie-signature` does.
//!
//! Each rule here decides whether a user is logged in, so each one follows Express, including
//! the surprising ones: the first cookie of a name wins, `%` decoding happens only when the
//! value contains `%` and falls back to the raw value, and `+` is never a space.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub use crate::protocol::handshake::decode_uri_component as decode_value;

/// The ordered secrets of `express-session`'s `secret` option: the first signs, every one
/// verifies. Kept as bytes (a JS string secret is its UTF-8 bytes).
#[derive(Clone)]
pub struct SessionSecrets(Vec<Vec<u8>>);

impl SessionSecrets {
    /// `None` when there is no secret at all: a gateway that cannot verify must not start.
    pub fn new(secrets: Vec<Vec<u8>>) -> Option<Self> {
        let secrets: Vec<_> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        (!secrets.is_empty()).then_some(SessionSecrets(secrets))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The cookie value express-session writes for `sid` (before percent-encoding).
    pub fn sign(&self, sid: &str) -> String {
        format!("s:{sid}.{}", signature(&self.0[0], sid))
    }
}

impl std::fmt::Debug for SessionSecrets {
    // Secrets never reach logs, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionSecrets({} redacted)", self.0.len())
    }
}

/// Why a request carries no usable session id. Mirrors express-session's `getcookie()` outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieRejection {
    #[error("no session cookie")]
    Missing,
    #[error("session cookie is not signed (no `s:` prefix)")]
    Unsigned,
    #[error("session cookie has no signature")]
    NoSignature,
    #[error("session cookie signature does not match any configured secret")]
    BadSignature,
    #[error("session cookie has an empty session id")]
    EmptySessionId,
}

impl CookieRejection {
    /// Short label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "no_cookie",
            Self::Unsigned => "unsigned_cookie",
            Self::NoSignature => "unsigned_cookie",
            Self::BadSignature => "bad_signature",
            Self::EmptySessionId => "unsigned_cookie",
        }
    }
}

/// base64 (standard alphabet, no `=`) of HMAC-SHA256(secret, sid): cookie-signature's `sign`.
fn signature(secret: &[u8], sid: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(sid.as_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The session id from the `Cookie` header fields of a request (joined with `; ` as Node does),
/// verified against the secrets.
pub fn session_id<'h>(
    cookie_headers: impl IntoIterator<Item = &'h str>,
    cookie_name: &str,
    secrets: &SessionSecrets,
) -> Result<String, CookieRejection> {
    let joined = cookie_headers.into_iter().collect::<Vec<_>>().join("; ");
    let raw = find_cookie(&joined, cookie_name).ok_or(CookieRejection::Missing)?;
    let value = decode_value(raw);
    if value.is_empty() {
        return Err(CookieRejection::Missing);
    }
    unsign(&value, secrets).map(str::to_owned)
}

/// The raw value of the first cookie named `name`, trimmed and unquoted but not decoded.
pub fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    if header.len() < 2 {
        return None;
    }
    let trim = |s: &'a str| s.trim_matches([' ', '\t']);
    // Only the first occurrence of a name counts: later ones are never looked at, even when the
    // first one turns out to be invalid.
    header
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| trim(key) == name)
        .map(|(_, value)| {
            let value = trim(value);
            if value.starts_with('"') && value.ends_with('"') {
                value.get(1..value.len().saturating_sub(1)).unwrap_or("")
            } else {
                value
            }
        })
}

/// `s:<sid>.<sig>` → `<sid>` when `<sig>` matches one of the secrets (tried in order, compared
/// in constant time).
pub fn unsign<'v>(value: &'v str, secrets: &SessionSecrets) -> Result<&'v str, CookieRejection> {
    let body = value.strip_prefix("s:").ok_or(CookieRejection::Unsigned)?;
    let (sid, sig) = body.rsplit_once('.').ok_or(CookieRejection::NoSignature)?;
    if sid.is_empty() {
        return Err(CookieRejection::EmptySessionId);
    }
    let matches = secrets.0.iter().any(|secret| {
        let expected = signature(secret, sid);
        // Length is not secret; the content comparison is constant-time.
        expected.len() == sig.len() && bool::from(expected.as_bytes().ct_eq(sig.as_bytes()))
    });
    if matches {
        Ok(sid)
    } else {
        Err(CookieRejection::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> SessionSecrets {
        SessionSecrets::new(list.iter().map(|s| s.as_bytes().to_vec()).collect()).unwrap()
    }

    /// Vectors from the reference (computed with Node and observed in real Set-Cookie headers).
    #[test]
    fn signs_like_cookie_signature() {
        let vectors = [
            (
                "secret",
                "my session id",
                "s:my session id.Jytwl6nuMV42lj6Ldd7aa4sboVs87ZnnCfYLCAm7OrU",
            ),
            (
                "keyboard cat",
                "2PUMl7jmX7ZVOHgwQyB9iLLsjHWB3bE0",
                "s:2PUMl7jmX7ZVOHgwQyB9iLLsjHWB3bE0.kl0tcY9ujszANxhfItRbRhVpBdAELZjWySD4WYN2Oxw",
            ),
            (
                "new-secret",
                "TP-ZzQd_qu72y-jd5kkeu5tE39LsTwPo",
                "s:TP-ZzQd_qu72y-jd5kkeu5tE39LsTwPo.5pu1qmjr0tEaTtiVhcQ+DgyGxCvakd002Dx98j5DcM0",
            ),
            (
                "new-secret",
                "CIzdCtwgfBGIhBtlj9NEHGqY-HYQhKEV",
                "s:CIzdCtwgfBGIhBtlj9NEHGqY-HYQhKEV.1L1YXFIllMAkyjwduwynCJJOPIfuZlrHYilwGNTFClQ",
            ),
            (
                "new-secret",
                "E6aRJZgS9FsCfZhA87xyRRbxO3yAfI_I",
                "s:E6aRJZgS9FsCfZhA87xyRRbxO3yAfI_I./W9PxUsLi4TvB/ZtR2FMTwUXb93B23uOR7y+NR6kuz0",
            ),
            (
                "new-secret",
                "2LSRYfxsWL6_Ytcl1GLd9kx9kTQxgj1r",
                "s:2LSRYfxsWL6_Ytcl1GLd9kx9kTQxgj1r.0ERvAPwYS+1d6rGuLI3wjtnHLq0jWeQxw0W7uuXFiNM",
            ),
            (
                "s",
                "u-0TwcUiBMlkoq7pTHevdmRxqBLJp3YD",
                "s:u-0TwcUiBMlkoq7pTHevdmRxqBLJp3YD.Fc+9TVUu0MzSz1kN0Tz+UWXtLaM+9+Scfz2wy2Y6GnA",
            ),
            (
                "old-secret",
                "CIzdCtwgfBGIhBtlj9NEHGqY-HYQhKEV",
                "s:CIzdCtwgfBGIhBtlj9NEHGqY-HYQhKEV.0K0snpB8S/ZtYV7Vj9ORy7txNksILw05ayuSoGkl+Z4",
            ),
            (
                "a-secret-with-minimum-length-of-32-characters",
                "pG9j0t0wP2s7fyHOyc8Xrn6gI1zm-piw",
                "s:pG9j0t0wP2s7fyHOyc8Xrn6gI1zm-piw.hktB+SmV8pFBuZnr0D31ccdLIl2fIorkfIO7lDvAFjA",
            ),
        ];
        for (secret, sid, signed) in vectors {
            assert_eq!(secrets(&[secret]).sign(sid), signed);
            assert_eq!(unsign(signed, &secrets(&[secret])), Ok(sid));
        }
        // The cookie-signature README vector (no `s:`).
        assert_eq!(
            signature(b"tobiiscool", "hello"),
            "DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
        );
    }

    #[test]
    fn every_secret_verifies_in_order() {
        let rotated = secrets(&["new-secret", "old-secret"]);
        let old = "s:CIzdCtwgfBGIhBtlj9NEHGqY-HYQhKEV.0K0snpB8S/ZtYV7Vj9ORy7txNksILw05ayuSoGkl+Z4";
        assert_eq!(unsign(old, &rotated), Ok("CIzdCtwgfBGIhBtlj9NEHGqY-HYQhKEV"));
        assert_eq!(
            unsign(old, &secrets(&["new-secret"])),
            Err(CookieRejection::BadSignature)
        );
    }

    #[test]
    fn rejects_what_express_rejects() {
        let s = secrets(&["new-secret"]);
        let good = "s:TP-ZzQd_qu72y-jd5kkeu5tE39LsTwPo.5pu1qmjr0tEaTtiVhcQ+DgyGxCvakd002Dx98j5DcM0";
        assert_eq!(
            unsign("TP-ZzQd_qu72y-jd5kkeu5tE39LsTwPo", &s),
            Err(CookieRejection::Unsigned)
        );
        assert_eq!(unsign("s:nodot", &s), Err(CookieRejection::NoSignature));
        assert_eq!(unsign("s:.abc", &s), Err(CookieRejection::EmptySessionId));
        let tampered = good.replace(".5pu1", ".AAAA");
        assert_eq!(unsign(&tampered, &s), Err(CookieRejection::BadSignature));
        assert_eq!(unsign(&format!("{good}x"), &s), Err(CookieRejection::BadSignature));
        // base64url is not the same alphabet: a `-` for `+` must fail.
        assert_eq!(unsign(&good.replace('+', "-"), &s), Err(CookieRejection::BadSignature));
        // The sid is opaque and split at the last dot.
        let dotted = s.sign("a.b.c");
        assert_eq!(unsign(&dotted, &s), Ok("a.b.c"));
    }

    #[test]
    fn parses_cookie_header_like_cookie_0_7() {
        let n = "connect.sid";
        assert_eq!(find_cookie("connect.sid=s%3Aabc.SIG", n), Some("s%3Aabc.SIG"));
        assert_eq!(find_cookie("connect.sid=\"s%3Aabc.SIG\"", n), Some("s%3Aabc.SIG"));
        assert_eq!(find_cookie("a=1; connect.sid=X; connect.sid=Y", n), Some("X"));
        assert_eq!(find_cookie("junk; connect.sid = X ;b=2", n), Some("X"));
        assert_eq!(find_cookie("\tconnect.sid=\tX\t", n), Some("X"));
        assert_eq!(find_cookie("connect.sid=\"", n), Some(""));
        assert_eq!(find_cookie("other=1", n), None);
        assert_eq!(find_cookie("x", n), None);
        assert_eq!(find_cookie("sid=a; connect.sid2=b", "sid"), Some("a"));
    }

    #[test]
    fn decodes_percent_only_when_present_and_valid() {
        assert_eq!(decode_value("s%3Aabc.SIG"), "s:abc.SIG");
        assert_eq!(decode_value("s:abc.SIG"), "s:abc.SIG");
        assert_eq!(decode_value("s%3Aa%2Bb.SIG"), "s:a+b.SIG");
        assert_eq!(decode_value("s:a+b.SIG"), "s:a+b.SIG");
        assert_eq!(decode_value("s%3Aab%zz.SIG"), "s%3Aab%zz.SIG");
        assert_eq!(decode_value("s%3Aab%2"), "s%3Aab%2");
        assert_eq!(decode_value("%E2%82%AC"), "€");
        assert_eq!(decode_value("%FF"), "%FF");
    }

    #[test]
    fn session_id_end_to_end() {
        let s = secrets(&["new-secret", "old-secret"]);
        let wire = "connect.sid=s%3AE6aRJZgS9FsCfZhA87xyRRbxO3yAfI_I.%2FW9PxUsLi4TvB%2FZtR2FMTwUXb93B23uOR7y%2BNR6kuz0";
        assert_eq!(
            session_id([wire], "connect.sid", &s).as_deref(),
            Ok("E6aRJZgS9FsCfZhA87xyRRbxO3yAfI_I")
        );
        // Split across two header fields (HTTP/2 style).
        assert_eq!(
            session_id(["a=1", wire], "connect.sid", &s).as_deref(),
            Ok("E6aRJZgS9FsCfZhA87xyRRbxO3yAfI_I")
        );
        // A bad first cookie is not rescued by a good second one.
        let two = format!("connect.sid=s%3Abad.sig; {wire}");
        assert_eq!(
            session_id([two.as_str()], "connect.sid", &s),
            Err(CookieRejection::BadSignature)
        );
        assert_eq!(session_id(["a=1"], "connect.sid", &s), Err(CookieRejection::Missing));
        assert_eq!(
            session_id(["connect.sid="], "connect.sid", &s),
            Err(CookieRejection::Missing)
        );
        assert_eq!(
            session_id(["connect.sid=s%3Aab%zz.SIG"], "connect.sid", &s),
            Err(CookieRejection::Unsigned)
        );
        assert!(SessionSecrets::new(vec![]).is_none());
        assert_eq!(format!("{s:?}"), "SessionSecrets(2 redacted)");
    }
}
