//! Wire protocol codecs: pure functions over bytes and strings, no I/O.
//!
//! `engineio` frames packets on a WebSocket, `socketio` encodes the packets inside them. Nothing
//! here knows about connections, sessions, rooms or Redis, so all of it can be unit-tested and
//! fuzzed in isolation.

pub mod engineio;
pub mod socketio;

use base64::Engine as _;
use rand::RngCore as _;

/// A fresh 20-character id of `[A-Za-z0-9_-]`, the shape of engine.io's `base64id` (15 bytes of
/// base64url). Used for Engine.IO session ids and Socket.IO socket ids, which are unrelated.
/// Node's sharded adapter recognises socket-id rooms by this length.
pub fn new_id() -> String {
    let mut raw = [0u8; 15];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_have_node_shape_and_differ() {
        let a = super::new_id();
        assert_eq!(a.len(), 20);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, super::new_id());
    }
}
