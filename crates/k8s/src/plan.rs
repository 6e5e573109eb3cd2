//! The reconcile plan: desired (Kubernetes) against actual (romanad) gives the writes that make
//! romanad equal to Kubernetes for what this controller owns, in a safe order. Pure: time is an
//! argument. The writes and their modelled effects are `write.rs`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::state::{Actual, Desired, TenantActual, host_owned};
pub use crate::write::{Write, vip_info};

/// What the plan needs besides the two pictures.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// Endpoints whose pod is gone from the API, since when (`orphans`).
    pub orphans: &'a BTreeMap<String, Instant>,
    pub now: Instant,
    pub grace: Duration,
}

/// Drops the writes romanad refused before with the same content (retrying cannot help until
/// the object changes, which makes another write), and forgets refusals no longer planned.
pub fn skip_refused(writes: Vec<Write>, refused: &mut Vec<Write>) -> Vec<Write> {
    refused.retain(|r| writes.contains(r));
    writes.into_iter().filter(|w| !refused.contains(w)).collect()
}

/// Endpoints registered for a pod that the API no longer has, with the time each was first seen
/// so (kept from `prev`, `now` for new ones). A pod that comes back leaves the list.
pub fn orphans(
    d: &Desired,
    a: &Actual,
    prev: &BTreeMap<String, Instant>,
    now: Instant,
) -> BTreeMap<String, Instant> {
    a.endpoints
        .iter()
        .filter(|(_, e)| e.pod.as_ref().is_some_and(|p| !d.pods.contains_key(p)))
        .map(|(name, _)| (name.clone(), prev.get(name).copied().unwrap_or(now)))
        .collect()
}

/// Hosts that a node names but romanad holds with another IP: never changed by the plan
/// (removing a host releases its addresses), reported instead.
pub fn host_conflicts<'a>(d: &'a Desired, a: &'a Actual) -> Vec<(&'a str, &'a str, &'a str)> {
    d.hosts
        .values()
        .filter_map(|h| {
            a.hosts
                .get(&h.name)
                .filter(|x| x.ip != h.ip)
                .map(|x| (h.name.as_str(), h.ip.as_str(), x.ip.as_str()))
        })
        .collect()
}

/// Both maps' entries in key order, walked together (one comparison per step: the plan runs on
/// every batch of events, and lookups of 10,000 pods cost it milliseconds).
fn join<'a, K: Ord, A, B>(
    d: &'a BTreeMap<K, A>,
    a: &'a BTreeMap<K, B>,
) -> impl Iterator<Item = (&'a K, Option<&'a A>, Option<&'a B>)> {
    let (mut d, mut a) = (d.iter().peekable(), a.iter().peekable());
    std::iter::from_fn(move || match (d.peek(), a.peek()) {
        (Some((kd, _)), Some((ka, _))) => match kd.cmp(ka) {
            std::cmp::Ordering::Less => d.next().map(|(k, x)| (k, Some(x), None)),
            std::cmp::Ordering::Greater => a.next().map(|(k, y)| (k, None, Some(y))),
            std::cmp::Ordering::Equal => {
                let (k, x) = d.next()?;
                a.next().map(|(_, y)| (k, Some(x), Some(y)))
            }
        },
        (Some(_), None) => d.next().map(|(k, x)| (k, Some(x), None)),
        (None, Some(_)) => a.next().map(|(k, y)| (k, None, Some(y))),
        (None, None) => None,
    })
}

/// Namespaces whose name is taken by a tenant this controller does not own and that carries
/// another external id (an OpenStack project, say): adopting it would apply and delete
/// NetworkPolicies in someone else's tenant. A tenant without an external id (made by hand or by
/// the sandbox) or with this namespace's uid is adopted.
pub fn foreign_tenants<'a>(d: &'a Desired, a: &Actual) -> BTreeSet<&'a str> {
    d.tenants
        .iter()
        .filter(|(name, t)| {
            a.tenants.get(*name).is_some_and(|x| {
                !x.owned() && !x.req.external_id.is_empty() && x.req.external_id != t.external_id
            })
        })
        .map(|(name, _)| name.as_str())
        .collect()
}

/// The writes that make `a` equal to `d`, creations before the deletions that depend on them.
pub fn plan(d: &Desired, a: &Actual, ctx: Ctx<'_>) -> Vec<Write> {
    let mut w = Vec::new();
    // A tenant made elsewhere under another external id (an OpenStack project) is never adopted
    // by a namespace of the same name: the namespace is left alone (no tenant write, no policy
    // applied or deleted there) until an operator resolves the clash (`foreign_tenants`).
    let foreign = foreign_tenants(d, a);
    // Tenants: create, or update in place when labels, isolation or the namespace uid changed.
    for (name, t) in d.tenants.iter().filter(|(n, _)| !foreign.contains(n.as_str())) {
        match a.tenants.get(name) {
            None => w.push(Write::PutTenant { create: true, req: t.clone() }),
            Some(x) if x.req != *t => w.push(Write::PutTenant { create: false, req: t.clone() }),
            Some(_) => {}
        }
    }
    // Segments named by pods' annotations, before the pods.
    let mut segs = BTreeSet::new();
    for p in d.pods.values().filter(|p| !p.segment.is_empty()) {
        let have = a.tenants.get(&p.namespace).is_some_and(|t| t.segments.contains(&p.segment));
        if !have && segs.insert((p.namespace.clone(), p.segment.clone())) {
            w.push(Write::AddSegment { tenant: p.namespace.clone(), segment: p.segment.clone() });
        }
    }
    // Hosts: add, or retag; a host held with another IP is left alone (`host_conflicts`). The
    // node's tags are laid over the host's: tags the agent or an operator set (a rack the
    // topology places by) stay, so tags are added and changed, never removed.
    for (name, h) in &d.hosts {
        match a.hosts.get(name) {
            None => w.push(Write::AddHost(h.clone())),
            Some(x) if x.ip == h.ip => {
                let mut tags = x.tags.clone();
                tags.extend(h.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
                if tags != x.tags {
                    w.push(Write::SetTags { host: name.clone(), tags });
                }
            }
            Some(_) => {}
        }
    }
    // Policies and pods: applied when different; deleted when gone. Pod records are all ours;
    // policies are ours in namespaces that are (or were) ours.
    let ours = |ns: &str| {
        !foreign.contains(ns)
            && (d.tenants.contains_key(ns) || a.tenants.get(ns).is_some_and(TenantActual::owned))
    };
    let mut deletes = Vec::new();
    for (k, want, have) in join(&d.netpols, &a.netpols) {
        if foreign.contains(k.0.as_str()) {
            continue;
        }
        match (want, have) {
            (Some(n), have) if have != Some(&n.policy) => w.push(Write::ApplyNetpol(k.clone(), n.clone())),
            (None, Some(_)) if ours(&k.0) => deletes.push(Write::DeleteNetpol(k.clone())),
            _ => {}
        }
    }
    let mut pod_deletes = Vec::new();
    for (k, want, have) in join(&d.pods, &a.pods) {
        match (want, have) {
            (Some(p), have) if have != Some(p) => w.push(Write::PutPod(p.clone())),
            (None, Some(_)) => pod_deletes.push(Write::DeletePod(k.clone())),
            _ => {}
        }
    }
    w.extend(pod_deletes);
    w.extend(deletes);
    // VIPs after their tenants exist, before tenants go.
    w.extend(crate::vip_plan::writes(&crate::vip_plan::requests(d, &foreign), a));
    for (e, since) in ctx.orphans {
        // Still registered, and its pod still gone (it may have come back since the orphans
        // were found).
        let gone = a.endpoints.get(e).and_then(|x| x.pod.as_ref()).is_some_and(|p| !d.pods.contains_key(p));
        if gone && ctx.now.saturating_duration_since(*since) >= ctx.grace {
            w.push(Write::Reclaim(e.clone()));
        }
    }
    let reclaimed: BTreeSet<String> =
        w.iter().filter_map(|x| if let Write::Reclaim(e) = x { Some(e.clone()) } else { None }).collect();
    for (name, t) in &a.tenants {
        if d.tenants.contains_key(name) || !t.owned() {
            continue;
        }
        // A tenant goes once its endpoints are gone (CNI DEL, or reclaimed in this plan).
        let busy = a.endpoints.iter().any(|(e, x)| x.tenant == *name && !reclaimed.contains(e));
        if !busy {
            w.push(Write::DeleteTenant(name.clone()));
        }
    }
    for (name, h) in &a.hosts {
        if !d.hosts.contains_key(name) && host_owned(h) {
            w.push(Write::RemoveHost(name.clone()));
        }
    }
    w
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
