//! What a client may do on its own: join and leave rooms (an allow-list of patterns), and how
//! many events and bytes it may send (a token bucket per connection, and one per user across
//! all that user's sockets on the node).

use serde_json::Value;
use std::time::Instant;

/// The client-facing limits and the reserved room events.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    /// The event a client joins a room with (`["join", "<room>"]`).
    pub join_event: String,
    /// The event a client leaves a room with.
    pub leave_event: String,
    /// Rooms a client may join; none: no room may be joined.
    pub allow_join: Vec<RoomPattern>,
    /// Rooms a client may join on its own, at most (rooms joined by the server or a backend are
    /// not counted).
    pub max_rooms_per_socket: usize,
    /// Longest room name a client may ask for, in bytes.
    pub max_room_name_bytes: usize,
    /// Sustained events per second per connection.
    pub events_per_second: f64,
    /// Events a connection may send at once.
    pub event_burst: f64,
    /// Largest client event, in bytes (its JSON plus attachments).
    pub max_event_bytes: usize,
    /// Sustained events per second of one user across its sockets on this node (`None`: no
    /// limit); bursts of twice as many.
    pub events_per_second_per_user: Option<f64>,
    /// Sustained event bytes per second of one user across its sockets on this node (`None`: no
    /// limit); bursts of twice as many.
    pub event_bytes_per_second_per_user: Option<f64>,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            join_event: "join".into(),
            leave_event: "leave".into(),
            allow_join: Vec::new(),
            max_rooms_per_socket: 100,
            max_room_name_bytes: 256,
            events_per_second: 50.0,
            event_burst: 100.0,
            max_event_bytes: 64 << 10,
            events_per_second_per_user: Some(200.0),
            event_bytes_per_second_per_user: Some(f64::from(1u32 << 20)),
        }
    }
}

/// A room pattern: literal text, `*` (any run of characters) and `{user}` (the socket's user,
/// matched literally, so a user named `*` matches only `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPattern(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Any,
    User,
}

impl RoomPattern {
    pub fn parse(pattern: &str) -> Self {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = pattern;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{user}") {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::User);
                rest = after;
            } else if c == '*' {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Any);
                rest = &rest[1..];
            } else {
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        RoomPattern(parts)
    }

    /// Whether `room` matches for a socket whose user is `user` (its room form: strings as they
    /// are, anything else as JSON). Linear in the room's length: the text between stars is
    /// found leftmost, once each, which is all a `*`-only pattern needs (no backtracking).
    pub fn matches(&self, room: &str, user: &str) -> bool {
        // The literal runs between stars, with the user filled in.
        let mut runs: Vec<String> = vec![String::new()];
        for part in &self.0 {
            match part {
                Part::Text(t) => runs.last_mut().map_or((), |r| r.push_str(t)),
                Part::User => runs.last_mut().map_or((), |r| r.push_str(user)),
                Part::Any => runs.push(String::new()),
            }
        }
        let (first, rest) = runs.split_first().map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
        let Some((last, middle)) = rest.split_last() else {
            return room == first;
        };
        if room.len() < first.len() + last.len() || !room.starts_with(first) || !room.ends_with(last.as_str()) {
            return false;
        }
        let mut between = &room[first.len()..room.len() - last.len()];
        for run in middle {
            match between.find(run.as_str()) {
                Some(at) => between = &between[at + run.len()..],
                None => return false,
            }
        }
        true
    }
}

/// The user as room names show it.
pub fn user_text(user: &Value) -> String {
    match user {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Events a connection may still send: refilled at the sustained rate, capped at the burst.
/// Twelve bytes: it lives in every connection's task.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f32,
    /// Milliseconds since [`epoch`] at the last refill.
    at_ms: u32,
    /// Events refused since the last one allowed.
    pub refused_in_a_row: u16,
}

/// A process-wide start, so a refill time fits in 32 bits (49 days; it wraps harmlessly).
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u32 {
    epoch().elapsed().as_millis() as u32
}

impl TokenBucket {
    pub fn new(burst: f64) -> Self {
        TokenBucket {
            tokens: burst as f32,
            at_ms: now_ms(),
            refused_in_a_row: 0,
        }
    }

    /// The tokens there are now (refilled at `per_second` up to `burst`).
    fn peek(&mut self, per_second: f64, burst: f64) -> f64 {
        let now = now_ms();
        let elapsed = f64::from(now.wrapping_sub(self.at_ms)) / 1000.0;
        self.tokens = (f64::from(self.tokens) + elapsed * per_second).min(burst) as f32;
        self.at_ms = now;
        f64::from(self.tokens)
    }

    /// Takes `n` tokens (after [`TokenBucket::peek`] said there are).
    fn take(&mut self, n: f64, per_second: f64, burst: f64) {
        let left = self.peek(per_second, burst) - n;
        self.tokens = left.max(0.0) as f32;
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, per_second: f64, burst: f64) -> bool {
        let now = now_ms();
        let elapsed = f64::from(now.wrapping_sub(self.at_ms)) / 1000.0;
        self.tokens = (f64::from(self.tokens) + elapsed * per_second).min(burst) as f32;
        self.at_ms = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
            false
        }
    }
}

/// What each user may still send on this node: its events and bytes across all its sockets.
#[derive(Default)]
pub struct UserBudgets {
    by_user: dashmap::DashMap<Box<str>, (TokenBucket, TokenBucket)>,
    /// Users added since the last prune of idle entries.
    added: std::sync::atomic::AtomicUsize,
}

impl UserBudgets {
    /// Takes one event of `bytes` from `user`'s budgets; false (taking nothing) when either is
    /// spent.
    pub fn allow(&self, policy: &ClientPolicy, user: &str, bytes: usize) -> bool {
        let (events_rate, bytes_rate) = (
            policy.events_per_second_per_user,
            policy.event_bytes_per_second_per_user,
        );
        if events_rate.is_none() && bytes_rate.is_none() {
            return true;
        }
        let mut entry = match self.by_user.get_mut(user) {
            Some(entry) => entry,
            None => {
                if self.added.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1024 == 1023 {
                    self.prune();
                }
                let burst = |rate: Option<f64>| rate.map_or(0.0, |r| 2.0 * r);
                self.by_user.entry(user.into()).or_insert_with(|| {
                    (
                        TokenBucket::new(burst(events_rate)),
                        TokenBucket::new(burst(bytes_rate)),
                    )
                })
            }
        };
        let (events, byte_budget) = entry.value_mut();
        let events_ok = events_rate.is_none_or(|r| events.peek(r, 2.0 * r) >= 1.0);
        let bytes_ok = bytes_rate.is_none_or(|r| byte_budget.peek(r, 2.0 * r) >= bytes as f64);
        if !(events_ok && bytes_ok) {
            return false;
        }
        if let Some(r) = events_rate {
            events.take(1.0, r, 2.0 * r);
        }
        if let Some(r) = bytes_rate {
            byte_budget.take(bytes as f64, r, 2.0 * r);
        }
        true
    }

    /// Drops the budgets of users not heard from in a minute (they start full again).
    fn prune(&self) {
        let now = now_ms();
        self.by_user
            .retain(|_, (events, _)| now.wrapping_sub(events.at_ms) < 60_000);
    }
}

/// The size of a client event as it counts against the budgets: its JSON plus attachments.
pub fn event_bytes(data: Option<&Value>, attachments: &[bytes::Bytes]) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    if let Some(data) = data {
        let _ = serde_json::to_writer(&mut count, data);
    }
    count.0 + attachments.iter().map(bytes::Bytes::len).sum::<usize>()
}

/// Why a client event was not taken, as its ack says: `{"ok":false,"error":"…"}`. One set for
/// the gateway's own refusals and the event hooks' (the inbound stream writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Past `--max-events-per-second`.
    RateLimited,
    /// A room request no `--allow-join` pattern allows.
    Forbidden,
    /// Past `--max-rooms-per-socket`.
    TooManyRooms,
    /// Not a room name, or longer than `--max-room-name-bytes`.
    InvalidRoom,
    /// Larger than `--max-event-bytes`.
    TooLarge,
    /// Nothing handles the event.
    Unhandled,
    /// The inbound stream's Redis did not take it.
    StoreUnavailable,
    /// The inbound writer's queue is full.
    QueueFull,
    /// Not an event `--inbound-events` forwards.
    NotForwarded,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::Forbidden => "forbidden",
            Refusal::TooManyRooms => "too_many_rooms",
            Refusal::InvalidRoom => "invalid_room",
            Refusal::TooLarge => "too_large",
            Refusal::Unhandled => "unhandled",
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::QueueFull => "queue_full",
            Refusal::NotForwarded => "not_forwarded",
        }
    }

    /// The ack a client gets: `{"ok":false,"error":"…"}`.
    pub fn ack(self) -> Value {
        serde_json::json!({ "ok": false, "error": self.as_str() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_literally_around_wildcards_and_the_user() {
        let public = RoomPattern::parse("public:*");
        assert!(public.matches("public:lobby", "42"));
        assert!(public.matches("public:", "42"));
        assert!(!public.matches("private:lobby", "42"));
        let inbox = RoomPattern::parse("inbox:{user}");
        assert!(inbox.matches("inbox:42", "42"));
        assert!(!inbox.matches("inbox:43", "42"));
        assert!(!inbox.matches("inbox:anything", "*"), "a user named * is no wildcard");
        assert!(inbox.matches("inbox:*", "*"));
        let mixed = RoomPattern::parse("team:*:{user}:*");
        assert!(mixed.matches("team:a:42:b", "42"));
        assert!(!mixed.matches("team:a:43:b", "42"));
        assert!(mixed.matches("team::42:", "42"));
        let overlapping = RoomPattern::parse("a*a");
        assert!(
            !overlapping.matches("a", ""),
            "prefix and suffix may not share a character"
        );
        assert!(overlapping.matches("aa", ""));
        assert!(RoomPattern::parse("*").matches("", ""));
        assert!(RoomPattern::parse("x*y*z").matches("xyz", ""));
        assert!(!RoomPattern::parse("x*y*z").matches("xzy", ""));
    }

    /// `org:*:team:*:chat` against a 300 KB name of colons once took the node 30 s (the
    /// matcher backtracked at every star); the leftmost search answers in one pass.
    #[test]
    fn matching_never_backtracks() {
        let pattern = RoomPattern::parse("org:*:team:*:chat");
        let room = format!("org:{}", ":".repeat(300_000));
        assert!(!pattern.matches(&room, ""));
        let room = format!("org:{}:team::chat", "team:".repeat(60_000));
        assert!(pattern.matches(&room, ""));
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(3.0);
        assert!((0..3).all(|_| bucket.allow(1.0, 3.0)));
        assert!(!bucket.allow(1.0, 3.0));
        assert_eq!(bucket.refused_in_a_row, 1);
    }
}
