//! Host liveness as this replica last read it from the store (hosts that ever sent a heartbeat,
//! hosts whose heartbeat lease is alive) and the heartbeat leases it granted. Knows nothing of
//! HTTP; the route manager's loop fills it, the heartbeat handler adds leases.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use romana_store::LeaseId;

/// Liveness as this replica last read it from the store.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Hosts that have sent a heartbeat at some time.
    pub(crate) monitored: BTreeSet<String>,
    /// Hosts whose heartbeat lease is alive.
    pub(crate) live: BTreeSet<String>,
    /// Heartbeat leases this replica granted, by host.
    pub(crate) leases: Mutex<HashMap<String, LeaseId>>,
    pub(crate) ttl: i64,
}

impl Liveness {
    pub fn new(ttl: i64) -> Liveness {
        Liveness { ttl: ttl.max(1), ..Liveness::default() }
    }

    /// A host is dead once it has been monitored and its lease is gone.
    pub fn is_dead(&self, host: &str) -> bool {
        self.monitored.contains(host) && !self.live.contains(host)
    }
}
