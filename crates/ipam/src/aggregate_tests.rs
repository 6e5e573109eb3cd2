//! Tests of route aggregation: worked cases, exactness and minimality against brute force on
//! small tries, and the arena implementation (from scratch, and shared by a leaf's hosts) against
//! the first one (kept here as the reference: a `BTreeMap` per trie node, sums built again while
//! emitting) on random leaves, route for route.

#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use romana_model::Family;

/// The first implementation, kept as the reference the arena one must equal route for route.
mod reference {
    use std::collections::BTreeMap;

    use romana_model::Cidr;

    /// Route count below a node as a function of the inherited label: `by[x]`, or `other` for labels
    /// that do not occur below (all of which cost the same).
    #[derive(Debug, Clone)]
    struct Cost<L: Ord> {
        other: u32,
        by: BTreeMap<Option<L>, u32>,
    }

    impl<L: Ord + Copy> Cost<L> {
        fn at(&self, x: &Option<L>) -> u32 {
            self.by.get(x).copied().unwrap_or(self.other)
        }

        /// The cheapest label to emit here, and its cost (ties go to the smallest label).
        fn best(&self) -> Option<(Option<L>, u32)> {
            self.by.iter().min_by_key(|(_, c)| **c).map(|(l, c)| (*l, *c))
        }
    }

    #[derive(Debug)]
    enum Kind<L: Ord> {
        Empty,
        Item(Option<L>),
        Split(Box<Node<L>>, Box<Node<L>>),
    }

    #[derive(Debug)]
    struct Node<L: Ord> {
        cidr: Cidr,
        kind: Kind<L>,
        cost: Cost<L>,
    }

    fn build<L: Ord + Copy>(cidr: Cidr, items: &[(Cidr, Option<L>)]) -> Node<L> {
        match items {
            [] => Node { cidr, kind: Kind::Empty, cost: Cost { other: 0, by: BTreeMap::new() } },
            [(c, label)] if *c == cidr => Node {
                cidr,
                kind: Kind::Item(*label),
                cost: Cost { other: 1, by: BTreeMap::from([(*label, 0)]) },
            },
            _ => {
                let Some((lo, hi)) = cidr.halves() else {
                    // A single address with several items cannot happen for disjoint input; keep the first.
                    return build(cidr, &items[..1]);
                };
                let split = items.partition_point(|(c, _)| lo.contains(c));
                let (l, r) = (build(lo, &items[..split]), build(hi, &items[split..]));
                let mut by = BTreeMap::new();
                for key in l.cost.by.keys().chain(r.cost.by.keys()) {
                    by.entry(*key).or_insert_with(|| l.cost.at(key) + r.cost.at(key));
                }
                let sum = Cost { other: l.cost.other + r.cost.other, by };
                let floor = sum.best().map_or(sum.other, |(_, c)| c) + 1;
                let cost = Cost {
                    other: sum.other.min(floor),
                    by: sum.by.into_iter().map(|(k, c)| (k, c.min(floor))).collect(),
                };
                Node { cidr, kind: Kind::Split(Box::new(l), Box::new(r)), cost }
            }
        }
    }

    fn emit<L: Ord + Copy>(node: &Node<L>, inherited: Option<L>, out: &mut Vec<(Cidr, Option<L>)>) {
        match &node.kind {
            Kind::Empty => {}
            Kind::Item(label) => {
                if *label != inherited {
                    out.push((node.cidr, *label));
                }
            }
            Kind::Split(l, r) => {
                let keep = l.cost.at(&inherited) + r.cost.at(&inherited);
                let mut sums: BTreeMap<Option<L>, u32> = BTreeMap::new();
                for key in l.cost.by.keys().chain(r.cost.by.keys()) {
                    sums.entry(*key).or_insert_with(|| l.cost.at(key) + r.cost.at(key));
                }
                let best = sums.iter().min_by_key(|(_, c)| **c).map(|(k, c)| (*k, *c));
                match best {
                    Some((label, cost)) if cost + 1 < keep => {
                        out.push((node.cidr, label));
                        emit(l, label, out);
                        emit(r, label, out);
                    }
                    _ => {
                        emit(l, inherited, out);
                        emit(r, inherited, out);
                    }
                }
            }
        }
    }

    pub fn aggregate<L: Ord + Copy>(within: Cidr, items: &[(Cidr, Option<L>)]) -> Vec<(Cidr, Option<L>)> {
        let mut items: Vec<_> = items.iter().filter(|(c, _)| within.contains(c)).copied().collect();
        items.sort_by_key(|(c, _)| *c);
        let root = build(within, &items);
        let mut out = Vec::new();
        emit(&root, None, &mut out);
        out.sort_by_key(|(c, _)| *c);
        out
    }
}

fn c(s: &str) -> Cidr {
    s.parse().expect("test CIDR")
}

fn check(within: &str, items: &[(&str, Option<u8>)], expect: &[(&str, Option<u8>)]) {
    let items: Vec<_> = items.iter().map(|(s, l)| (c(s), *l)).collect();
    let got: Vec<(String, Option<u8>)> =
        aggregate(c(within), &items).into_iter().map(|(c, l)| (c.to_string(), l)).collect();
    let want: Vec<(String, Option<u8>)> = expect.iter().map(|(s, l)| (s.to_string(), *l)).collect();
    assert_eq!(got, want);
}

#[test]
fn cases() {
    // Four blocks of one host merge into one /27, the tightest prefix that covers them.
    check(
        "10.0.0.0/26",
        &[
            ("10.0.0.0/29", Some(1)),
            ("10.0.0.8/29", Some(1)),
            ("10.0.0.16/29", Some(1)),
            ("10.0.0.24/29", Some(1)),
        ],
        &[("10.0.0.0/27", Some(1))],
    );
    // Own block inside another host's run: two routes either way; specifics win the tie, so no throw.
    check(
        "10.0.0.0/27",
        &[
            ("10.0.0.0/29", Some(1)),
            ("10.0.0.8/29", None),
            ("10.0.0.16/29", Some(1)),
            ("10.0.0.24/29", Some(1)),
        ],
        &[("10.0.0.0/29", Some(1)), ("10.0.0.16/28", Some(1))],
    );
    // A throw pierces an aggregate only when that saves a route.
    check(
        "10.0.0.0/26",
        &[
            ("10.0.0.0/29", Some(1)),
            ("10.0.0.8/29", Some(1)),
            ("10.0.0.16/29", Some(1)),
            ("10.0.0.24/29", None),
            ("10.0.0.32/29", Some(1)),
            ("10.0.0.40/29", Some(1)),
            ("10.0.0.48/29", Some(1)),
            ("10.0.0.56/29", Some(1)),
        ],
        &[("10.0.0.0/26", Some(1)), ("10.0.0.24/29", None)],
    );
    // Own block alone: nothing to route.
    check("10.0.0.0/27", &[("10.0.0.8/29", None)], &[]);
    // Two hosts interleaved: no aggregation helps beyond one prefix each side.
    check(
        "10.0.0.0/28",
        &[("10.0.0.0/29", Some(1)), ("10.0.0.8/29", Some(2))],
        &[("10.0.0.0/29", Some(1)), ("10.0.0.8/29", Some(2))],
    );
    // Majority label takes the aggregate, the minority gets specifics.
    check(
        "10.0.0.0/27",
        &[
            ("10.0.0.0/29", Some(1)),
            ("10.0.0.8/29", Some(2)),
            ("10.0.0.16/29", Some(1)),
            ("10.0.0.24/29", Some(1)),
        ],
        &[("10.0.0.0/27", Some(1)), ("10.0.0.8/29", Some(2))],
    );
}

/// Brute force over every labelling of every trie node, for tiny tries.
fn brute_force(within: Cidr, items: &[(Cidr, Option<u8>)], labels: &[Option<u8>]) -> usize {
    let mut nodes = vec![within];
    let mut i = 0;
    while i < nodes.len() {
        if let Some((a, b)) = nodes[i].halves().filter(|_| nodes[i].host_bits() > 2) {
            nodes.push(a);
            nodes.push(b);
        }
        i += 1;
    }
    // Each node: no route, or a route with one of the labels.
    let choices = labels.len() + 1;
    let mut best = usize::MAX;
    let total = choices.pow(nodes.len() as u32);
    for mut code in 0..total {
        let mut routes = Vec::new();
        for n in &nodes {
            let pick = code % choices;
            code /= choices;
            if pick > 0 {
                routes.push((*n, labels[pick - 1]));
            }
        }
        let ok = items.iter().all(|(cidr, want)| {
            (cidr.first()..=cidr.last()).all(|v| lookup(&routes, Family::V4, v).unwrap_or(None) == *want)
        });
        if ok {
            best = best.min(routes.len());
        }
    }
    best
}

fn arb_items() -> impl Strategy<Value = Vec<Option<Option<u8>>>> {
    // 4 blocks of /30 in a /28: each block absent, own (None) or one of two hosts.
    proptest::collection::vec(proptest::option::of(proptest::option::of(1u8..=2)), 4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn exact_and_minimal_on_small_tries(blocks in arb_items()) {
        let within = c("10.0.0.0/28");
        let items: Vec<(Cidr, Option<u8>)> = blocks.iter().enumerate()
            .filter_map(|(i, b)| b.map(|l| (within.subnet(i as u128, 30).unwrap(), l)))
            .collect();
        let routes = aggregate(within, &items);
        for (cidr, want) in &items {
            for v in cidr.first()..=cidr.last() {
                prop_assert_eq!(lookup(&routes, Family::V4, v).unwrap_or(None), *want);
            }
        }
        let optimum = brute_force(within, &items, &[None, Some(1), Some(2)]);
        prop_assert_eq!(routes.len(), optimum);
    }

    #[test]
    fn exact_on_large_random_sets(labels in proptest::collection::vec(proptest::option::of(proptest::option::of(0u8..6)), 1..200)) {
        let within = c("10.0.0.0/16");
        let items: Vec<(Cidr, Option<u8>)> = labels.iter().enumerate()
            .filter_map(|(i, l)| l.map(|l| (within.subnet(i as u128 * 3, 26).unwrap(), l)))
            .collect();
        let routes = aggregate(within, &items);
        prop_assert!(routes.len() <= items.len());
        for (cidr, want) in &items {
            prop_assert_eq!(lookup(&routes, Family::V4, cidr.first()).unwrap_or(None), *want);
            prop_assert_eq!(lookup(&routes, Family::V4, cidr.last()).unwrap_or(None), *want);
        }
    }

    /// Leaves as a host's set sees them: many hosts' blocks, each host's own relabelled
    /// `None`, with gaps; the arena implementation gives exactly the reference's routes.
    #[test]
    fn equal_to_the_reference(owners in proptest::collection::vec(proptest::option::of(0u16..40), 1..600), me in 0u16..40) {
        let within = c("10.0.0.0/12");
        let items: Vec<(Cidr, Option<u16>)> = owners.iter().enumerate()
            .filter_map(|(i, o)| o.map(|o| (within.subnet(i as u128 * 5 / 2, 26).unwrap(), (o != me).then_some(o))))
            .collect();
        prop_assert_eq!(aggregate(within, &items), reference::aggregate(within, &items));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// One shared trie, every host's routes from it in turn (the relabelling undone between
    /// them): each equals the reference over that host's own relabelling, in any order.
    #[test]
    fn a_shared_trie_gives_each_host_its_own_routes(owners in proptest::collection::vec(proptest::option::of(0u16..40), 1..600), order in proptest::collection::vec(0u16..42, 1..12)) {
        let within = c("10.0.0.0/12");
        let items: Vec<(Cidr, Option<u16>)> = owners.iter().enumerate()
            .filter_map(|(i, o)| o.map(|o| (within.subnet(i as u128 * 5 / 2, 26).unwrap(), Some(o))))
            .collect();
        let mut shared = Shared::new(within, &items);
        prop_assert_eq!(shared.aggregate_as(None), reference::aggregate(within, &items));
        for me in order {
            let mine: Vec<_> = items.iter().map(|(c, o)| (*c, o.filter(|o| *o != me))).collect();
            prop_assert_eq!(shared.aggregate_as(Some(me)), reference::aggregate(within, &mine), "host {}", me);
        }
    }
}
