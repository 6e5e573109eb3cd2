//! The route manager's notices kept between passes (`routes/<host>`: the stamp of the inputs of
//! each host's set, `Ipam::route_stamps`), and which of them the store lacks. A pass reads every
//! host's stamp (one walk over the blocks, each leaf hashed once) and owes a notice for each
//! host whose stamp moved. It computes no set: each reader computes its own (`GET
//! /routes/{host}`). When the notice named the set by a digest of its routes, a new block in a
//! leaf of a hundred hosts cost the pass every set of the leaf computed again (70 ms of CPU at
//! 4,000 routes per set, beside the pod starts: issue 22). Pure: the caller reads the IPAM and
//! liveness and hands them in.

use std::collections::{BTreeMap, BTreeSet};

use romana_ipam::Ipam;
use romana_model::HostName;

use crate::liveness::Liveness;
use crate::route_sets::notice;

/// What the route manager publishes for `host` (`routes/<host>`) from this state: the notice of
/// its set's stamp; `None` for a host the IPAM does not know.
pub fn published_notice(ipam: &Ipam, live: &Liveness, host: &HostName) -> Option<Vec<u8>> {
    Some(notice(host.as_str(), ipam.route_stamp(host, &|h| live.is_dead(h.as_str()))?))
}

/// The stamp of every host's set by host name, and what publishing owes the store.
#[derive(Debug, Default)]
pub struct RouteSetCache {
    stamps: BTreeMap<String, u64>,
    /// Hosts whose notice is not in the store as kept here (changed, or new, since published).
    unpublished: BTreeSet<String>,
    /// Hosts whose notice the store may hold (every host a publication tried to write): the
    /// ones to delete when the IPAM drops them.
    published: BTreeSet<String>,
}

/// What a publication writes: the notice of each host whose stamp moved, and the hosts whose
/// notice is to be deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub put: Vec<(String, Vec<u8>)>,
    pub delete: Vec<String>,
}

impl RouteSetCache {
    /// Takes every host's stamp from one IPAM state: a host whose stamp moved (or new) owes its
    /// notice; hosts the IPAM no longer has are dropped. Returns how many notices are new.
    pub fn refresh(&mut self, ipam: &Ipam, live: &Liveness) -> usize {
        let stamps = ipam.route_stamps(&|h| live.is_dead(h.as_str()));
        let known: std::collections::HashSet<&str> = stamps.iter().map(|(h, _)| h.as_str()).collect();
        self.stamps.retain(|h, _| known.contains(h.as_str()));
        self.unpublished.retain(|h| known.contains(h.as_str()));
        let mut moved = 0;
        for (host, stamp) in stamps {
            if self.stamps.get(host.as_str()) != Some(&stamp) {
                moved += 1;
                self.unpublished.insert(host.to_string());
                self.stamps.insert(host.to_string(), stamp);
            }
        }
        moved
    }

    /// What the store lacks: the unpublished notices, and the published hosts the IPAM dropped.
    /// From now on the store may hold those notices (a failed publication can write part of
    /// them).
    pub fn changes(&mut self) -> Changes {
        self.published.extend(self.unpublished.iter().cloned());
        Changes {
            put: self
                .unpublished
                .iter()
                .filter_map(|h| self.stamps.get(h).map(|stamp| (h.clone(), notice(h, *stamp))))
                .collect(),
            delete: self.published.iter().filter(|h| !self.stamps.contains_key(*h)).cloned().collect(),
        }
    }

    /// `changes()` is in the store now (nothing changed the cache since it was taken).
    pub fn published(&mut self) {
        self.published.retain(|h| self.stamps.contains_key(h));
        self.unpublished.clear();
    }

    /// The store's notices are no longer known to be ours (this replica stopped leading:
    /// another may have written since): every notice is owed again.
    pub fn unpublish_all(&mut self) {
        self.unpublished = self.stamps.keys().cloned().collect();
    }

    /// Every kept notice, by host name.
    pub fn notices(&self) -> impl Iterator<Item = (&String, Vec<u8>)> {
        self.stamps.iter().map(|(h, stamp)| (h, notice(h, *stamp)))
    }

    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }
}

#[cfg(test)]
#[path = "route_cache_tests.rs"]
mod tests;
