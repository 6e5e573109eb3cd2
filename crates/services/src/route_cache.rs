//! The route manager's route sets kept between passes (as the notice it publishes for each: the
//! set's digest and size), each with the stamp of the inputs it was computed from
//! (`Ipam::route_stamps`): a pass recomputes only the hosts whose stamp moved, so one change (a
//! block, a host, a death) costs its leaf's hosts, not every host; and which sets changed since
//! they were last published, so that publishing writes those without comparing every set. Pure:
//! the caller reads the IPAM and liveness and hands them in.

use std::collections::{BTreeMap, BTreeSet};

use romana_api::rest::HostRoutesInfo;
use romana_ipam::{HostRoutes, Ipam, RoutePlan};
use romana_model::HostName;

use crate::liveness::Liveness;
use crate::route_sets::{host_routes, notice};

/// A host's route set as `GET /routes/{host}` answers it without the revision and the
/// per-block and per-endpoint counts: serde's JSON of `HostRoutesInfo` (what the cache's
/// hand-written JSON must equal, and what `RouteSetNotice::digest` is of). `None` for a host the
/// IPAM does not know.
pub fn published_set(ipam: &Ipam, live: &Liveness, host: &HostName) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(&digested(ipam, live, host)?).expect("route sets serialize"))
}

/// `host`'s set without the revision and the counts: what a notice's digest is of.
fn digested(ipam: &Ipam, live: &Liveness, host: &HostName) -> Option<HostRoutesInfo> {
    let mut set = host_routes(ipam, live, host, 0).ok()?;
    (set.per_block, set.per_endpoint) = (None, None);
    Some(set)
}

/// What the route manager publishes for `host` (`routes/<host>`): the notice of its
/// `published_set`.
pub fn published_notice(ipam: &Ipam, live: &Liveness, host: &HostName) -> Option<Vec<u8>> {
    let set = digested(ipam, live, host)?;
    let json = serde_json::to_vec(&set).expect("route sets serialize");
    Some(notice(host.as_str(), set.routes.len(), &json))
}

/// `host`'s stamp and routes from one IPAM state, without the routes through dead hosts
/// (`None`: the IPAM does not know it).
pub fn routes_of(ipam: &Ipam, live: &Liveness, host: &HostName) -> Option<(u64, HostRoutes)> {
    let (stamps, plan) = plan_of(ipam, live, std::slice::from_ref(host));
    found(stamps, plan).next().flatten()
}

/// The part of `routes_of` for each of `hosts` that reads the IPAM: their stamps and what their
/// routes need (`Ipam::route_plan`: each leaf's trie made once for all its hosts), both from one
/// state and one reading of liveness, so that a set always matches its stamp. The route
/// manager holds the IPAM's lock for this part only.
pub fn plan_of(ipam: &Ipam, live: &Liveness, hosts: &[HostName]) -> (Vec<Option<u64>>, RoutePlan) {
    let dead = |h: &HostName| live.is_dead(h.as_str());
    (ipam.route_stamps_of(hosts, &dead), ipam.route_plan(hosts, &dead))
}

/// The rest of `routes_of`, without the IPAM: each host's stamp and routes, in `plan_of`'s order,
/// computed as they are taken.
pub fn found(stamps: Vec<Option<u64>>, plan: RoutePlan) -> impl Iterator<Item = Option<(u64, HostRoutes)>> {
    stamps.into_iter().zip(plan.into_routes()).map(|(stamp, set)| Some((stamp?, set.ok()?)))
}

/// Route set notices by host name, each with its inputs' stamp, and what publishing owes the
/// store.
#[derive(Debug, Default)]
pub struct RouteSetCache {
    sets: BTreeMap<String, (u64, Vec<u8>)>,
    /// Hosts whose set is not in the store as kept here (changed, or new, since published).
    unpublished: BTreeSet<String>,
    /// Hosts whose set the store may hold (every host a publication tried to write): the ones to
    /// delete when the IPAM drops them.
    published: BTreeSet<String>,
    /// The set being digested: one buffer for every set of a pass.
    scratch: Vec<u8>,
}

/// What a publication writes: the notice of each changed set, and the hosts whose notice is to
/// be deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub put: Vec<(String, Vec<u8>)>,
    pub delete: Vec<String>,
}

impl RouteSetCache {
    /// The hosts whose set must be computed again (new, or their inputs moved); hosts the IPAM
    /// no longer has are dropped.
    pub fn stale(&mut self, ipam: &Ipam, live: &Liveness) -> Vec<HostName> {
        let stamps = ipam.route_stamps(&|h| live.is_dead(h.as_str()));
        let known: std::collections::HashSet<&str> = stamps.iter().map(|(h, _)| h.as_str()).collect();
        self.sets.retain(|h, _| known.contains(h.as_str()));
        self.unpublished.retain(|h| known.contains(h.as_str()));
        stamps
            .into_iter()
            .filter(|(h, stamp)| self.sets.get(h.as_str()).is_none_or(|(s, _)| s != stamp))
            .map(|(h, _)| h)
            .collect()
    }

    /// Computes `host`'s set and its stamp from the same IPAM state and keeps both.
    pub fn refresh(&mut self, ipam: &Ipam, live: &Liveness, host: &HostName) {
        self.keep(host, routes_of(ipam, live, host));
    }

    /// `refresh` of each of `hosts`, from one state (`plan_of`, then `found`).
    pub fn refresh_all(&mut self, ipam: &Ipam, live: &Liveness, hosts: &[HostName]) {
        let (stamps, plan) = plan_of(ipam, live, hosts);
        for (host, found) in hosts.iter().zip(found(stamps, plan)) {
            self.keep(host, found);
        }
    }

    /// Keeps what `routes_of` found for `host` as the notice to publish (serialized and digested
    /// here: `routes_of` is the part that needs the IPAM, so the route manager holds the IPAM's
    /// lock only for it). A set equal to the one kept (its stamp moved, its routes did not) owes
    /// nothing.
    pub fn keep(&mut self, host: &HostName, found: Option<(u64, HostRoutes)>) {
        match found {
            Some((stamp, set)) => {
                romana_api::route_wire::write_published_json(&set, &mut self.scratch);
                let set = notice(host.as_str(), set.routes.len(), &self.scratch);
                if self.sets.get(host.as_str()).is_none_or(|(_, old)| *old != set) {
                    self.unpublished.insert(host.to_string());
                }
                self.sets.insert(host.to_string(), (stamp, set));
            }
            None => {
                self.sets.remove(host.as_str());
                self.unpublished.remove(host.as_str());
            }
        }
    }

    /// What the store lacks: the unpublished sets, and the published hosts the IPAM dropped.
    /// From now on the store may hold those sets (a failed publication can write part of them).
    pub fn changes(&mut self) -> Changes {
        self.published.extend(self.unpublished.iter().cloned());
        Changes {
            put: self
                .unpublished
                .iter()
                .filter_map(|h| self.sets.get(h).map(|(_, set)| (h.clone(), set.clone())))
                .collect(),
            delete: self.published.iter().filter(|h| !self.sets.contains_key(*h)).cloned().collect(),
        }
    }

    /// `changes()` is in the store now (nothing changed the cache since it was taken).
    pub fn published(&mut self) {
        self.published.retain(|h| self.sets.contains_key(h));
        self.unpublished.clear();
    }

    /// The store's sets are no longer known to be ours (this replica stopped leading: another
    /// may have written since): every set is owed again.
    pub fn unpublish_all(&mut self) {
        self.unpublished = self.sets.keys().cloned().collect();
    }

    /// Every kept notice, by host name.
    pub fn sets(&self) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.sets.iter().map(|(h, (_, set))| (h, set))
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

#[cfg(test)]
#[path = "route_cache_tests.rs"]
mod tests;
