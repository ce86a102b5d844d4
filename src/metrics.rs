//! Counters and gauges, rendered in the Prometheus text format on `/metrics`.
//!
//! Labelled counters live in one small map of atomics behind a read-write lock: a count takes
//! the read side (shared by every worker) and one atomic add; only a label's first count takes
//! the write side.

use parking_lot::RwLock;
use std::collections::BTreeMap;
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

#[derive(Debug, Default)]
pub struct Metrics {
    /// Engine connections currently open.
    pub connections: AtomicI64,
    /// Accepted TCP connections currently open (upgraded WebSockets included).
    pub tcp_connections: AtomicI64,
    /// Messages received from clients (Engine.IO `message` packets).
    pub messages_in: AtomicU64,
    /// Packets queued to local sockets by broadcasts (one add per broadcast, not per socket).
    pub broadcast_deliveries: AtomicU64,
    /// 1 while the cluster adapter's pub/sub connection is subscribed.
    pub pubsub_up: AtomicI64,
    /// Whether Redis sends the keyspace events revocation needs (1, 0, or -1 unknown).
    pub keyspace_notifications: AtomicI64,
    labelled: RwLock<BTreeMap<(&'static str, &'static str), AtomicU64>>,
}

/// Help text for each counter family, in the order they are rendered.
const FAMILIES: &[(&str, &str)] = &[
    (
        "wsgate_handshakes_total",
        "Handshakes by outcome (upgraded: a WebSocket session, polling: a polling session)",
    ),
    (
        "wsgate_accept_errors_total",
        "Failed accepts (out_of_descriptors: the open-file limit is reached)",
    ),
    (
        "wsgate_connections_refused_total",
        "Connections closed at accept, by limit (max_connections, pending_per_ip)",
    ),
    (
        "wsgate_polling_refused_total",
        "Requests on an existing session refused, by reason (unknown_sid hints at a balancer that is not sticky)",
    ),
    (
        "wsgate_upgrades_total",
        "Polling sessions' upgrades to WebSocket, by outcome",
    ),
    ("wsgate_auth_total", "Namespace connects by authentication outcome"),
    ("wsgate_disconnects_total", "Closed engine connections by reason"),
    (
        "wsgate_malformed_packets_total",
        "Malformed Socket.IO packets from clients, by kind (socketio, invalid_state, unexpected_ack)",
    ),
    (
        "wsgate_unhandled_events_total",
        "Client events that nothing handles (dropped; an ack request is answered with an error)",
    ),
    (
        "wsgate_invalid_namespace_total",
        "CONNECTs to namespaces that are not served",
    ),
    (
        "wsgate_adapter_messages_total",
        "Cluster adapter messages handled, by type",
    ),
    (
        "wsgate_adapter_dropped_total",
        "Cluster adapter messages dropped, by reason",
    ),
    (
        "wsgate_redis_pubsub_total",
        "Cluster adapter pub/sub connection events (lost, recovered)",
    ),
    (
        "wsgate_revocations_total",
        "Sessions whose sockets were closed on a keyspace event (deleted, expired, evicted, renamed) or a rewrite (no_user, user_changed)",
    ),
    (
        "wsgate_inbound_events_total",
        "Client events by outcome: stored (in the inbound stream), store_unavailable, queue_full, not_forwarded, rate_limited, abuse_disconnect",
    ),
    (
        "wsgate_room_requests_total",
        "Client join/leave requests: joined, left, forbidden, too_many_rooms",
    ),
    (
        "wsgate_session_touches_total",
        "Session TTLs extended after socket activity (--touch-sessions), by outcome (extended, gone, store_unavailable)",
    ),
    (
        "wsgate_revalidations_total",
        "Sessions found invalid on revalidation (or skipped), by reason",
    ),
];

impl Metrics {
    pub fn inc(&self, family: &'static str, label: &'static str) {
        debug_assert!(FAMILIES.iter().any(|(f, _)| *f == family), "{family}");
        if let Some(count) = self.labelled.read().get(&(family, label)) {
            count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.labelled
            .write()
            .entry((family, label))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, family: &'static str, label: &'static str) -> u64 {
        self.labelled
            .read()
            .get(&(family, label))
            .map_or(0, |count| count.load(Ordering::Relaxed))
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
                crate::transport::OVERSIZED_DROPS.load(Ordering::Relaxed) as i64,
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
        let labelled = self.labelled.read();
        for (family, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
            for ((f, label), v) in labelled.iter() {
                if f == family {
                    let v = v.load(Ordering::Relaxed);
                    let _ = writeln!(out, "{family}{{reason=\"{label}\"}} {v}");
                }
            }
        }
        out
    }
}
