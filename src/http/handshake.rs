//! What a socket keeps of the HTTP request that opened its session: selected headers, time,
//! address and URL, each bounded (the client chooses them).

use crate::protocol::handshake::Handshake;
use axum::http::{HeaderMap, Uri};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

const KEPT_HEADERS: [&str; 4] = ["host", "origin", "user-agent", "x-forwarded-for"];

/// Longest header value a socket keeps of its handshake, in bytes (a client chooses them).
const KEPT_HEADER_BYTES: usize = 1024;
/// Longest request URL a socket keeps of its handshake, in bytes.
const KEPT_URL_BYTES: usize = 2048;

/// `text` cut to at most `max` bytes, on a character boundary.
fn at_most(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub(super) fn handshake_info(headers: &HeaderMap, peer: SocketAddr, uri: &Uri) -> Handshake {
    let issued = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let url = uri.path_and_query().map(|p| p.as_str()).unwrap_or_default();
    Handshake {
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = headers.get(*name)?.to_str().ok()?;
                Some((*name, at_most(value, KEPT_HEADER_BYTES).into()))
            })
            .collect(),
        issued,
        address: peer.ip(),
        url: at_most(url, KEPT_URL_BYTES).into(),
    }
}
