//! An endpoint change's effect on the policies it targets: a policy that stays active gets its
//! target sets' new contents; one that starts applying to this host (its first local target)
//! brings its chains, target sets, the selector and named-port sets it names and its bucket
//! jumps; one that stops (its last local target gone) takes them out again, with the sets no
//! other active policy names. As a whole compile lays the table out (`firewall`, `active`).

use std::collections::BTreeSet;

use crate::firewall::{CompileCache, buckets_of, dispatch_chain};
use crate::nftplan::Observed;

use super::Part;

/// What the policies `ids` (whose targets an endpoint change moved) change in `table`, into
/// `part`.
pub(super) fn policies(cache: &mut CompileCache, table: &Observed, ids: &[String], part: &mut Part) {
    let mut buckets = BTreeSet::new();
    let mut shared = BTreeSet::new();
    for id in ids {
        let Some(entry) = cache.policies.get(id) else { continue };
        // The table is the one the cache made: an active policy's target sets are in it.
        let was = table.sets.contains_key(&entry.compiled.target_names[0]);
        let now = entry.active();
        if now {
            for (name, set) in &entry.target_sets {
                part.sets.insert(name.clone(), set.clone());
            }
        }
        if was == now {
            continue;
        }
        buckets.extend(entry.compiled.jumps.iter().map(|(b, ..)| b.clone()));
        if now {
            for (name, chain) in &entry.compiled.chains {
                part.chains_added.insert(name.clone(), chain.clone());
            }
            for name in entry.compiled.sets.iter().filter(|n| !table.sets.contains_key(*n)) {
                if let Some(set) = cache.sets.get(name) {
                    part.sets.insert(name.clone(), set.clone());
                }
            }
        } else {
            part.chains_removed.extend(entry.compiled.chains.iter().map(|(n, _)| n.clone()));
            part.sets_removed.extend(entry.target_sets.iter().map(|(n, _)| n.clone()));
            shared.extend(entry.compiled.sets.iter().cloned());
        }
    }
    // Decided once every change is in: a set stays while any active policy names it.
    if !shared.is_empty() {
        let named = cache.named_sets();
        part.sets_removed
            .extend(shared.into_iter().filter(|n| !named.contains(n) && table.sets.contains_key(n)));
    }
    if buckets.is_empty() {
        return;
    }
    for (bucket, chain) in cache.rebuild_buckets(&buckets) {
        if let Some(chain) = chain {
            part.chains_added.insert(bucket, chain);
        } else {
            part.chains_removed.insert(bucket);
        }
    }
    dispatch(table, part);
}

/// Each direction's `<direction>-policies` chain, one jump per bucket chain the table holds once
/// `part` is applied (when that differs from the table's).
fn dispatch(table: &Observed, part: &mut Part) {
    for direction in ["egress", "ingress"] {
        let mut names: BTreeSet<&String> = buckets_of(&table.chains, direction).collect();
        names.extend(buckets_of(&part.chains_added, direction));
        names.retain(|n| !part.chains_removed.contains(*n));
        let chain = dispatch_chain(names.into_iter());
        let name = format!("{direction}-policies");
        if !table.chains.get(&name).is_some_and(|o| o.holds(&chain)) {
            part.chains_added.insert(name, chain);
        }
    }
}
