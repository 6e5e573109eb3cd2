//! The table from its policies' parts: every policy (`all`), or the table the last compile
//! returned patched by the policies that changed since (`patch`); then what depends on all of
//! them (`finish`: base chains, host-policy dispatch, the bucket jumps).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{
    CompiledPolicy, Compiler, FAMILIES, PolicyEntry, always_allowed, base_chain, buckets_of, dispatch_chain,
    fam_suffix,
};
use crate::model::PolicyRules;
use crate::ruleset::{Chain, Dir, Hook, Line, Match, Verdict};

impl Compiler<'_> {
    /// Every policy (in id order) into an empty table; returns the host policies' jumps.
    pub(super) fn all(&mut self, policies: &[&Arc<PolicyRules>]) -> Chain {
        self.cache.isolating.clear();
        self.rs.chains.insert("egress-policies".into(), Arc::new(Chain::new(None, vec![])));
        self.rs.chains.insert("ingress-policies".into(), Arc::new(Chain::new(None, vec![])));
        let local = self.local.clone();
        self.addr_sets("local", local.into_iter());
        self.addr_sets("egress-isolated", std::iter::empty());
        self.addr_sets("ingress-isolated", std::iter::empty());
        let mut buckets: BTreeMap<String, Vec<Arc<CompiledPolicy>>> = BTreeMap::new();
        let mut host_jumps = Chain::new(None, vec![]);
        for p in policies {
            let Some(compiled) = self.policy(p) else { continue };
            if let Some((line, key)) = &compiled.host_jump {
                host_jumps.push_keyed(line.clone(), key.clone());
            }
            for (bucket, ..) in &compiled.jumps {
                let members = buckets.entry(bucket.clone()).or_default();
                if !members.last().is_some_and(|m| Arc::ptr_eq(m, &compiled)) {
                    members.push(compiled.clone());
                }
            }
        }
        // Policies gone since the last compile leave the cache too.
        let ids: BTreeSet<&str> = policies.iter().map(|p| p.id.as_str()).collect();
        self.cache.policies.retain(|id, _| ids.contains(id.as_str()));
        // A bucket chain holds its policies' jumps in policy order; built again only when they
        // changed.
        let mut old = std::mem::take(&mut self.cache.buckets);
        for (bucket, members) in buckets {
            let was = old.remove(&bucket);
            self.place_bucket(bucket, members, was);
        }
        host_jumps
    }

    /// The table in `self.rs` (the last compile's, for the policies the cache holds) patched to
    /// `policies` (in id order, one per id): what the changed and the gone policies put in is
    /// taken out, the changed and new ones go in, and the buckets they are in are built again.
    /// Returns the host policies' jumps.
    pub(super) fn patch(&mut self, policies: &[&Arc<PolicyRules>]) -> Chain {
        // Both lists are in id order: one walk finds what changed and what is gone.
        let (mut changed, mut gone) = (Vec::new(), Vec::new());
        let mut old = self.cache.policies.iter().peekable();
        for p in policies {
            while let Some((id, _)) = old.next_if(|(id, _)| id.as_str() < p.id.as_str()) {
                gone.push(id.clone());
            }
            match old.next_if(|(id, _)| **id == p.id) {
                Some((_, e)) if e.compiles(p) => {}
                Some((id, _)) => {
                    gone.push(id.clone());
                    changed.push(*p);
                }
                None => changed.push(*p),
            }
        }
        gone.extend(old.map(|(id, _)| id.clone()));
        let (mut buckets, mut shared) = (BTreeSet::new(), BTreeSet::new());
        for id in &gone {
            if let Some(e) = self.cache.policies.remove(id) {
                self.withdraw(e, &mut buckets, &mut shared);
            }
        }
        for p in changed {
            if let Some(compiled) = self.policy(p) {
                buckets.extend(compiled.jumps.iter().map(|(b, ..)| b.clone()));
            }
        }
        // The selector and named-port sets only withdrawn policies named.
        if !shared.is_empty() {
            let named = self.cache.named_sets();
            for name in shared.iter().filter(|n| !named.contains(n)) {
                self.rs.sets.remove(name);
            }
        }
        for (bucket, chain) in self.cache.rebuild_buckets(&buckets) {
            match chain {
                Some(chain) => self.rs.chains.insert(bucket, chain),
                None => self.rs.chains.remove(&bucket),
            };
        }
        let mut host_jumps = Chain::new(None, vec![]);
        let active = self.cache.policies.values().filter(|e| e.active());
        for (line, key) in active.filter_map(|e| e.compiled.host_jump.as_ref()) {
            host_jumps.push_keyed(line.clone(), key.clone());
        }
        host_jumps
    }

    /// Takes what `e`'s policy put in the table out of it: its chains, its target sets, its
    /// targets' isolation. Its buckets go to `buckets` (to be built again) and the shared sets
    /// it named to `shared` (to go when no policy names them any more).
    fn withdraw(&mut self, e: PolicyEntry, buckets: &mut BTreeSet<String>, shared: &mut BTreeSet<String>) {
        for (name, _) in &e.compiled.chains {
            self.rs.chains.remove(name);
        }
        for (name, _) in &e.target_sets {
            self.rs.sets.remove(name);
        }
        self.isolate(&e.target_ips, &e.compiled.isolates, false);
        buckets.extend(e.compiled.jumps.iter().map(|(b, ..)| b.clone()));
        shared.extend(e.compiled.sets.iter().cloned());
    }

    /// What depends on every policy: each direction's base chains (while an endpoint is
    /// isolated in it), the host policies' dispatch (while there are any), and the jumps to
    /// the bucket chains.
    pub(super) fn finish(&mut self, host_jumps: Chain) {
        // A direction's base chains only while one of this host's endpoints is isolated in it:
        // until then they would accept everything (their only drop is of isolated endpoints'
        // traffic), and their `ct state` match alone registers conntrack on every packet the
        // host forwards. So a host without isolation has no hooks of ours at all
        // (docs/policy.md, "Cost").
        for (direction, dir, chains) in [
            ("egress", Dir::Src, [("fwd-egress", Hook::Forward, 0), ("in-egress", Hook::Input, 0)]),
            ("ingress", Dir::Dst, [("fwd-ingress", Hook::Forward, 1), ("out-ingress", Hook::Output, 0)]),
        ] {
            let isolated = FAMILIES.into_iter().any(|f| {
                self.rs
                    .sets
                    .get(&format!("{direction}-isolated-{}", fam_suffix(f)))
                    .is_some_and(|s| !s.elements.is_empty())
            });
            for (name, hook, prio) in chains {
                if isolated {
                    self.rs.chains.insert(name.into(), base_chain(hook, prio, direction, dir));
                } else {
                    self.rs.chains.remove(name);
                }
            }
        }
        // Host-scoped policies: what this host's endpoints open to the host itself is checked on
        // input after their egress, and dropped when no host policy accepts it. Only when there
        // are any, so a cluster without them has no such chain.
        if host_jumps.lines().is_empty() {
            self.rs.chains.remove("in-ingress");
            self.rs.chains.remove("host-policies");
        } else {
            let mut lines = vec![
                Line { matches: vec![Match::Established], verdict: Verdict::Accept },
                always_allowed(),
                Line { matches: vec![], verdict: Verdict::Jump("host-policies".into()) },
            ];
            for f in FAMILIES {
                let set = format!("local-{}", fam_suffix(f));
                lines.push(Line {
                    matches: vec![Match::InSet { dir: Dir::Src, family: f, set }],
                    verdict: Verdict::Drop,
                });
            }
            self.rs.chains.insert("in-ingress".into(), Arc::new(Chain::new(Some((Hook::Input, 1)), lines)));
            self.rs.chains.insert("host-policies".into(), Arc::new(host_jumps));
        }
        for direction in ["egress", "ingress"] {
            let chain = dispatch_chain(buckets_of(&self.rs.chains, direction));
            self.rs.chains.insert(format!("{direction}-policies"), chain);
        }
    }
}
