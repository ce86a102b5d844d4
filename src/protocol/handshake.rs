//! What a client sent when its engine connection was opened, as a socket keeps it: selected
//! headers, time, address and URL, and the query parsed from it. Pure: no I/O, no HTTP types.

use std::borrow::Cow;

/// What the client sent when its engine connection was opened (the `handshake` of a Node
/// socket, minus cookies: they never leave this process). Stored compactly: it lives as long as
/// the connection, and the query and time are derived only when a peer asks (`fetchSockets`).
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Selected request headers (`host`, `origin`, `user-agent`, `x-forwarded-for`).
    pub headers: Box<[(&'static str, Box<str>)]>,
    /// Epoch milliseconds of the handshake.
    pub issued: u64,
    pub address: std::net::IpAddr,
    /// Request path and query, e.g. `/socket.io/?EIO=4&transport=websocket`.
    pub url: Box<str>,
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake {
            headers: Box::new([]),
            issued: 0,
            address: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            url: "".into(),
        }
    }
}

impl Handshake {
    /// The query parameters of `url`, decoded.
    pub fn query(&self) -> Vec<(String, String)> {
        parse_query(self.url.split_once('?').map_or("", |(_, q)| q))
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// `a=1&b=x%20y` → pairs, percent-decoded (`+` as space, as in a URL query). Borrowed where
/// nothing needs decoding (every handshake's `EIO=4&transport=websocket`).
pub fn parse_query(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    fn decode(s: &str) -> Cow<'_, str> {
        if !s.contains(['+', '%']) {
            return s.into();
        }
        decode_uri_component(&s.replace('+', " ")).into_owned().into()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// `decodeURIComponent` when the value contains `%`, keeping the raw value when that would
/// throw (a `%` without two hex digits, or bytes that are not UTF-8). `+` stays `+`.
pub fn decode_uri_component(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                _ => return Cow::Borrowed(raw),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_split_and_decoded() {
        let pairs = parse_query("EIO=4&transport=websocket&name=a%20b+c&flag&=x");
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        assert_eq!(
            pairs,
            [
                ("EIO", "4"),
                ("transport", "websocket"),
                ("name", "a b c"),
                ("flag", ""),
                ("", "x")
            ]
        );
        assert!(matches!(parse_query("EIO=4")[0].1, Cow::Borrowed(_)));
    }
}
