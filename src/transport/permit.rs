//! A connection's place under the node's connection cap, held by the accepted connection and
//! by the WebSocket it is upgraded to (its session keeps it for as long as it lives).

use crate::metrics::Metrics;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// One place under `--max-connections`, counted in `wsgate_tcp_connections` while any clone of
/// it lives.
#[derive(Clone)]
pub struct ConnectionPermit(#[allow(dead_code)] Arc<Place>);

struct Place {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl ConnectionPermit {
    /// Takes the place `permit` grants, counting it.
    pub fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.tcp_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionPermit(Arc::new(Place {
            _permit: permit,
            metrics,
        }))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.metrics.tcp_connections.fetch_sub(1, Ordering::Relaxed);
    }
}
