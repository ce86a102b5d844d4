//! Counters and gauges, rendered in the Prometheus text format on `/metrics`.
//!
//! Every labelled counter family is declared once below, with its help text and every label it
//! can have, as an enum: a label or family that does not exist does not compile. Counts are one
//! fixed array of atomics indexed by (family, label), so counting takes no lock and allocates
//! nothing. The layers that own a reason (a close reason, an auth error, an adapter error)
//! convert it into its family's label; this module imports none of them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Lets one line a minute through for a kind of event (the caller logs the rest at debug), so a
/// flood of refusals or accept errors cannot flood the log.
#[derive(Debug, Default)]
pub struct OncePerMinute {
    minute: AtomicU64,
}

impl OncePerMinute {
    /// True for the first call in each wall-clock minute.
    pub fn first_this_minute(&self) -> bool {
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() / 60)
            .unwrap_or(0);
        self.minute.swap(minute, Ordering::Relaxed) != minute
    }
}

/// A label of one counter family.
pub trait Label: Copy {
    /// The family's metric name.
    const FAMILY: &'static str;
    /// This label's place in the node's array of counts.
    fn slot(self) -> usize;
    /// The label's value in `reason="…"`.
    fn as_str(self) -> &'static str;
}

macro_rules! families {
    ($( $(#[$doc:meta])* $ty:ident $name:literal $help:literal { $($variant:ident = $label:literal),+ $(,)? } )+) => {
        $(
            $(#[$doc])*
            #[doc = concat!("\n\nLabels of `", $name, "`: ", $help, ".")]
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub enum $ty { $($variant),+ }

            impl Label for $ty {
                const FAMILY: &'static str = $name;
                fn slot(self) -> usize {
                    OFFSETS[Family::$ty as usize] + self as usize
                }
                fn as_str(self) -> &'static str {
                    match self { $($ty::$variant => $label),+ }
                }
            }
        )+

        #[allow(clippy::enum_variant_names)]
        enum Family { $($ty),+ }

        /// Name, help and labels of every family, in the order they are rendered.
        const FAMILIES: &[(&str, &str, &[&str])] = &[$(($name, $help, &[$($label),+])),+];
    };
}

/// Where each family's counts start in the array.
const OFFSETS: [usize; FAMILIES.len()] = {
    let mut offsets = [0; FAMILIES.len()];
    let mut i = 1;
    while i < FAMILIES.len() {
        offsets[i] = offsets[i - 1] + FAMILIES[i - 1].2.len();
        i += 1;
    }
    offsets
};
/// How many (family, label) counts there are.
const SLOTS: usize = OFFSETS[FAMILIES.len() - 1] + FAMILIES[FAMILIES.len() - 1].2.len();

families! {
    Handshake "wsgate_handshakes_total" "Handshakes by outcome (upgraded: a WebSocket session, polling: a polling session)" {
        Upgraded = "upgraded", Polling = "polling", BadRequest = "bad_request", OriginRejected = "origin_rejected",
        AuthRejected = "auth_rejected", OverCapacity = "over_capacity", LookupsPending = "lookups_pending",
        RateLimited = "rate_limited", RateLimitedAddress = "rate_limited_address", PendingFull = "pending_full",
        PendingFullAddress = "pending_full_address",
    }
    AcceptError "wsgate_accept_errors_total" "Failed accepts (out_of_descriptors: the open-file limit is reached)" {
        OutOfDescriptors = "out_of_descriptors", Other = "other",
    }
    ConnectionRefused "wsgate_connections_refused_total" "Connections closed at accept, by limit (max_connections, pending_per_ip)" {
        MaxConnections = "max_connections", PendingPerIp = "pending_per_ip",
    }
    PollingRefused "wsgate_polling_refused_total" "Requests on an existing session refused, by reason (unknown_sid hints at a balancer that is not sticky)" {
        UnknownSid = "unknown_sid", TransportMismatch = "transport_mismatch", OriginRejected = "origin_rejected",
        PayloadTooLarge = "payload_too_large", BinaryBody = "binary_body", BadMethod = "bad_method",
        SessionClosed = "session_closed", OverlappingGet = "overlapping_get", OverlappingPost = "overlapping_post",
        MalformedPayload = "malformed_payload", CookieMismatch = "cookie_mismatch",
    }
    Upgrade "wsgate_upgrades_total" "Polling sessions' upgrades to WebSocket, by outcome" {
        Upgraded = "upgraded", NotPolling = "not_polling", Timeout = "timeout", Aborted = "aborted",
    }
    Auth "wsgate_auth_total" "Namespace connects by authentication outcome" {
        Ok = "ok", OutageGrace = "outage_grace", NoCookie = "no_cookie", UnsignedCookie = "unsigned_cookie",
        BadSignature = "bad_signature", NoSession = "no_session", BadSessionRecord = "bad_session_record",
        NoUser = "no_user", StoreUnavailable = "store_unavailable", TooManyConnections = "too_many_connections",
    }
    Disconnect "wsgate_disconnects_total" "Closed engine connections by reason" {
        ClientClose = "client_close", TransportClose = "transport_close", TransportError = "transport_error",
        PingTimeout = "ping_timeout", ConnectTimeout = "connect_timeout", PayloadTooLarge = "payload_too_large",
        ParseError = "parse_error", SlowConsumer = "slow_consumer", ServerDisconnect = "server_disconnect",
        ShuttingDown = "shutting_down",
    }
    Malformed "wsgate_malformed_packets_total" "Malformed Socket.IO packets from clients, by kind (socketio, invalid_state, unexpected_ack, ...)" {
        Socketio = "socketio", InvalidState = "invalid_state", UnexpectedAck = "unexpected_ack",
        IncompleteBinary = "incomplete_binary", BinaryNotJoined = "binary_not_joined",
        AttachmentsTooLarge = "attachments_too_large",
    }
    UnhandledEvent "wsgate_unhandled_events_total" "Client events that nothing handles (dropped; an ack request is answered with an error)" {
        Dropped = "dropped",
    }
    InvalidNamespace "wsgate_invalid_namespace_total" "CONNECTs to namespaces that are not served" {
        NotServed = "not_served",
    }
    AdapterMessage "wsgate_adapter_messages_total" "Cluster adapter messages handled, by type" {
        Broadcast = "broadcast", BroadcastWithAck = "broadcast_with_ack", Sockets = "sockets", AllRooms = "all_rooms",
        RemoteJoin = "remote_join", RemoteLeave = "remote_leave", RemoteDisconnect = "remote_disconnect",
        RemoteFetch = "remote_fetch", ServerSideEmit = "server_side_emit", BroadcastClientCount = "broadcast_client_count",
        BroadcastAck = "broadcast_ack", SocketsJoin = "sockets_join", SocketsLeave = "sockets_leave",
        DisconnectSockets = "disconnect_sockets", FetchSockets = "fetch_sockets", Response = "response",
    }
    AdapterDrop "wsgate_adapter_dropped_total" "Cluster adapter messages dropped, by reason" {
        NotMsgpack = "not_msgpack", NotJson = "not_json", BadShape = "bad_shape", UnknownType = "unknown_type",
        TooLarge = "too_large", TooManyElements = "too_many_elements", ResponseQueueFull = "response_queue_full",
        ReadsBusy = "reads_busy", PublishFailed = "publish_failed", TooManyOperations = "too_many_operations",
    }
    PubSubEvent "wsgate_redis_pubsub_total" "Cluster adapter pub/sub connection events (lost, recovered)" {
        Lost = "lost", Recovered = "recovered",
    }
    Revoked "wsgate_revocations_total" "Sessions whose sockets were closed on a store event (deleted, expired, evicted, renamed) or a rewrite (no_user, user_changed)" {
        Deleted = "deleted", Expired = "expired", Evicted = "evicted", Renamed = "renamed", Moved = "moved",
        SessionGone = "session_gone", NoUser = "no_user", UserChanged = "user_changed",
    }
    InboundEvent "wsgate_inbound_events_total" "Client events by outcome: stored (in the inbound stream), store_unavailable, queue_full, not_forwarded, rate_limited, user_rate_limited, too_large, abuse_disconnect" {
        Stored = "stored", StoreUnavailable = "store_unavailable", QueueFull = "queue_full",
        NotForwarded = "not_forwarded", RateLimited = "rate_limited", UserRateLimited = "user_rate_limited",
        TooLarge = "too_large", AbuseDisconnect = "abuse_disconnect",
    }
    RoomRequest "wsgate_room_requests_total" "Client join/leave requests: joined, left, forbidden, reserved (a room wsgate assigns), invalid_room, too_many_rooms" {
        Joined = "joined", Left = "left", Forbidden = "forbidden", Reserved = "reserved", InvalidRoom = "invalid_room",
        TooManyRooms = "too_many_rooms",
    }
    SessionTouch "wsgate_session_touches_total" "Session TTLs extended after socket activity (--touch-sessions), by outcome (extended, gone, store_unavailable)" {
        Extended = "extended", Gone = "gone", StoreUnavailable = "store_unavailable",
    }
    Revalidation "wsgate_revalidations_total" "Sessions found invalid on revalidation (or skipped), by reason" {
        SessionGone = "session_gone", NoUser = "no_user", UserChanged = "user_changed",
        StoreUnavailable = "store_unavailable",
    }
    Recovery "wsgate_recoveries_total" "Reconnects asking for connection state recovery, by outcome (recovered; else a fresh socket: expired, trimmed, too_many, refused_auth, bad_offset, unavailable)" {
        Recovered = "recovered", Expired = "expired", Trimmed = "trimmed", TooMany = "too_many",
        RefusedAuth = "refused_auth", BadOffset = "bad_offset", Unavailable = "unavailable",
    }
    RecoveryReplay "wsgate_recovery_replayed_total" "Events replayed to recovered sockets" {
        Events = "events",
    }
    RecoveryRecord "wsgate_recovery_records_total" "Recovery session records (sio:session:<pid>) written, deleted, or not (failed: Redis refused; queue_full: dropped)" {
        Written = "written", Deleted = "deleted", Failed = "failed", QueueFull = "queue_full",
    }
}

#[derive(Debug)]
pub struct Metrics {
    /// Engine connections currently open.
    pub connections: AtomicI64,
    /// Accepted TCP connections currently open (upgraded WebSockets included).
    pub tcp_connections: AtomicI64,
    /// Messages received from clients (Engine.IO `message` packets).
    pub messages_in: AtomicU64,
    /// Packets queued to local sockets by broadcasts (one add per broadcast, not per socket).
    pub broadcast_deliveries: AtomicU64,
    /// Messages dropped for one client because each alone was larger than its queue's cap.
    pub oversized_drops: AtomicU64,
    /// 1 while the cluster adapter's pub/sub connection is subscribed.
    pub pubsub_up: AtomicI64,
    /// Whether Redis sends the keyspace events revocation needs (1, 0, or -1 unknown).
    pub keyspace_notifications: AtomicI64,
    labelled: Box<[AtomicU64]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: AtomicI64::new(0),
            tcp_connections: AtomicI64::new(0),
            messages_in: AtomicU64::new(0),
            broadcast_deliveries: AtomicU64::new(0),
            oversized_drops: AtomicU64::new(0),
            pubsub_up: AtomicI64::new(0),
            keyspace_notifications: AtomicI64::new(0),
            labelled: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Metrics {
    /// Counts one event of `label`'s family.
    pub fn inc(&self, label: impl Label) {
        self.labelled[label.slot()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` events of `label`'s family.
    pub fn add(&self, label: impl Label, n: u64) {
        self.labelled[label.slot()].fetch_add(n, Ordering::Relaxed);
    }

    /// How many events of `label` were counted.
    pub fn get(&self, label: impl Label) -> u64 {
        self.labelled[label.slot()].load(Ordering::Relaxed)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let unlabelled: [(&str, &str, &str, i64); 7] = [
            (
                "wsgate_connections",
                "gauge",
                "Open engine connections",
                self.connections.load(Ordering::Relaxed),
            ),
            (
                "wsgate_tcp_connections",
                "gauge",
                "Accepted TCP connections open, under --max-connections (WebSockets included)",
                self.tcp_connections.load(Ordering::Relaxed),
            ),
            (
                "wsgate_messages_in_total",
                "counter",
                "Messages received from clients",
                self.messages_in.load(Ordering::Relaxed) as i64,
            ),
            (
                "wsgate_broadcast_deliveries_total",
                "counter",
                "Packets queued to local sockets by broadcasts (from any node, emitter or this one)",
                self.broadcast_deliveries.load(Ordering::Relaxed) as i64,
            ),
            (
                "wsgate_oversized_drops_total",
                "counter",
                "Messages dropped for one client because each alone was larger than --max-queue-bytes",
                self.oversized_drops.load(Ordering::Relaxed) as i64,
            ),
            (
                "wsgate_keyspace_notifications",
                "gauge",
                "1 when Redis sends the keyspace events that close sockets at logout within a second, 0 when not (revalidation only), -1 unknown",
                self.keyspace_notifications.load(Ordering::Relaxed),
            ),
            (
                "wsgate_redis_pubsub_up",
                "gauge",
                "1 while the cluster adapter is subscribed",
                self.pubsub_up.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in unlabelled {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        for (family, (name, help, labels)) in FAMILIES.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            // Labels that never counted are left out, as before the counts were typed.
            for (i, label) in labels.iter().enumerate() {
                let v = self.labelled[OFFSETS[family] + i].load(Ordering::Relaxed);
                if v > 0 {
                    let _ = writeln!(out, "{name}{{reason=\"{label}\"}} {v}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_has_its_own_count() {
        let metrics = Metrics::default();
        metrics.inc(Upgrade::Aborted);
        metrics.inc(Upgrade::Aborted);
        metrics.inc(Revalidation::StoreUnavailable);
        assert_eq!(metrics.get(Upgrade::Aborted), 2);
        assert_eq!(metrics.get(Upgrade::Timeout), 0);
        assert_eq!(metrics.get(Revalidation::StoreUnavailable), 1);
        let text = metrics.render();
        assert!(text.contains("wsgate_upgrades_total{reason=\"aborted\"} 2\n"));
        assert!(text.contains("wsgate_revalidations_total{reason=\"store_unavailable\"} 1\n"));
        assert!(
            !text.contains("wsgate_handshakes_total{reason="),
            "never counted: not rendered"
        );
        assert_eq!(Revalidation::FAMILY, "wsgate_revalidations_total");
        assert_eq!(Revalidation::StoreUnavailable.as_str(), "store_unavailable");
    }
}
