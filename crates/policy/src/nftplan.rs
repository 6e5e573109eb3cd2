//! The smallest `nft -f` transaction that turns the table the kernel holds into the desired one:
//! set elements added and deleted, a chain that differs flushed and refilled, chains and sets
//! created or removed. It never names a rule by handle: `nft` then has no need to read the whole
//! table back before it applies (with 30,000 elements that read costs 100 ms per call), and the
//! agent can keep the applied table in memory instead of listing it. Pure: the observed table comes
//! from `nftjson.rs`, the text goes to the host adapter.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;

use crate::ruleset::{self, Element, Hook, Ruleset, Set, TABLE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedChain {
    pub base: Option<(Hook, i32)>,
    /// Each rule's key (the comment we gave it; empty for a rule that is not ours), in order.
    /// Shared with the `Chain` it was applied from (`Observed::of`): see `ObservedChain::holds`.
    pub rules: Arc<Vec<String>>,
}

impl ObservedChain {
    /// Whether the chain holds exactly `chain`'s rules: by pointer when it was applied from that
    /// very chain (the compiler reuses unchanged chains, so a pass over 4,000 rules compares
    /// only the few chains a change rebuilt), else by comparing keys.
    pub fn holds(&self, chain: &ruleset::Chain) -> bool {
        Arc::ptr_eq(&self.rules, chain.shared_keys()) || *self.rules == chain.keys()
    }
}

/// Our table as the kernel has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub sets: BTreeMap<String, Arc<Set>>,
    /// Sets whose type is not one we create (someone else's doing): replaced.
    pub foreign_sets: BTreeSet<String>,
    pub chains: BTreeMap<String, ObservedChain>,
}

/// What a transaction will do, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanSummary {
    pub replace_table: bool,
    pub sets_added: usize,
    pub sets_deleted: usize,
    pub elements_added: usize,
    pub elements_deleted: usize,
    pub chains_added: usize,
    pub chains_rewritten: usize,
    pub chains_deleted: usize,
    pub rules_added: usize,
    pub rules_deleted: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftPlan {
    /// The `nft -f` text; empty when the kernel already holds the desired table.
    pub script: String,
    pub summary: PlanSummary,
    /// The same plan as data when all it does is add and delete elements of sets that exist
    /// (a pod's start, a relabel): the agent then sends it as netlink messages, which need no
    /// copy of the table in nft's cache. `None` when anything else changes.
    pub elements: Option<Vec<SetDelta>>,
    /// The same plan as data, step by step in the script's order, when it keeps the table
    /// (`None` when it replaces it): the agent sends it as one netlink batch when it can express
    /// every rule (`romana_agent::firewall_ops`), which needs no copy of the table in nft's cache.
    pub steps: Option<Vec<Step>>,
}

/// One step of a plan, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A set created with its elements.
    AddSet {
        name: String,
        set: Arc<Set>,
    },
    /// Elements of an existing set deleted, then added.
    Elements(SetDelta),
    /// A chain created; with a hook when `base` is set.
    AddChain {
        name: String,
        base: Option<(ruleset::Hook, i32)>,
    },
    FlushChain(String),
    /// Every line of the chain appended, each with its key as comment.
    AddRules {
        chain: String,
        rules: Arc<ruleset::Chain>,
    },
    DeleteChain(String),
    DeleteSet(String),
}

impl NftPlan {
    pub fn is_empty(&self) -> bool {
        self.script.is_empty()
    }
}

/// Elements deleted from and added to one existing set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDelta {
    pub set: String,
    pub delete: Vec<Element>,
    pub add: Vec<Element>,
}

/// Plans the element changes from `have` to `want` of the existing set `name`: text, summary and
/// the delta (none when equal).
pub(crate) fn set_delta(
    out: &mut String,
    s: &mut PlanSummary,
    deltas: &mut Vec<SetDelta>,
    name: &str,
    have: &Set,
    want: &Set,
) {
    let delete: Vec<Element> = have.elements.difference(&want.elements).cloned().collect();
    let add: Vec<Element> = want.elements.difference(&have.elements).cloned().collect();
    s.elements_deleted += delete.len();
    s.elements_added += add.len();
    ruleset::elements(out, "delete", name, delete.iter());
    ruleset::elements(out, "add", name, add.iter());
    if !delete.is_empty() || !add.is_empty() {
        deltas.push(SetDelta { set: name.to_owned(), delete, add });
    }
}

/// The deltas, when the summary says the plan changes elements and nothing else.
pub(crate) fn only_elements(s: &PlanSummary, deltas: Vec<SetDelta>) -> Option<Vec<SetDelta>> {
    let rest = PlanSummary { elements_added: 0, elements_deleted: 0, ..s.clone() };
    (rest == PlanSummary::default()).then_some(deltas)
}

/// One name of two name-ordered maps: only in the first, only in the second, or in both.
pub(crate) enum Side<'a, A, B> {
    Want(&'a String, &'a A),
    Have(&'a String),
    Both(&'a String, &'a A, &'a B),
}

/// The two maps side by side in name order, in one merge pass: no lookups by name (at 10,000
/// sets a plan's several passes of tree lookups cost more than the transaction they planned).
fn join<'a, A, B>(want: &'a BTreeMap<String, A>, have: &'a BTreeMap<String, B>) -> Vec<Side<'a, A, B>> {
    let mut out = Vec::with_capacity(want.len().max(have.len()));
    let (mut w, mut h) = (want.iter().peekable(), have.iter().peekable());
    loop {
        let side = match (w.peek(), h.peek()) {
            (None, None) => break,
            (Some(_), None) => w.next().map(|(n, a)| Side::Want(n, a)),
            (None, Some(_)) => h.next().map(|(n, _)| Side::Have(n)),
            (Some((wn, _)), Some((hn, _))) => match wn.cmp(hn) {
                std::cmp::Ordering::Less => w.next().map(|(n, a)| Side::Want(n, a)),
                std::cmp::Ordering::Greater => h.next().map(|(n, _)| Side::Have(n)),
                std::cmp::Ordering::Equal => {
                    let (n, a) = w.next().expect("peeked");
                    h.next().map(|(_, b)| Side::Both(n, a, b))
                }
            },
        };
        out.extend(side);
    }
    out
}

/// The plan from `observed` (`None`: the table does not exist) to `desired`.
pub fn plan(observed: Option<&Observed>, desired: &Ruleset) -> NftPlan {
    let Some(obs) = observed else { return replace(desired) };
    let sets = join(&desired.sets, &obs.sets);
    let chains = join(&desired.chains, &obs.chains);
    // A base chain's hook or priority, or a set's type, cannot change in place: rewrite all. (A
    // base chain that comes or goes is just added or deleted, as the compiler does with isolation.)
    let base_changed =
        chains.iter().any(|c| matches!(c, Side::Both(_, want, have) if have.base != want.base));
    let type_changed = sets.iter().any(|s| matches!(s, Side::Both(_, want, have) if have.ty != want.ty))
        || (!obs.foreign_sets.is_empty() && desired.sets.keys().any(|n| obs.foreign_sets.contains(n)));
    if base_changed || type_changed {
        return replace(desired);
    }
    let foreign = obs.foreign_sets.iter().filter(|n| !desired.sets.contains_key(*n));
    plan_sides(&sets, &chains, foreign)
}

/// The plan of the sets and chains side by side (wanted, had, or both), and of the foreign sets
/// to delete: new sets and chains first, so that rules can point at them; then elements; then
/// rules of chains that differ (flushed and refilled); then what is no longer wanted, once
/// nothing refers to it.
pub(crate) fn plan_sides<'a>(
    sets: &[Side<'a, Arc<Set>, Arc<Set>>],
    chains: &[Side<'a, Arc<ruleset::Chain>, ObservedChain>],
    foreign: impl Iterator<Item = &'a String>,
) -> NftPlan {
    let mut s = PlanSummary::default();
    let mut out = String::new();
    let mut steps = Vec::new();
    // 1. New sets and chains, so that rules below can point at them.
    for side in sets {
        if let Side::Want(name, set) = side {
            ruleset::set_decl(&mut out, name, set);
            s.sets_added += 1;
            s.elements_added += set.elements.len();
            steps.push(Step::AddSet { name: (*name).clone(), set: (*set).clone() });
        }
    }
    for side in chains {
        if let Side::Want(name, chain) = side {
            ruleset::chain_decl(&mut out, name, chain);
            s.chains_added += 1;
            steps.push(Step::AddChain { name: (*name).clone(), base: chain.base });
        }
    }
    // 2. Elements of existing sets.
    let mut deltas = Vec::new();
    for side in sets {
        // The same object as last applied (the compiler reused it): nothing to compare.
        if let Side::Both(name, set, have) = side
            && !Arc::ptr_eq(have, set)
        {
            set_delta(&mut out, &mut s, &mut deltas, name, have, set);
        }
    }
    steps.extend(deltas.iter().cloned().map(Step::Elements));
    // 3. Chains whose rules differ in any way (order included) are flushed and refilled.
    let mut adds: Vec<(&String, &Arc<ruleset::Chain>)> = Vec::new();
    let mut removed_chains: Vec<&String> = Vec::new();
    for side in chains {
        match side {
            Side::Want(name, chain) => adds.push((name, chain)),
            Side::Both(name, chain, o) => {
                if !o.holds(chain) {
                    let _ = writeln!(out, "flush chain inet {TABLE} {name}");
                    steps.push(Step::FlushChain((*name).clone()));
                    s.chains_rewritten += 1;
                    s.rules_deleted += o.rules.len();
                    adds.push((name, chain));
                }
            }
            Side::Have(name) => removed_chains.push(name),
        }
    }
    // Added and rewritten chains get their rules in name order, as before the merge.
    adds.sort_by(|a, b| a.0.cmp(b.0));
    for name in &removed_chains {
        let _ = writeln!(out, "flush chain inet {TABLE} {name}");
        steps.push(Step::FlushChain((*name).clone()));
    }
    for (name, chain) in adds {
        steps.push(Step::AddRules { chain: name.clone(), rules: chain.clone() });
        for (line, key) in chain.lines().iter().zip(chain.keys()) {
            ruleset::rule(&mut out, name, line, key);
            s.rules_added += 1;
        }
    }
    // 4. Chains and sets no longer wanted, now that nothing refers to them.
    for name in removed_chains {
        let _ = writeln!(out, "delete chain inet {TABLE} {name}");
        steps.push(Step::DeleteChain(name.clone()));
        s.chains_deleted += 1;
    }
    let gone = sets.iter().filter_map(|side| match side {
        Side::Have(name) => Some(*name),
        _ => None,
    });
    for name in gone.chain(foreign) {
        let _ = writeln!(out, "delete set inet {TABLE} {name}");
        steps.push(Step::DeleteSet(name.clone()));
        s.sets_deleted += 1;
    }
    let elements = only_elements(&s, deltas);
    NftPlan { script: out, summary: s, elements, steps: Some(steps) }
}

fn replace(desired: &Ruleset) -> NftPlan {
    let (rules, elements) = desired.counts();
    let summary = PlanSummary {
        replace_table: true,
        sets_added: desired.sets.len(),
        chains_added: desired.chains.len(),
        rules_added: rules,
        elements_added: elements,
        ..PlanSummary::default()
    };
    NftPlan { script: desired.render_replace(), summary, elements: None, steps: None }
}

impl Observed {
    /// The table a ruleset becomes once applied: what the agent keeps instead of reading back.
    pub fn of(rs: &Ruleset) -> Observed {
        let chains = rs
            .chains
            .iter()
            .map(|(n, c)| (n.clone(), ObservedChain { base: c.base, rules: c.shared_keys().clone() }))
            .collect();
        Observed { sets: rs.sets.clone(), foreign_sets: BTreeSet::new(), chains }
    }
}
