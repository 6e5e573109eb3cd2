//! The consistency check's pure core: IPAM allocations, the endpoint registry (pods and VMs),
//! hosts' liveness and blocks compared as one picture, every disagreement listed with what to
//! do, and the reclaim decision (which addresses to release). No I/O: the picture, when each
//! suspect was first seen and the time are arguments (`check_api.rs` and `reclaim.rs` gather
//! them).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

/// An IPAM allocation as the check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alloc {
    pub name: String,
    pub ip: String,
    pub host: String,
}

/// An endpoint record; `kind` is `vm` for label `romana.io/kind=vm`, else `pod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub ip: String,
    pub host: String,
    pub kind: String,
}

/// A block and the host that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub network: String,
    pub cidr: String,
    pub host: String,
}

/// Everything the check compares, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Picture {
    pub allocations: Vec<Alloc>,
    pub endpoints: Vec<Endpoint>,
    /// Hosts the IPAM knows.
    pub hosts: BTreeSet<String>,
    /// Hosts that ever sent a heartbeat, and those whose lease is alive.
    pub monitored: BTreeSet<String>,
    pub live: BTreeSet<String>,
    pub blocks: Vec<Block>,
    /// What each host's agent last reported about its kernel, by host (`consistency_kernel.rs`).
    pub reports: BTreeMap<String, romana_api::diagnose::StoredReport>,
}

impl Picture {
    pub fn is_dead(&self, host: &str) -> bool {
        self.monitored.contains(host) && !self.live.contains(host)
    }
}

/// Graces in milliseconds: how long an allocation may stay without an endpoint (a CNI ADD in
/// progress, or a DEL that never came), and a host stay dead, before its addresses are reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Graces {
    pub leak_ms: u64,
    pub dead_ms: u64,
}

impl Default for Graces {
    fn default() -> Graces {
        Graces { leak_ms: 600_000, dead_ms: 600_000 }
    }
}

/// When each suspect (`leak:<name>`, `dead:<host>`) was first seen, in milliseconds. Only what is
/// still suspect is kept, so a host that comes back and dies again starts a new grace.
pub type Sightings = BTreeMap<String, u64>;

fn leak_key(name: &str) -> String {
    format!("leak:{name}")
}
fn dead_key(host: &str) -> String {
    format!("dead:{host}")
}

/// Allocations no endpoint names.
fn unattached(p: &Picture) -> impl Iterator<Item = &Alloc> {
    // Hash sets and maps for lookups: at 50,000 endpoints the ordered ones were most of a pass
    // (every 5 s, on the cores a pod's start needs, issue 22).
    let named: HashSet<&str> = p.endpoints.iter().map(|e| e.name.as_str()).collect();
    p.allocations.iter().filter(move |a| !named.contains(a.name.as_str()))
}

/// The sightings after looking at `p` at `now`: new suspects start now, old ones keep their time,
/// cleared ones are forgotten.
pub fn observe(prev: &Sightings, p: &Picture, now: u64) -> Sightings {
    let keys = unattached(p)
        .map(|a| leak_key(&a.name))
        .chain(p.monitored.iter().filter(|h| p.is_dead(h)).map(|h| dead_key(h)));
    keys.map(|k| {
        let since = prev.get(&k).copied().unwrap_or(now);
        (k, since)
    })
    .collect()
}

fn past(seen: &Sightings, key: &str, now: u64, grace: u64) -> bool {
    now.saturating_sub(seen.get(key).copied().unwrap_or(now)) >= grace
}

/// What kind of disagreement, as shown and counted (`romana_check_disagreements{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An allocation with no endpoint past the grace.
    Leak,
    /// An endpoint whose address IPAM does not hold.
    Unallocated,
    /// An endpoint whose name holds another address in IPAM, or whose address is another name's.
    WrongOwner,
    /// An endpoint on a host IPAM does not know.
    UnknownHost,
    /// An endpoint on a host whose heartbeat lapsed.
    DeadHost,
    /// Two endpoints with one address.
    DuplicateAddress,
    /// A block owned by a host IPAM no longer has.
    OrphanBlock,
    /// A host's agent reports its kernel differs from what the control plane says.
    KernelDrift,
    /// A host's agent has not reported for too long (stopped, or cut off from romanad).
    StaleReport,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Leak,
        Kind::Unallocated,
        Kind::WrongOwner,
        Kind::UnknownHost,
        Kind::DeadHost,
        Kind::DuplicateAddress,
        Kind::OrphanBlock,
        Kind::KernelDrift,
        Kind::StaleReport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Leak => "leak",
            Kind::Unallocated => "unallocated",
            Kind::WrongOwner => "wrong-owner",
            Kind::UnknownHost => "unknown-host",
            Kind::DeadHost => "dead-host",
            Kind::DuplicateAddress => "duplicate-address",
            Kind::OrphanBlock => "orphan-block",
            Kind::KernelDrift => "kernel-drift",
            Kind::StaleReport => "stale-report",
        }
    }
}

/// One disagreement: what (the endpoint, allocation or block), where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    pub kind: Kind,
    /// The endpoint's or allocation's name, or the block's `network/cidr`.
    pub subject: String,
    pub ip: String,
    pub host: String,
    pub detail: String,
    pub action: String,
}

/// Every disagreement in `p` at `now`, sorted by kind and subject. A consistent picture gives none.
pub fn check(p: &Picture, seen: &Sightings, now: u64, g: Graces) -> Vec<Disagreement> {
    let mut out = Vec::new();
    let d = |kind, subject: &str, ip: &str, host: &str, detail: String, action: String| Disagreement {
        kind,
        subject: subject.to_owned(),
        ip: ip.to_owned(),
        host: host.to_owned(),
        detail,
        action,
    };
    for a in unattached(p).filter(|a| past(seen, &leak_key(&a.name), now, g.leak_ms)) {
        out.push(d(
            Kind::Leak,
            &a.name,
            &a.ip,
            &a.host,
            format!("allocated with no endpoint for {} s or more", g.leak_ms / 1000),
            if a.name.starts_with(CNI_PREFIX) {
                format!(
                    "release it (romana address release {}); romanad reclaims it after the leak grace",
                    a.name
                )
            } else {
                format!(
                    "release it (romana address release {}) unless Neutron or an operator still uses it",
                    a.name
                )
            },
        ));
    }
    let by_name: HashMap<&str, &Alloc> = p.allocations.iter().map(|a| (a.name.as_str(), a)).collect();
    let by_ip: HashMap<&str, &Alloc> = p.allocations.iter().map(|a| (a.ip.as_str(), a)).collect();
    let mut claims: HashMap<&str, usize> = HashMap::with_capacity(p.endpoints.len());
    for e in &p.endpoints {
        *claims.entry(&e.ip).or_default() += 1;
        match (by_name.get(e.name.as_str()), by_ip.get(e.ip.as_str())) {
            (Some(a), _) if a.ip == e.ip && a.host == e.host => {}
            (Some(a), _) => out.push(d(
                Kind::WrongOwner,
                &e.name,
                &e.ip,
                &e.host,
                format!(
                    "{} {} says {} on {}, IPAM holds {} on {}",
                    e.kind, e.name, e.ip, e.host, a.ip, a.host
                ),
                format!(
                    "re-register the {} (its agent's CNI CHECK or a restart), or delete the record",
                    e.kind
                ),
            )),
            (None, Some(a)) => out.push(d(
                Kind::WrongOwner,
                &e.name,
                &e.ip,
                &e.host,
                format!("{} {}'s address {} is allocated to {}", e.kind, e.name, e.ip, a.name),
                format!(
                    "delete endpoint {} (romana endpoint delete) unless {} is the stale one",
                    e.name, a.name
                ),
            )),
            (None, None) => out.push(d(
                Kind::Unallocated,
                &e.name,
                &e.ip,
                &e.host,
                format!("{} {}'s address {} is not allocated in IPAM", e.kind, e.name, e.ip),
                format!("delete endpoint {} and re-create the {} so that it gets an address", e.name, e.kind),
            )),
        }
        if !p.hosts.contains(&e.host) {
            out.push(d(
                Kind::UnknownHost,
                &e.name,
                &e.ip,
                &e.host,
                format!("{} {} is on host {}, which IPAM does not know", e.kind, e.name, e.host),
                format!("delete endpoint {} (its host is gone)", e.name),
            ));
        } else if p.is_dead(&e.host) {
            let since = seen.get(&dead_key(&e.host)).copied().unwrap_or(now);
            let left = (since + g.dead_ms).saturating_sub(now) / 1000;
            out.push(d(
                Kind::DeadHost,
                &e.name,
                &e.ip,
                &e.host,
                format!("{} {} is on host {}, whose heartbeat lapsed", e.kind, e.name, e.host),
                format!("restart romana-agent on {}; else romanad reclaims the address in {left} s", e.host),
            ));
        }
    }
    // Addresses claimed more than once, in address order, each with its names in record order.
    let mut ips: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in p.endpoints.iter().filter(|e| claims[e.ip.as_str()] > 1) {
        ips.entry(&e.ip).or_default().push(&e.name);
    }
    for (ip, names) in &ips {
        for name in names {
            let host = p.endpoints.iter().find(|e| e.name == *name).map(|e| e.host.as_str()).unwrap_or("");
            out.push(d(
                Kind::DuplicateAddress,
                name,
                ip,
                host,
                format!("{ip} is claimed by endpoints {}", names.join(", ")),
                format!("delete every endpoint of {ip} but the one IPAM allocated it to"),
            ));
        }
    }
    for b in p.blocks.iter().filter(|b| !p.hosts.contains(&b.host)) {
        out.push(d(
            Kind::OrphanBlock,
            &format!("{}/{}", b.network, b.cidr),
            "",
            &b.host,
            format!(
                "block {} of network {} belongs to host {}, which IPAM no longer has",
                b.cidr, b.network, b.host
            ),
            format!("add host {} back and release its addresses, or restore the store from a backup", b.host),
        ));
    }
    out.sort_by(|a, b| (a.kind, &a.subject).cmp(&(b.kind, &b.subject)));
    out
}

/// How many disagreements of each kind (every kind present, zero included).
pub fn counts(found: &[Disagreement]) -> BTreeMap<&'static str, u64> {
    let mut c: BTreeMap<&'static str, u64> = Kind::ALL.iter().map(|k| (k.as_str(), 0)).collect();
    for f in found {
        *c.entry(f.kind.as_str()).or_default() += 1;
    }
    c
}

/// Why an address is reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Its endpoint's host has been dead past the grace.
    DeadHost,
    /// It has had no endpoint past the grace.
    Leak,
}

/// One address to release (and its endpoint record to delete, for `DeadHost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaim {
    pub name: String,
    pub ip: String,
    pub host: String,
    pub reason: Reason,
}

/// The names the CNI path gives addresses (`romana_api::agent`): only those are released as
/// leaks. Others (a Neutron port not bound yet, an operator's `romana address allocate`) have an
/// owner outside romanad that still believes in them; the check reports them, a person decides.
pub const CNI_PREFIX: &str = "cni:";

/// Addresses to release at `now`: those of endpoints on hosts dead past `dead_ms`, and CNI
/// allocations without endpoint past `leak_ms`. A live host's endpoints are never chosen.
pub fn reclaim(p: &Picture, seen: &Sightings, now: u64, g: Graces) -> Vec<Reclaim> {
    let mut out: Vec<Reclaim> = p
        .endpoints
        .iter()
        .filter(|e| p.is_dead(&e.host) && past(seen, &dead_key(&e.host), now, g.dead_ms))
        .map(|e| Reclaim {
            name: e.name.clone(),
            ip: e.ip.clone(),
            host: e.host.clone(),
            reason: Reason::DeadHost,
        })
        .collect();
    let leaked = unattached(p).filter(|a| a.name.starts_with(CNI_PREFIX));
    out.extend(leaked.filter(|a| past(seen, &leak_key(&a.name), now, g.leak_ms)).map(|a| Reclaim {
        name: a.name.clone(),
        ip: a.ip.clone(),
        host: a.host.clone(),
        reason: Reason::Leak,
    }));
    out
}

#[cfg(test)]
#[path = "consistency_tests.rs"]
mod tests;
