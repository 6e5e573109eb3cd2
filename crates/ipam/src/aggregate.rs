//! Minimal route aggregation: the fewest prefixes whose longest-prefix match sends every labelled
//! range to its label. Space no item covers is "don't care" and may be absorbed into aggregates.
//!
//! This is an exact dynamic programme over the binary trie (in the spirit of ORTC, Draves et al.
//! 1999, extended with don't-care space): for every trie node and every label that could be
//! inherited from above, the least number of routes needed below. A label of `None` means "must
//! not match any of our routes" and is emitted as a throw route when an aggregate has to be pierced.
//!
//! The trie lives in one arena and each node's costs in a vector sorted by label, merged in one
//! walk; the cheapest label of each split is kept from the build for the emission. The route
//! manager runs this for every host of a leaf after each new block (each host sees the leaf's
//! blocks with its own relabelled), so its speed is a pod start's CPU on a loaded cluster
//! (issue 22; docs/benchmarks.md, "Route sets: growth with the hosts").

use romana_model::Cidr;

/// Route count below a node as a function of the inherited label: `by` (sorted by label), or
/// `other` for labels that do not occur below (all of which cost the same).
#[derive(Debug, Clone)]
struct Cost<L> {
    other: u32,
    by: Vec<(Option<L>, u32)>,
}

impl<L: Ord + Copy> Cost<L> {
    fn at(&self, x: &Option<L>) -> u32 {
        match self.by.binary_search_by(|(l, _)| l.cmp(x)) {
            Ok(i) => self.by[i].1,
            Err(_) => self.other,
        }
    }

    /// The cheapest label to emit here, and its cost (ties go to the smallest label).
    fn best(&self) -> Option<(Option<L>, u32)> {
        self.by.iter().min_by_key(|(_, c)| *c).copied()
    }

    /// `l + r` for every label either side has (one walk over both sorted vectors).
    fn sum(l: &Cost<L>, r: &Cost<L>) -> Cost<L> {
        let mut by = Vec::with_capacity(l.by.len().max(r.by.len()));
        let (mut i, mut j) = (0, 0);
        while i < l.by.len() || j < r.by.len() {
            let entry = match (l.by.get(i), r.by.get(j)) {
                (Some(a), Some(b)) if a.0 == b.0 => {
                    (i, j) = (i + 1, j + 1);
                    (a.0, a.1 + b.1)
                }
                (Some(a), Some(b)) if a.0 < b.0 => {
                    i += 1;
                    (a.0, a.1 + r.other)
                }
                (Some(a), None) => {
                    i += 1;
                    (a.0, a.1 + r.other)
                }
                (_, Some(b)) => {
                    j += 1;
                    (b.0, l.other + b.1)
                }
                (None, None) => unreachable!("the loop runs while either side has entries"),
            };
            by.push(entry);
        }
        Cost { other: l.other + r.other, by }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind<L> {
    Empty,
    Item(Option<L>),
    /// The two halves (arena indices) and the cheapest label for their sum, with its cost.
    Split(u32, u32, Option<(Option<L>, u32)>),
}

#[derive(Debug)]
struct Node<L> {
    cidr: Cidr,
    kind: Kind<L>,
    cost: Cost<L>,
}

/// Builds the trie of `cidr` over `items` (sorted, disjoint, inside `cidr`); returns the root.
fn build<L: Ord + Copy>(arena: &mut Vec<Node<L>>, cidr: Cidr, items: &[(Cidr, Option<L>)]) -> u32 {
    let node = match items {
        [] => Node { cidr, kind: Kind::Empty, cost: Cost { other: 0, by: Vec::new() } },
        [(c, label)] if *c == cidr => {
            Node { cidr, kind: Kind::Item(*label), cost: Cost { other: 1, by: vec![(*label, 0)] } }
        }
        _ => {
            let Some((lo, hi)) = cidr.halves() else {
                // A single address with several items cannot happen for disjoint input; keep the first.
                return build(arena, cidr, &items[..1]);
            };
            let split = items.partition_point(|(c, _)| lo.contains(c));
            let (l, r) = (build(arena, lo, &items[..split]), build(arena, hi, &items[split..]));
            let mut cost = Cost::sum(&arena[l as usize].cost, &arena[r as usize].cost);
            let best = cost.best();
            let floor = best.map_or(cost.other, |(_, c)| c) + 1;
            cost.other = cost.other.min(floor);
            for (_, c) in &mut cost.by {
                *c = (*c).min(floor);
            }
            Node { cidr, kind: Kind::Split(l, r, best), cost }
        }
    };
    arena.push(node);
    (arena.len() - 1) as u32
}

fn emit<L: Ord + Copy>(arena: &[Node<L>], n: u32, inherited: Option<L>, out: &mut Vec<(Cidr, Option<L>)>) {
    let node = &arena[n as usize];
    match node.kind {
        Kind::Empty => {}
        Kind::Item(label) => {
            if label != inherited {
                out.push((node.cidr, label));
            }
        }
        Kind::Split(l, r, best) => {
            let keep = arena[l as usize].cost.at(&inherited) + arena[r as usize].cost.at(&inherited);
            match best {
                Some((label, cost)) if cost + 1 < keep => {
                    out.push((node.cidr, label));
                    emit(arena, l, label, out);
                    emit(arena, r, label, out);
                }
                _ => {
                    emit(arena, l, inherited, out);
                    emit(arena, r, inherited, out);
                }
            }
        }
    }
}

/// The minimal route set inside `within` for disjoint `items` (prefix, label), assuming nothing
/// above `within` matches (inherited label `None`). Items outside `within` are ignored.
pub fn aggregate<L: Ord + Copy>(within: Cidr, items: &[(Cidr, Option<L>)]) -> Vec<(Cidr, Option<L>)> {
    let mut items: Vec<_> = items.iter().filter(|(c, _)| within.contains(c)).copied().collect();
    items.sort_by_key(|(c, _)| *c);
    let mut arena = Vec::with_capacity(items.len() * 2 + 1);
    let root = build(&mut arena, within, &items);
    let mut out = Vec::new();
    emit(&arena, root, None, &mut out);
    out.sort_by_key(|(c, _)| *c);
    out
}

/// Longest-prefix match of `value` in `routes`: the label of the most specific covering route.
pub fn lookup<L: Clone>(
    routes: &[(Cidr, Option<L>)],
    family: romana_model::Family,
    value: u128,
) -> Option<Option<L>> {
    routes
        .iter()
        .filter(|(c, _)| c.contains_value(family, value))
        .max_by_key(|(c, _)| c.prefix_len())
        .map(|(_, l)| l.clone())
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
