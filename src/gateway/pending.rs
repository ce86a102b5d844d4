//! Sessions that have not connected a namespace yet (anonymous handshakes, and authenticated
//! ones whose CONNECT has not arrived): their own small budget, node-wide and per client
//! address, apart from the capacity connected sockets use, so no address can fill a node with
//! sessions that hold nothing but a place.
//!
//! Owns the counts and the slots that hold them. The HTTP layer takes a slot before it opens a
//! session; the connection gives it back at its first CONNECT that succeeds, or when it ends.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The pending budget of one node.
#[derive(Debug)]
pub struct PendingSessions {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a session could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingFull {
    /// The node's budget (`--max-pending-sessions`) is spent.
    Node,
    /// This address's budget (`--max-pending-sessions-per-ip`) is spent.
    Address,
}

/// One session's place in the pending budget; given back when dropped.
#[derive(Debug)]
pub struct PendingSlot {
    budget: Arc<PendingSessions>,
    ip: IpAddr,
}

impl PendingSessions {
    /// At most `max_total` pending sessions on the node and `max_per_ip` from one address
    /// (`usize::MAX`: no limit).
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(PendingSessions {
            max_total,
            max_per_ip,
            counts: Mutex::default(),
        })
    }

    /// A place for a new session from `ip`, if both budgets have one.
    pub fn try_enter(self: &Arc<Self>, ip: IpAddr) -> Result<PendingSlot, PendingFull> {
        let mut counts = self.counts.lock();
        if counts.total >= self.max_total {
            return Err(PendingFull::Node);
        }
        let here = counts.per_ip.entry(ip).or_default();
        if *here >= self.max_per_ip {
            return Err(PendingFull::Address);
        }
        *here += 1;
        counts.total += 1;
        Ok(PendingSlot {
            budget: self.clone(),
            ip,
        })
    }

    /// Pending sessions on the node now.
    pub fn total(&self) -> usize {
        self.counts.lock().total
    }

    /// Pending sessions from `ip` now.
    pub fn from(&self, ip: IpAddr) -> usize {
        self.counts.lock().per_ip.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self.budget.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(here) = counts.per_ip.get_mut(&self.ip) {
            *here -= 1;
            if *here == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_node_and_per_address_until_dropped() {
        let budget = PendingSessions::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = budget.try_enter(a).unwrap();
        let _a2 = budget.try_enter(a).unwrap();
        assert_eq!(budget.try_enter(a).unwrap_err(), PendingFull::Address);
        let _b1 = budget.try_enter(b).unwrap();
        assert_eq!(budget.try_enter(b).unwrap_err(), PendingFull::Node);
        drop(a1);
        assert_eq!((budget.total(), budget.from(a)), (2, 1));
        assert!(budget.try_enter(b).is_ok(), "a place given back is taken again");
    }
}
