//! Minimal route aggregation: the fewest prefixes whose longest-prefix match sends every labelled
//! range to its label. Space no item covers is "don't care" and may be absorbed into aggregates.
//!
//! This is an exact dynamic programme over the binary trie (in the spirit of ORTC, Draves et al.
//! 1999, extended with don't-care space): for every trie node and every label that could be
//! inherited from above, the least number of routes needed below. A label of `None` means "must
//! not match any of our routes" and is emitted as a throw route when an aggregate has to be pierced.
//!
//! The trie lives in one arena and every node's costs in one pool, each node's entries sorted by
//! label and merged in one walk; the cheapest label of each split is kept from the build for the
//! emission. Every host's set (`GET /routes/{host}`, which each agent of a leaf reads after a
//! new block there) runs this over the leaf's blocks with its own relabelled, so its speed is
//! romanad's CPU per new block on a loaded cluster (issue 22; docs/benchmarks.md, "Route sets:
//! growth with the hosts").

use romana_model::Cidr;

/// Route count below a node as a function of the inherited label: the entries `by` (a range of
/// the trie's pool, sorted by label), or `other` for labels that do not occur below (all of
/// which cost the same).
#[derive(Debug, Clone, Copy)]
struct Cost {
    other: u32,
    by: (u32, u32),
}

#[derive(Debug, Clone, Copy)]
enum Kind<L> {
    Empty,
    Item(Option<L>),
    /// The two halves (arena indices) and the cheapest label for their sum, with its cost.
    Split(u32, u32, Option<(Option<L>, u32)>),
}

#[derive(Debug, Clone, Copy)]
struct Node<L> {
    cidr: Cidr,
    kind: Kind<L>,
    cost: Cost,
}

/// The trie in one arena, every node's cost entries in one pool (no allocation per node).
#[derive(Debug)]
struct Trie<L> {
    nodes: Vec<Node<L>>,
    pool: Vec<(Option<L>, u32)>,
}

impl<L: Ord + Copy> Trie<L> {
    fn entries(&self, c: Cost) -> &[(Option<L>, u32)] {
        &self.pool[c.by.0 as usize..c.by.1 as usize]
    }

    fn at(&self, c: Cost, x: &Option<L>) -> u32 {
        let by = self.entries(c);
        match by.binary_search_by(|(l, _)| l.cmp(x)) {
            Ok(i) => by[i].1,
            Err(_) => c.other,
        }
    }

    fn cost(&self, n: u32) -> Cost {
        self.nodes[n as usize].cost
    }

    /// `l + r` for every label either side has, appended to the pool in one walk over both.
    fn sum(&mut self, l: Cost, r: Cost) -> Cost {
        let start = self.pool.len() as u32;
        let (mut i, mut j) = (l.by.0, r.by.0);
        while i < l.by.1 || j < r.by.1 {
            let a = (i < l.by.1).then(|| self.pool[i as usize]);
            let b = (j < r.by.1).then(|| self.pool[j as usize]);
            let entry = match (a, b) {
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
            self.pool.push(entry);
        }
        Cost { other: l.other + r.other, by: (start, self.pool.len() as u32) }
    }

    fn push(&mut self, node: Node<L>) -> u32 {
        self.nodes.push(node);
        (self.nodes.len() - 1) as u32
    }

    /// Builds the trie of `cidr` over `items` (sorted, disjoint, inside `cidr`); returns its root.
    fn build(&mut self, cidr: Cidr, items: &[(Cidr, Option<L>)]) -> u32 {
        match items {
            [] => self.push(Node { cidr, kind: Kind::Empty, cost: Cost { other: 0, by: (0, 0) } }),
            [(c, label)] if *c == cidr => {
                let at = self.pool.len() as u32;
                self.pool.push((*label, 0));
                self.push(Node { cidr, kind: Kind::Item(*label), cost: Cost { other: 1, by: (at, at + 1) } })
            }
            _ => {
                let Some((lo, hi)) = cidr.halves() else {
                    // A single address with several items cannot happen for disjoint input; keep the first.
                    return self.build(cidr, &items[..1]);
                };
                let split = items.partition_point(|(c, _)| lo.contains(c));
                let (l, r) = (self.build(lo, &items[..split]), self.build(hi, &items[split..]));
                let (cost, best) = self.combine(l, r);
                self.push(Node { cidr, kind: Kind::Split(l, r, best), cost })
            }
        }
    }

    /// A split's cost from its halves', and its cheapest label with that label's cost.
    fn combine(&mut self, l: u32, r: u32) -> (Cost, Option<(Option<L>, u32)>) {
        let mut cost = self.sum(self.cost(l), self.cost(r));
        // The cheapest label (ties go to the smallest: the first minimum in label order).
        let best = self.entries(cost).iter().min_by_key(|(_, c)| *c).copied();
        let floor = best.map_or(cost.other, |(_, c)| c) + 1;
        cost.other = cost.other.min(floor);
        for (_, c) in &mut self.pool[cost.by.0 as usize..cost.by.1 as usize] {
            *c = (*c).min(floor);
        }
        (cost, best)
    }

    /// Relabels the items labelled `own` below `n` as `None` and recomputes the nodes above
    /// them, in place; each node's former state goes to `undo`. Nodes with no such item below
    /// are not visited: their costs do not depend on the relabelling.
    fn relabel(&mut self, n: u32, own: L, undo: &mut Vec<(u32, Node<L>)>) {
        let node = self.nodes[n as usize];
        if self.entries(node.cost).binary_search_by(|(l, _)| l.cmp(&Some(own))).is_err() {
            return;
        }
        undo.push((n, node));
        match node.kind {
            Kind::Empty => {}
            Kind::Item(_) => {
                let at = self.pool.len() as u32;
                self.pool.push((None, 0));
                self.nodes[n as usize].kind = Kind::Item(None);
                self.nodes[n as usize].cost = Cost { other: 1, by: (at, at + 1) };
            }
            Kind::Split(l, r, _) => {
                self.relabel(l, own, undo);
                self.relabel(r, own, undo);
                let (cost, best) = self.combine(l, r);
                self.nodes[n as usize].kind = Kind::Split(l, r, best);
                self.nodes[n as usize].cost = cost;
            }
        }
    }

    fn emit(&self, n: u32, inherited: Option<L>, out: &mut Vec<(Cidr, Option<L>)>) {
        let node = &self.nodes[n as usize];
        match node.kind {
            Kind::Empty => {}
            Kind::Item(label) => {
                if label != inherited {
                    out.push((node.cidr, label));
                }
            }
            Kind::Split(l, r, best) => {
                let keep = self.at(self.cost(l), &inherited) + self.at(self.cost(r), &inherited);
                match best {
                    Some((label, cost)) if cost + 1 < keep => {
                        out.push((node.cidr, label));
                        self.emit(l, label, out);
                        self.emit(r, label, out);
                    }
                    _ => {
                        self.emit(l, inherited, out);
                        self.emit(r, inherited, out);
                    }
                }
            }
        }
    }
}

/// The minimal route set inside `within` for disjoint `items` (prefix, label), assuming nothing
/// above `within` matches (inherited label `None`). Items outside `within` are ignored.
pub fn aggregate<L: Ord + Copy>(within: Cidr, items: &[(Cidr, Option<L>)]) -> Vec<(Cidr, Option<L>)> {
    Shared::new(within, items).aggregate_as(None)
}

/// One leaf's trie built once for all of its hosts (every host of a leaf routes the same
/// blocks, its own relabelled as throws). `aggregate_as(own)` equals
/// `aggregate` over the items with `own`'s relabelled `None`, and costs only the nodes on the
/// paths to `own`'s items plus the emission, instead of a trie per host.
#[derive(Debug)]
pub struct Shared<L> {
    trie: Trie<L>,
    root: u32,
    /// The pool's length after the build: what a relabelling appends is dropped after it.
    built: usize,
    undo: Vec<(u32, Node<L>)>,
}

impl<L: Ord + Copy> Shared<L> {
    /// The trie of `within` over `items` (disjoint; those outside `within` are ignored).
    pub fn new(within: Cidr, items: &[(Cidr, Option<L>)]) -> Self {
        let mut items: Vec<_> = items.iter().filter(|(c, _)| within.contains(c)).copied().collect();
        items.sort_by_key(|(c, _)| *c);
        let mut trie = Trie { nodes: Vec::with_capacity(items.len() * 2 + 1), pool: Vec::new() };
        let root = trie.build(within, &items);
        let built = trie.pool.len();
        Shared { trie, root, built, undo: Vec::new() }
    }

    /// The minimal route set with the items labelled `own` relabelled `None` (`None`: as built).
    pub fn aggregate_as(&mut self, own: Option<L>) -> Vec<(Cidr, Option<L>)> {
        if let Some(own) = own {
            self.trie.relabel(self.root, own, &mut self.undo);
        }
        let mut out = Vec::new();
        self.trie.emit(self.root, None, &mut out);
        out.sort_by_key(|(c, _)| *c);
        // Back to the trie as built, for the next host.
        for (n, node) in self.undo.drain(..).rev() {
            self.trie.nodes[n as usize] = node;
        }
        self.trie.pool.truncate(self.built);
        out
    }
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
