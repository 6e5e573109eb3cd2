//! What the firewall's table is compiled from, as romanad last told us (tenants, Romana policies,
//! NetworkPolicies, endpoints), kept in the policy core's terms so that a pass converts nothing it
//! converted before; and the decoding of watch events into it. Pure: knows nothing about HTTP,
//! nftables or tasks; what it cannot use is collected in `problems` for the caller to log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use romana_api::netpol::NetworkPolicy;
use romana_api::policy::Policy;
use romana_api::rest::{EndpointInfo, Tenant, WatchEvent};
use romana_api::watch::Watched;
use romana_policy::{Endpoint, PolicyRules, World, cluster};

#[derive(Debug, Default)]
pub struct Inputs {
    pub tenants: Vec<Tenant>,
    /// Romana policies by id, and NetworkPolicies by `namespace/name`, as rules. Shared: a pass
    /// takes them without copying, and the compile cache knows an unchanged policy by its
    /// object (a put with the same rules keeps the object it replaces).
    pub romana: BTreeMap<String, Vec<Arc<PolicyRules>>>,
    pub netpols: BTreeMap<String, Arc<PolicyRules>>,
    /// Every endpoint, as the slice the compiler takes, changed in place (no copy of 10,000
    /// endpoints per change: passes hold it only while they compile), and where each one is.
    pub endpoints: Arc<Vec<Endpoint>>,
    positions: BTreeMap<String, usize>,
    /// Inputs changed since the last successful sync.
    pub dirty: bool,
    /// Of those changes, some are not endpoints' (policies, tenants, a re-read): a pass must
    /// compile; endpoint changes alone are applied to the table in force.
    pub rules_dirty: bool,
    /// The table in force came from endpoint passes since the last compile: a compile is due
    /// to confirm it (it converges to the same table).
    pub confirm: bool,
    /// Changes whenever tenants change or everything was re-read: the compile cache's validity.
    pub stamp: u64,
    /// Endpoint changes (old, new) since the last pass, which the compile cache takes in place.
    pub pending: Vec<(Option<Endpoint>, Option<Endpoint>)>,
    /// Everything was read from romanad at least once. Until then no pass runs: a restarted
    /// agent must not replace the table in force with one compiled from nothing.
    pub loaded: bool,
    /// What was left out of the firewall, and why, since the caller last took them.
    pub problems: Vec<String>,
    /// Bumped by every endpoint change: with `stamp`, what the tenancy depends on.
    endpoints_version: u64,
    /// The tenancy as last derived: a policy write does not read 50,000 endpoints again.
    tenancy: Option<Tenancy>,
}

/// The tenants' labels and implicit policies, derived at (`stamp`, `endpoints_version`).
#[derive(Debug)]
struct Tenancy {
    at: (u64, u64),
    world: World,
    implicit: Vec<Arc<PolicyRules>>,
}

/// What romanad's lists said, as one value (`endpoints: None`: not read this time).
#[derive(Debug, Clone, Default)]
pub struct Lists {
    pub tenants: Vec<Tenant>,
    pub policies: Vec<Policy>,
    pub netpols: Vec<NetworkPolicy>,
    pub endpoints: Option<Vec<EndpointInfo>>,
}

/// `new` as the object `old` is when they are equal (a re-read, a put that changed nothing).
fn reuse(old: Option<&Arc<PolicyRules>>, new: PolicyRules) -> Arc<PolicyRules> {
    match old {
        Some(o) if **o == new => o.clone(),
        _ => Arc::new(new),
    }
}

fn netpol_key(np: &NetworkPolicy) -> String {
    format!("{}/{}", np.metadata.namespace, np.metadata.name)
}

impl Inputs {
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.positions.get(name).map(|i| &self.endpoints[*i])
    }

    /// Sets (`Some`) or removes (`None`) an endpoint; returns what it was.
    fn put_endpoint(&mut self, name: &str, ep: Option<Endpoint>) -> Option<Endpoint> {
        self.endpoints_version += 1;
        let list = Arc::make_mut(&mut self.endpoints);
        match (self.positions.get(name).copied(), ep) {
            (Some(i), Some(ep)) => Some(std::mem::replace(&mut list[i], ep)),
            (None, Some(ep)) => {
                self.positions.insert(name.to_owned(), list.len());
                list.push(ep);
                None
            }
            (Some(i), None) => {
                self.positions.remove(name);
                let old = list.swap_remove(i);
                // The last endpoint took the removed one's place (the compiler does not care
                // about order).
                if let Some(moved) = list.get(i) {
                    self.positions.insert(moved.id.clone(), i);
                }
                Some(old)
            }
            (None, None) => None,
        }
    }

    fn changed(&mut self, old: Option<Endpoint>, new: Option<Endpoint>) {
        self.dirty = true;
        // Past a few thousand changes (a resync) starting the cache over is cheaper.
        if self.pending.len() < 2_000 {
            self.pending.push((old, new));
        } else {
            self.pending.clear();
            self.stamp += 1;
            self.rules_dirty = true;
        }
    }

    fn set_romana(&mut self, p: &Policy) {
        self.rules_dirty = true;
        match cluster::romana_rules(p) {
            Ok(r) => {
                let old = self.romana.remove(&p.id).unwrap_or_default();
                let r = r.into_iter().map(|r| reuse(old.iter().find(|o| o.id == r.id), r)).collect();
                self.romana.insert(p.id.clone(), r)
            }
            Err(e) => {
                self.problems.push(e.to_string());
                self.romana.remove(&p.id)
            }
        };
    }

    fn set_netpol(&mut self, np: &NetworkPolicy) {
        self.rules_dirty = true;
        match cluster::netpol_rules(np) {
            Ok(r) => {
                let key = netpol_key(np);
                let r = reuse(self.netpols.get(&key), r);
                self.netpols.insert(key, r)
            }
            Err(e) => {
                self.problems.push(e.to_string());
                self.netpols.remove(&netpol_key(np))
            }
        };
    }

    /// Sets an endpoint from romanad's record (unchanged: nothing to do).
    pub fn upsert(&mut self, e: &EndpointInfo) {
        match cluster::endpoint(e) {
            Ok(ep) => {
                if self.endpoint(&e.name) != Some(&ep) {
                    let old = self.put_endpoint(&e.name, Some(ep.clone()));
                    self.changed(old, Some(ep));
                }
            }
            Err(p) => self.problems.push(p.to_string()),
        }
    }

    pub fn remove(&mut self, name: &str) {
        if let Some(old) = self.put_endpoint(name, None) {
            self.changed(Some(old), None);
        }
    }

    /// Replaces what was known with romanad's lists. Endpoints are taken as changes against
    /// what is known, so that a periodic re-read that finds nothing new costs nothing.
    pub fn replace(&mut self, lists: Lists) {
        self.set_tenants(lists.tenants);
        // Policies not listed go; listed ones keep their objects where their rules are the same.
        let ids: BTreeSet<&str> = lists.policies.iter().map(|p| p.id.as_str()).collect();
        self.romana.retain(|id, _| ids.contains(id.as_str()));
        let keys: BTreeSet<String> = lists.netpols.iter().map(netpol_key).collect();
        self.netpols.retain(|key, _| keys.contains(key));
        lists.policies.iter().for_each(|p| self.set_romana(p));
        lists.netpols.iter().for_each(|np| self.set_netpol(np));
        if let Some(eps) = lists.endpoints {
            let names: BTreeSet<&str> = eps.iter().map(|e| e.name.as_str()).collect();
            let gone: Vec<String> =
                self.positions.keys().filter(|k| !names.contains(k.as_str())).cloned().collect();
            for name in gone {
                self.remove(&name);
            }
            eps.iter().for_each(|e| self.upsert(e));
            self.loaded = true;
        }
        self.dirty = true;
        self.rules_dirty = true;
    }

    /// Everything is in: loaded from the watch stream's first listing (its events applied one
    /// by one) and a read of the tenants. The first pass compiles it all.
    pub fn mark_loaded(&mut self) {
        self.loaded = true;
        self.dirty = true;
        self.rules_dirty = true;
    }

    /// Only the tenants (their labels, segments and isolation); a change restarts the cache.
    pub fn set_tenants(&mut self, tenants: Vec<Tenant>) {
        if self.tenants != tenants {
            self.tenants = tenants;
            self.stamp += 1;
            self.dirty = true;
            self.rules_dirty = true;
        }
    }

    /// A change seen on the watch. Endpoints and policies carry their value and are applied one
    /// by one; returns `true` when tenants must be read again (their events, and keys this
    /// index does not know).
    pub fn apply_watch(&mut self, ev: &WatchEvent) -> bool {
        match ev.watched() {
            Ok(Watched::Endpoint { value: Some(e), .. }) => self.upsert(&e),
            Ok(Watched::Endpoint { name, value: None }) => self.remove(&name),
            Ok(Watched::Policy { value: Some(p), .. }) => {
                self.set_romana(&p);
                self.dirty = true;
            }
            Ok(Watched::Policy { id, value: None }) => {
                self.romana.remove(&id);
                self.dirty = true;
                self.rules_dirty = true;
            }
            Ok(Watched::NetworkPolicy { value: Some(np), .. }) => {
                self.set_netpol(&np);
                self.dirty = true;
            }
            Ok(Watched::NetworkPolicy { key, value: None }) => {
                self.netpols.remove(&key);
                self.dirty = true;
                self.rules_dirty = true;
            }
            Ok(Watched::Routes { .. } | Watched::Other { .. }) => return true,
            Err(e) => {
                // Policies' and NetworkPolicies' unreadable puts still mark the inputs changed.
                if e.resource != "endpoint" {
                    self.dirty = true;
                    self.rules_dirty = true;
                }
                self.problems.push(e.to_string());
            }
        }
        false
    }

    /// The tenants' labels and their isolation as implicit policies (`cluster::tenancy`), derived
    /// again only when tenants or endpoints changed since; an implicit policy whose rules stay
    /// the same keeps its object. Problems go to `problems` when derived.
    pub fn tenancy(&mut self) -> (World, Vec<Arc<PolicyRules>>) {
        let at = (self.stamp, self.endpoints_version);
        match &self.tenancy {
            Some(t) if t.at == at => (t.world.clone(), t.implicit.clone()),
            _ => {
                let (world, implicit, problems) = cluster::tenancy(&self.tenants, &self.endpoints);
                self.problems.extend(problems);
                let old = self.tenancy.take().map(|t| t.implicit).unwrap_or_default();
                let implicit: Vec<Arc<PolicyRules>> =
                    implicit.into_iter().map(|p| reuse(old.iter().find(|o| o.id == p.id), p)).collect();
                self.tenancy = Some(Tenancy { at, world: world.clone(), implicit: implicit.clone() });
                (world, implicit)
            }
        }
    }

    /// Every policy the compiler takes: Romana's, NetworkPolicies, and `implicit` (tenancy's).
    /// Shares the policies (5,000 of them are a few microseconds, not copies of their rules).
    pub fn policies(&self, implicit: &[Arc<PolicyRules>]) -> Vec<Arc<PolicyRules>> {
        self.romana.values().flatten().chain(self.netpols.values()).chain(implicit).cloned().collect()
    }
}
