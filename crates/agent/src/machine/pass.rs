//! One firewall pass, without its I/O: what it compiles (from a snapshot of the inputs, so the
//! inputs are not held while it compiles), the table it starts from (as last applied, or a
//! kernel read that no change overtook), the transaction (narrow the fast path, the nft script,
//! widen the fast path: fail closed both ways), and the generation bookkeeping afterwards (the
//! table is known exactly while nftables' generation stays the one our transaction left).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use romana_policy::firewall::{CompileCache, FirewallInput, compile_cached, unfiltered, unfiltered_in};
use romana_policy::incremental::{Change, Part, Refusal, endpoint_changes, plan_part};
use romana_policy::nftplan::{NftPlan, Observed, PlanSummary, plan};
use romana_policy::ruleset::Ruleset;
use romana_policy::{Endpoint, PolicyRules, World};

use super::inputs::Inputs;

/// A table as read from the kernel (`None`: no table) with the nftables generation it was read
/// at (`None`: something committed during the listing, or the generation was unreadable).
pub type Table = (Option<Observed>, Option<u32>);

/// What a pass keeps between passes: the table as last applied (so that passes between
/// repairs need not read the kernel), its generation, and the compile cache.
#[derive(Debug, Default)]
pub struct PassState {
    /// The table as last applied; `None`: unknown, read the kernel.
    pub known: Option<Observed>,
    /// The nftables generation right after `known` was applied, when nothing else was committed
    /// around it: while the kernel reports the same, the table is exactly `known`.
    pub known_gen: Option<u32>,
    pub cache: CompileCache,
    /// Bumped by every pass that changed the table: a repair read taken before a change is stale.
    pub generation: u64,
    /// The tenants' labels the cache was filled with (endpoint passes match against them).
    pub world: World,
    /// Bumped whenever the cache takes changes (an endpoint pass, a compile): a confirming
    /// compile that started at another epoch is stale and dropped (`lands`).
    pub epoch: u64,
}

/// The inputs as one pass compiles them, taken under the inputs' lock.
#[derive(Debug)]
pub struct Snapshot {
    world: World,
    policies: Vec<Arc<PolicyRules>>,
    endpoints: Arc<Vec<Endpoint>>,
    stamp: u64,
    pending: Vec<(Option<Endpoint>, Option<Endpoint>)>,
}

/// Takes what a pass compiles; the inputs are clean from here (a failed pass marks them dirty).
pub fn snapshot(i: &mut Inputs) -> Snapshot {
    i.dirty = false;
    i.rules_dirty = false;
    i.confirm = false;
    let endpoints = i.endpoints.clone();
    let (world, implicit) = i.tenancy();
    let policies = i.policies(&implicit);
    Snapshot { world, policies, endpoints, stamp: i.stamp, pending: std::mem::take(&mut i.pending) }
}

/// The snapshot of a confirming compile, which runs without the pass lock on a cache of its own:
/// only when no change is waiting (`None`: run a locked pass instead), since a change it took
/// would be lost with a stale compile. The changes that come meanwhile stay pending, for the
/// endpoint passes.
pub fn snapshot_confirm(i: &mut Inputs) -> Option<Snapshot> {
    if i.dirty || i.rules_dirty || !i.pending.is_empty() {
        return None;
    }
    Some(snapshot(i))
}

/// A confirming compile was dropped as stale: it is due again.
pub fn confirm_dropped(i: &mut Inputs) {
    i.confirm = true;
}

/// Compiles `s` for `host` with `cache` (taken into it first: its pending endpoint changes),
/// without the pass state, so that it runs on a thread of its own. Returns the tenants' labels
/// the cache is now filled with.
pub fn compile_with(cache: &mut CompileCache, host: &str, s: Snapshot) -> (Compiled, World) {
    for (old, new) in &s.pending {
        cache.endpoint_changed(&s.world, old.as_ref(), new.as_ref());
    }
    let input = FirewallInput { host, policies: &s.policies, world: &s.world, endpoints: &s.endpoints };
    let desired = compile_cached(input, cache, s.stamp);
    let unfiltered = unfiltered(&desired);
    let (policies, active) = cache.policy_counts();
    (Compiled { desired, unfiltered, endpoints: s.endpoints.len(), policies, active }, s.world)
}

/// The desired table, and the local endpoints (both families) no rule filters (the fast path's
/// set).
#[derive(Debug)]
pub struct Compiled {
    pub desired: Ruleset,
    pub unfiltered: BTreeSet<IpAddr>,
    /// The cluster's endpoints and policies compiled from, and how many of the policies apply
    /// here (the rest have no chains here).
    pub endpoints: usize,
    pub policies: usize,
    pub active: usize,
}

impl PassState {
    /// The table a pass starts from: a kernel read (`fresh`, taken when the pass counter was at
    /// its first field) unless a pass changed the table since; else the table as last applied.
    /// `None`: read the kernel. What is known is taken: a failed pass leaves it unknown.
    pub fn base(&mut self, fresh: Option<(u64, Table)>) -> Option<Table> {
        let known_gen = self.known_gen.take();
        match fresh {
            Some((g, table)) if g == self.generation => Some(table),
            _ => self.known.take().map(|k| (Some(k), known_gen)),
        }
    }

    pub fn compile(&mut self, host: &str, s: Snapshot) -> Compiled {
        let (compiled, world) = compile_with(&mut self.cache, host, s);
        self.world = world;
        self.epoch += 1;
        compiled
    }

    /// Takes the cache out for a compile on another thread (`compiled` puts it back).
    pub fn cache_taken(&mut self) -> CompileCache {
        std::mem::take(&mut self.cache)
    }

    /// After a compile with the cache `compiled` took (or a confirming one's own): the cache is
    /// that one, filled for `world`.
    pub fn compiled(&mut self, cache: CompileCache, world: World) {
        self.cache = cache;
        self.world = world;
        self.epoch += 1;
    }

    /// Whether a confirming compile started at `epoch` may land: no endpoint pass or compile
    /// changed the cache (and so the table) since.
    pub fn lands(&self, epoch: u64) -> bool {
        self.epoch == epoch && self.known.is_some()
    }

    /// After a transaction that succeeded: the table is `after`, known exactly at `known_at`.
    pub fn applied(&mut self, after: Observed, known_at: Option<u32>, summary: &PlanSummary) {
        self.known = Some(after);
        self.known_gen = known_at;
        if *summary != PlanSummary::default() {
            self.generation += 1;
        }
    }

    /// Whether the kernel's generation `now` shows the table as last applied.
    pub fn unchanged(&self, now: Option<u32>) -> bool {
        self.known.is_some() && self.known_gen.is_some() && now == self.known_gen
    }
}

/// One nft transaction with the fast path around it: endpoints it isolates leave the fast path
/// before their rules come (`narrow`); endpoints it opens join only once it applied (`allow`).
#[derive(Debug)]
pub struct Transaction {
    pub narrow: BTreeSet<IpAddr>,
    pub plan: NftPlan,
    pub allow: BTreeSet<IpAddr>,
}

pub fn transaction(observed: Option<&Observed>, c: &Compiled) -> Transaction {
    Transaction {
        narrow: c.unfiltered.clone(),
        plan: plan(observed, &c.desired),
        allow: c.unfiltered.clone(),
    }
}

/// The generation at which the table is known after our transaction: when the kernel held the
/// table we planned from right before it (`at == before`) and nothing but our transaction was
/// committed since (an empty transaction commits nothing).
pub fn known_at(at: Option<u32>, before: Option<u32>, after: Option<u32>, applied: bool) -> Option<u32> {
    match (at, before, after) {
        (Some(at), Some(b), Some(a)) if at == b && (a == b || (applied && a == b.wrapping_add(1))) => Some(a),
        _ => None,
    }
}

/// The endpoint changes an endpoint pass applies, taken from the inputs (which are clean from
/// here, but for the compile that is to confirm the table).
#[derive(Debug)]
pub struct EndpointChanges {
    changes: Vec<Change>,
    stamp: u64,
}

/// Takes the pending endpoint changes, or `None` when anything else changed too (a compile is
/// needed) or nothing was ever compiled.
pub fn take_endpoint_changes(i: &mut Inputs) -> Option<EndpointChanges> {
    if i.rules_dirty {
        return None;
    }
    i.dirty = false;
    if !i.pending.is_empty() {
        i.confirm = true;
    }
    Some(EndpointChanges { changes: std::mem::take(&mut i.pending), stamp: i.stamp })
}

/// Gives refused changes back, before any that came since, for the compile that follows.
pub fn give_back(i: &mut Inputs, t: EndpointChanges) {
    let later = std::mem::replace(&mut i.pending, t.changes);
    i.pending.extend(later);
    i.dirty = true;
    i.rules_dirty = true;
}

/// An endpoint pass's transaction and the part it applies.
#[derive(Debug)]
pub struct EndpointTransaction {
    pub part: Part,
    pub transaction: Transaction,
}

impl PassState {
    /// The transaction that applies `t` to the table in force (`Err`: compile instead; the cache
    /// has not taken the changes). Nothing but the changes' own sets and base chains is planned.
    pub fn endpoint_transaction(
        &mut self,
        host: &str,
        t: &EndpointChanges,
    ) -> Result<EndpointTransaction, Refusal> {
        let Some(known) = &self.known else { return Err(Refusal::Foreign) };
        // The cache may take changes even when the policy core then refuses.
        self.epoch += 1;
        let part = endpoint_changes(&mut self.cache, &self.world, host, t.stamp, known, &t.changes)?;
        let plan = plan_part(known, &part);
        let unfiltered = unfiltered_after(known, &part);
        let transaction = Transaction { narrow: unfiltered.clone(), plan, allow: unfiltered };
        Ok(EndpointTransaction { part, transaction })
    }

    /// After an endpoint pass's transaction: the table in force takes the part; `known_at` is
    /// the generation at which it is known exactly.
    pub fn part_applied(&mut self, part: &Part, known_at: Option<u32>, summary: &PlanSummary) {
        if let Some(k) = &mut self.known {
            k.apply_part(part);
        }
        self.known_gen = known_at;
        if *summary != PlanSummary::default() {
            self.generation += 1;
        }
    }

    /// After a failed transaction: what the kernel holds is unknown.
    pub fn part_failed(&mut self) {
        self.known = None;
        self.known_gen = None;
    }
}

/// `unfiltered` of the table in force with `part` applied, without building it.
fn unfiltered_after(known: &Observed, part: &Part) -> BTreeSet<IpAddr> {
    unfiltered_in(|name| part.sets.get(name).or_else(|| known.sets.get(name)).map(|s| &**s))
}
