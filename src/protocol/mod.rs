//! Wire protocol codecs: pure functions over bytes and strings, no I/O.
//!
//! `engineio` frames packets on a WebSocket, `socketio` encodes the packets inside them. Nothing
//! here knows about connections, sessions, rooms or Redis, so all of it can be unit-tested and
//! fuzzed in isolation.

pub mod adapter;
pub mod classic;
pub mod engineio;
pub mod handshake;
pub mod sharded;
pub mod socketio;
pub mod streams;

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

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `Date.prototype.toString()` in UTC of epoch milliseconds, as Node peers show a handshake's
/// `time` (e.g. `Sat Nov 21 2026 12:28:07 GMT+0000 (Coordinated Universal Time)`).
pub fn js_date_string(epoch_ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = epoch_ms / 1000;
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{} {} {:02} {} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        year,
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn js_date_string_matches_node() {
        // new Date(1795264087848).toString() with TZ=UTC
        assert_eq!(
            super::js_date_string(1_795_264_087_848),
            "Sat Nov 21 2026 12:28:07 GMT+0000 (Coordinated Universal Time)"
        );
        assert_eq!(
            super::js_date_string(0),
            "Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)"
        );
    }

    #[test]
    fn ids_have_node_shape_and_differ() {
        let a = super::new_id();
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, super::new_id());
    }
}
