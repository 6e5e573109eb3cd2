//! Endpoint changes applied to the table as it stands, without a compile: what a new pod (or a
//! relabelled, moved or removed one) changes is its own set memberships (the selector and
//! named-port sets it matches, the target sets of the policies that select it, `local`, the
//! isolation sets), when a direction's first endpoint becomes isolated or its last one stops
//! being, that direction's base chains, and when it is a policy's first local target (or was its
//! last), that policy's chains and sets (`activation.rs`). That is what CNI ADD needs in force
//! before it answers, computed from the compile cache in time proportional to the change, not to
//! the cluster (but for a policy's first or last local target, which also walks the cache's
//! policies once, for its buckets and the sets no other active policy names). Pure. The result equals what a full compile gives (a property test holds it);
//! whatever it cannot decide exactly (the cache is of other tenants or another host, a segment
//! whose implicit isolation policy would appear or go) it refuses, and the caller compiles.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use romana_model::Family;

use crate::eval::{Endpoint, World};
use crate::firewall::{CompileCache, FAMILIES, Touched, base_chain, fam_suffix};
use crate::isolation::IMPLICIT_PREFIX;
use crate::model::SEGMENT_LABEL;
use crate::nftplan::{NftPlan, Observed, ObservedChain, Side, plan_sides};
use crate::ruleset::{Chain, Dir, Element, Hook, Set};

mod activation;

/// One endpoint change: (before, after); `None` is absent.
pub type Change = (Option<Endpoint>, Option<Endpoint>);

/// Why the changes need a compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Stale,
    Foreign,
    NewSegment { tenant: String, segment: String },
    SegmentMayEmpty { tenant: String, segment: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Stale => write!(f, "the compile cache is of other tenants or another host"),
            Refusal::Foreign => write!(f, "the table is not one this compiler made"),
            Refusal::NewSegment { tenant, segment } => {
                write!(f, "segment {segment} of tenant {tenant} has no isolation policy yet")
            }
            Refusal::SegmentMayEmpty { tenant, segment } => {
                write!(f, "segment {segment} of tenant {tenant} may lose its last endpoint")
            }
        }
    }
}

impl std::error::Error for Refusal {}

/// What the changes do to the table: sets with their new contents and sets that go, chains that
/// come (or are rewritten) and go: base chains, and the chains of policies that become active or
/// stop being (`activation`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Part {
    pub sets: BTreeMap<String, Arc<Set>>,
    pub sets_removed: BTreeSet<String>,
    pub chains_added: BTreeMap<String, Arc<Chain>>,
    pub chains_removed: BTreeSet<String>,
}

impl Part {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
            && self.sets_removed.is_empty()
            && self.chains_added.is_empty()
            && self.chains_removed.is_empty()
    }
}

fn segment(e: &Endpoint) -> Option<(&str, &str)> {
    e.labels.get(SEGMENT_LABEL).map(|s| (e.tenant.as_str(), s.as_str()))
}

/// Refuses changes whose segments would add or remove an implicit isolation policy (a tenant
/// in `segment` mode has one per segment in use, including `-` for endpoints without one).
fn segments_kept(cache: &CompileCache, changes: &[Change]) -> Result<(), Refusal> {
    let isolated = |t: &str| cache.policies.contains_key(&format!("{IMPLICIT_PREFIX}{t}.-"));
    for (old, new) in changes {
        if let Some((t, s)) = new.as_ref().and_then(segment)
            && isolated(t)
            && !cache.policies.contains_key(&format!("{IMPLICIT_PREFIX}{t}.{s}"))
        {
            return Err(Refusal::NewSegment { tenant: t.into(), segment: s.into() });
        }
        if let Some((t, s)) = old.as_ref().and_then(segment)
            && isolated(t)
            && new.as_ref().and_then(segment) != Some((t, s))
        {
            return Err(Refusal::SegmentMayEmpty { tenant: t.into(), segment: s.into() });
        }
    }
    Ok(())
}

/// The changes' effect on `table`, the table last compiled with `cache` for `host` (with tenants
/// as of `stamp`, giving `world`), or kept since by this function's parts. The cache takes the
/// changes whether or not the part is applied (a later compile then starts from them).
pub fn endpoint_changes(
    cache: &mut CompileCache,
    world: &World,
    host: &str,
    stamp: u64,
    table: &Observed,
    changes: &[Change],
) -> Result<Part, Refusal> {
    if cache.stamp != Some(stamp) || cache.host.as_deref() != Some(host) {
        return Err(Refusal::Stale);
    }
    if !table.sets.contains_key("local-4") {
        return Err(Refusal::Foreign);
    }
    segments_kept(cache, changes)?;
    let mut touched = Touched::default();
    // Local addresses touched, with whether a local endpoint holds each after the changes.
    let mut local: BTreeMap<IpAddr, bool> = BTreeMap::new();
    let is_local = |e: &Endpoint| !e.is_host && e.host == host;
    for (old, new) in changes {
        cache.endpoint_changed_into(world, old.as_ref(), new.as_ref(), &mut touched);
        if let Some(ip) = old.as_ref().filter(|e| is_local(e)).and_then(|e| e.ip) {
            local.insert(ip, false);
        }
        if let Some(ip) = new.as_ref().filter(|e| is_local(e)).and_then(|e| e.ip) {
            local.insert(ip, true);
        }
    }
    let mut part = Part::default();
    // The sets as the cache now holds them (the last of several changes to one counts), those
    // the table has: a set the compile left out (no rule names it) stays out.
    for name in &touched.sets {
        if let Some(set) = cache.sets.get(name).filter(|_| table.sets.contains_key(name)) {
            part.sets.insert(name.clone(), set.clone());
        }
    }
    // Target sets of the policies that stay active; those that start or stop applying here
    // bring or take their chains, sets and bucket jumps.
    activation::policies(cache, table, &touched.policies, &mut part);
    // `local` and the isolation sets: an address is isolated in a direction while a policy
    // isolating that direction targets it.
    for (ip, present) in local {
        let f = fam_suffix(Family::of(ip));
        for (set, member) in [
            ("local", present),
            ("ingress-isolated", isolated(cache, "ingress-isolated", ip)),
            ("egress-isolated", isolated(cache, "egress-isolated", ip)),
        ] {
            let name = format!("{set}-{f}");
            let Some(have) = part.sets.get(&name).or_else(|| table.sets.get(&name)) else {
                return Err(Refusal::Foreign);
            };
            if have.elements.contains(&Element::Addr(ip)) != member {
                let mut s = Set::clone(have);
                if member {
                    s.elements.insert(Element::Addr(ip));
                } else {
                    s.elements.remove(&Element::Addr(ip));
                }
                part.sets.insert(name, Arc::new(s));
            }
        }
    }
    base_chains(table, &mut part);
    for name in &part.sets_removed {
        part.sets.remove(name);
    }
    Ok(part)
}

fn isolated(cache: &CompileCache, dir: &str, ip: IpAddr) -> bool {
    cache
        .policies
        .values()
        .any(|e| !e.target_ips.is_empty() && e.compiled.isolates.contains(&dir) && e.target_ips.contains(&ip))
}

/// A direction's base chains exist while one of the host's endpoints is isolated in it (as the
/// compiler lays them out).
fn base_chains(table: &Observed, part: &mut Part) {
    for (direction, dir, chains) in [
        ("egress", Dir::Src, [("fwd-egress", Hook::Forward, 0), ("in-egress", Hook::Input, 0)]),
        ("ingress", Dir::Dst, [("fwd-ingress", Hook::Forward, 1), ("out-ingress", Hook::Output, 0)]),
    ] {
        let any = |get: &dyn Fn(&str) -> Option<Arc<Set>>| {
            FAMILIES.into_iter().any(|f| {
                get(&format!("{direction}-isolated-{}", fam_suffix(f)))
                    .is_some_and(|s| !s.elements.is_empty())
            })
        };
        let before = any(&|n| table.sets.get(n).cloned());
        let after = any(&|n| part.sets.get(n).or_else(|| table.sets.get(n)).cloned());
        for (name, hook, prio) in chains {
            match (before, after) {
                (false, true) => {
                    part.chains_added.insert(name.into(), base_chain(hook, prio, direction, dir));
                }
                (true, false) => {
                    part.chains_removed.insert(name.into());
                }
                _ => {}
            }
        }
    }
}

/// The transaction that applies `part` to `observed`: sets and chains that come, element
/// changes, chains rewritten, and what goes (in the order `nftplan` gives any plan).
pub fn plan_part(observed: &Observed, part: &Part) -> NftPlan {
    let sets = sides(&part.sets, &part.sets_removed, &observed.sets);
    let chains = sides(&part.chains_added, &part.chains_removed, &observed.chains);
    plan_sides(&sets, &chains, std::iter::empty())
}

/// What a part wants (`want`) and removes (`gone`) beside what the table has: wanted and there,
/// wanted and new, or there and going.
fn sides<'a, A, B>(
    want: &'a BTreeMap<String, A>,
    gone: &'a BTreeSet<String>,
    have: &'a BTreeMap<String, B>,
) -> Vec<Side<'a, A, B>> {
    let wanted = want.iter().map(|(name, w)| match have.get(name) {
        Some(h) => Side::Both(name, w, h),
        None => Side::Want(name, w),
    });
    wanted.chain(gone.iter().filter(|n| have.contains_key(*n)).map(Side::Have)).collect()
}

impl Observed {
    /// The table once `part` is applied.
    pub fn apply_part(&mut self, part: &Part) {
        for (name, set) in &part.sets {
            self.sets.insert(name.clone(), set.clone());
        }
        for (name, chain) in &part.chains_added {
            self.chains
                .insert(name.clone(), ObservedChain { base: chain.base, rules: chain.shared_keys().clone() });
        }
        for name in &part.chains_removed {
            self.chains.remove(name);
        }
        for name in &part.sets_removed {
            self.sets.remove(name);
        }
    }
}
