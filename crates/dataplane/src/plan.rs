//! The plan from an observed host state to a desired one: an ordered list of steps that an adapter
//! applies one by one. A route whose next hop changes is replaced in place (one netlink
//! `NLM_F_REPLACE`), never deleted and re-added, so traffic on it is not interrupted; a state that
//! already matches gives an empty plan, which is what makes an agent restart disruption-free.

use std::collections::BTreeSet;
use std::fmt;

use romana_model::Cidr;

use crate::state::{HostState, LinkKind, LinkName, NextHop};

/// One kernel change. Deleting something already gone is success for the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Only the gateway: endpoint links are made by the CNI plugin with their peer in the pod.
    AddLink {
        name: LinkName,
        kind: LinkKind,
    },
    /// An endpoint whose link is not on the host (its pod is being set up, or the link was
    /// deleted behind our back): reported, and its routes wait until the link exists.
    MissingEndpoint {
        link: LinkName,
    },
    DelLink {
        name: LinkName,
    },
    AddAddress {
        link: LinkName,
        addr: Cidr,
    },
    DelAddress {
        link: LinkName,
        addr: Cidr,
    },
    AddRoute {
        dest: Cidr,
        next: NextHop,
    },
    ReplaceRoute {
        dest: Cidr,
        from: NextHop,
        to: NextHop,
    },
    DelRoute {
        dest: Cidr,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::AddLink { name, kind } => write!(f, "add link {name} ({kind:?})"),
            Step::DelLink { name } => write!(f, "delete link {name}"),
            Step::MissingEndpoint { link } => write!(f, "endpoint link {link} is missing; its routes wait"),
            Step::AddAddress { link, addr } => write!(f, "add address {addr} dev {link}"),
            Step::DelAddress { link, addr } => write!(f, "delete address {addr} dev {link}"),
            Step::AddRoute { dest, next } => write!(f, "add route {dest} {next}"),
            Step::ReplaceRoute { dest, from, to } => write!(f, "replace route {dest} {from} -> {to}"),
            Step::DelRoute { dest } => write!(f, "delete route {dest}"),
        }
    }
}

/// Steps in the order they must run: links before what lives on them, new routes before old ones
/// go (so a prefix is never unrouted while its replacement exists), links last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// What the kernel would hold after the plan, by the kernel's rules (deleting a link takes its
    /// addresses and routes with it). An error names a step whose precondition does not hold,
    /// which would be a bug in [`diff`]; tests use this to prove plans converge.
    pub fn apply_to(&self, observed: &HostState) -> Result<HostState, String> {
        let mut s = observed.clone();
        for step in &self.steps {
            let need_link = |s: &HostState, l: &LinkName| {
                if s.links.contains_key(l) { Ok(()) } else { Err(format!("{step}: no link {l}")) }
            };
            match step {
                Step::AddLink { name, kind } => {
                    if *kind != LinkKind::Gateway {
                        return Err(format!("{step}: the agent does not create endpoint links"));
                    }
                    if s.links.insert(name.clone(), *kind).is_some() {
                        return Err(format!("{step}: link exists"));
                    }
                }
                Step::MissingEndpoint { .. } => {}
                Step::DelLink { name } => {
                    s.links.remove(name);
                    s.addresses.retain(|(l, _)| l != name);
                    s.routes.retain(|_, n| *n != NextHop::Dev(name.clone()));
                }
                Step::AddAddress { link, addr } => {
                    need_link(&s, link)?;
                    s.addresses.insert((link.clone(), *addr));
                }
                Step::DelAddress { link, addr } => {
                    s.addresses.remove(&(link.clone(), *addr));
                }
                Step::AddRoute { dest, next } | Step::ReplaceRoute { dest, to: next, .. } => {
                    if let NextHop::Dev(l) = next {
                        need_link(&s, l)?;
                    }
                    let old = s.routes.insert(*dest, next.clone());
                    if matches!(step, Step::AddRoute { .. }) && old.is_some() {
                        return Err(format!("{step}: route exists"));
                    }
                    if matches!(step, Step::ReplaceRoute { .. }) && old.is_none() {
                        return Err(format!("{step}: no route to replace"));
                    }
                }
                Step::DelRoute { dest } => {
                    s.routes.remove(dest);
                }
            }
        }
        Ok(s)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(f, "{step}")?;
        }
        Ok(())
    }
}

/// The steps that turn `observed` into [`reachable`]`(observed, desired)`. Both hold only
/// Romana-marked objects (the adapter filters what it observes by link prefix and route protocol),
/// so nothing else is touched.
pub fn diff(observed: &HostState, desired: &HostState) -> Plan {
    let mut steps = Vec::new();
    let missing = missing_endpoints(observed, desired);
    for link in &missing {
        steps.push(Step::MissingEndpoint { link: link.clone() });
    }
    let desired = &without_links(desired, &missing);
    // A link whose kind changed is recreated; the kernel drops its addresses and routes with it,
    // so the rest of the diff starts from a view without them.
    let recreate: BTreeSet<&LinkName> = desired
        .links
        .iter()
        .filter(|(name, kind)| observed.links.get(*name).is_some_and(|k| k != *kind))
        .map(|(name, _)| name)
        .collect();
    let mut base = observed.clone();
    for name in &recreate {
        steps.push(Step::DelLink { name: (*name).clone() });
        base.links.remove(*name);
        base.addresses.retain(|(l, _)| l != *name);
        base.routes.retain(|_, n| *n != NextHop::Dev((*name).clone()));
    }
    for (name, kind) in &desired.links {
        if !base.links.contains_key(name) {
            steps.push(Step::AddLink { name: name.clone(), kind: *kind });
        }
    }
    for (link, addr) in desired.addresses.difference(&base.addresses) {
        steps.push(Step::AddAddress { link: link.clone(), addr: *addr });
    }
    for (dest, next) in &desired.routes {
        match base.routes.get(dest) {
            None => steps.push(Step::AddRoute { dest: *dest, next: next.clone() }),
            Some(old) if old != next => {
                steps.push(Step::ReplaceRoute { dest: *dest, from: old.clone(), to: next.clone() })
            }
            Some(_) => {}
        }
    }
    for dest in base.routes.keys().filter(|d| !desired.routes.contains_key(*d)) {
        steps.push(Step::DelRoute { dest: *dest });
    }
    for (link, addr) in base.addresses.difference(&desired.addresses) {
        if desired.links.contains_key(link) {
            steps.push(Step::DelAddress { link: link.clone(), addr: *addr });
        }
    }
    for name in base.links.keys().filter(|l| !desired.links.contains_key(*l)) {
        steps.push(Step::DelLink { name: name.clone() });
    }
    Plan { steps }
}

/// Endpoint links the desired state needs and the host does not have (or has as another kind):
/// only the CNI plugin can make them.
fn missing_endpoints(observed: &HostState, desired: &HostState) -> BTreeSet<LinkName> {
    desired
        .links
        .iter()
        .filter(|(name, kind)| **kind == LinkKind::Endpoint && observed.links.get(*name) != Some(kind))
        .map(|(name, _)| name.clone())
        .collect()
}

fn without_links(state: &HostState, links: &BTreeSet<LinkName>) -> HostState {
    let mut s = state.clone();
    s.links.retain(|l, _| !links.contains(l));
    s.addresses.retain(|(l, _)| !links.contains(l));
    s.routes.retain(|_, n| !matches!(n, NextHop::Dev(l) if links.contains(l)));
    s
}

/// What a plan from `observed` can reach: `desired` without endpoints whose link is missing.
pub fn reachable(observed: &HostState, desired: &HostState) -> HostState {
    without_links(desired, &missing_endpoints(observed, desired))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn link(s: &str) -> LinkName {
        LinkName::new(s).expect("test link names are marked")
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("literal")
    }

    /// A state from lines `link NAME gw|ep`, `addr CIDR NAME`, `route CIDR dev NAME|via IP|throw`.
    fn state(lines: &[&str]) -> HostState {
        let mut s = HostState::default();
        for line in lines {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["link", n, "gw"] => drop(s.links.insert(link(n), LinkKind::Gateway)),
                ["link", n, "ep"] => drop(s.links.insert(link(n), LinkKind::Endpoint)),
                ["addr", c, n] => drop(s.addresses.insert((link(n), cidr(c)))),
                ["route", c, "dev", n] => drop(s.routes.insert(cidr(c), NextHop::Dev(link(n)))),
                ["route", c, "via", ip] => {
                    drop(s.routes.insert(cidr(c), NextHop::Via(ip.parse().expect("ip"))))
                }
                ["route", c, "throw"] => drop(s.routes.insert(cidr(c), NextHop::Throw)),
                _ => panic!("bad test line {line:?}"),
            }
        }
        s
    }

    /// The plan from `observed` to `desired` is `expect`, and applying it converges.
    fn check(observed: &[&str], desired: &[&str], expect: &[&str]) {
        let (o, d) = (state(observed), state(desired));
        let plan = diff(&o, &d);
        let got: Vec<String> = plan.steps.iter().map(ToString::to_string).collect();
        assert_eq!(got, expect);
        assert_eq!(plan.apply_to(&o), Ok(reachable(&o, &d)));
    }

    #[test]
    fn fresh_host() {
        check(
            &[],
            &[
                "link romana-gw gw",
                "addr 10.0.0.1/32 romana-gw",
                "link romana-c1 ep",
                "route 10.1.0.5/32 dev romana-c1",
            ],
            &[
                "endpoint link romana-c1 is missing; its routes wait",
                "add link romana-gw (Gateway)",
                "add address 10.0.0.1/32 dev romana-gw",
            ],
        );
        check(
            &["link romana-c1 ep"],
            &[
                "link romana-gw gw",
                "addr 10.0.0.1/32 romana-gw",
                "link romana-c1 ep",
                "route 10.1.0.5/32 dev romana-c1",
            ],
            &[
                "add link romana-gw (Gateway)",
                "add address 10.0.0.1/32 dev romana-gw",
                "add route 10.1.0.5/32 dev romana-c1",
            ],
        );
    }

    #[test]
    fn converged_host_is_left_alone() {
        let s = [
            "link romana-gw gw",
            "link romana-c1 ep",
            "route 10.1.0.5/32 dev romana-c1",
            "route 10.2.0.0/16 via 192.168.0.2",
        ];
        check(&s, &s, &[]);
    }

    #[test]
    fn changed_next_hop_is_replaced_in_place_and_old_routes_go_after_new_ones() {
        check(
            &["route 10.2.0.0/16 via 192.168.0.2", "route 10.3.0.0/16 via 192.168.0.3"],
            &["route 10.2.0.0/16 via 192.168.0.9", "route 10.4.0.0/16 via 192.168.0.4"],
            &[
                "replace route 10.2.0.0/16 via 192.168.0.2 -> via 192.168.0.9",
                "add route 10.4.0.0/16 via 192.168.0.4",
                "delete route 10.3.0.0/16",
            ],
        );
    }

    #[test]
    fn removed_endpoint_and_recreated_link() {
        check(
            &[
                "link romana-gw ep",
                "addr 10.0.0.1/32 romana-gw",
                "link romana-c1 ep",
                "route 10.1.0.5/32 dev romana-c1",
            ],
            &["link romana-gw gw", "addr 10.0.0.1/32 romana-gw"],
            &[
                "delete link romana-gw",
                "add link romana-gw (Gateway)",
                "add address 10.0.0.1/32 dev romana-gw",
                "delete route 10.1.0.5/32",
                "delete link romana-c1",
            ],
        );
    }

    fn arb_state() -> impl Strategy<Value = HostState> {
        let names = ["romana-gw", "romana-a", "romana-b", "romana-c"];
        (
            proptest::collection::btree_map(0..4usize, any::<bool>(), 0..4),
            proptest::collection::btree_set((0..4usize, 0..4u8), 0..6),
            proptest::collection::btree_map(0..8u8, (0..6u8, 0..4usize), 0..8),
        )
            .prop_map(move |(links, addrs, routes)| {
                let mut s = HostState::default();
                for (i, gw) in links {
                    s.links.insert(link(names[i]), if gw { LinkKind::Gateway } else { LinkKind::Endpoint });
                }
                for (i, a) in addrs {
                    if s.links.contains_key(&link(names[i])) {
                        s.addresses.insert((link(names[i]), cidr(&format!("10.0.0.{a}/32"))));
                    }
                }
                for (d, (hop, i)) in routes {
                    let next = match hop {
                        0 | 1 if s.links.contains_key(&link(names[i])) => NextHop::Dev(link(names[i])),
                        0..=3 => NextHop::Via(format!("192.168.0.{hop}").parse().expect("ip")),
                        _ => NextHop::Throw,
                    };
                    s.routes.insert(cidr(&format!("10.{d}.0.0/16")), next);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn every_plan_converges_and_a_converged_host_needs_nothing(o in arb_state(), d in arb_state()) {
            let plan = diff(&o, &d);
            let reached = plan.apply_to(&o);
            prop_assert_eq!(&reached, &Ok(reachable(&o, &d)));
            prop_assert!(diff(&d, &d).is_empty());
            // Once the CNI made the missing links, the next pass converges fully.
            let mut with_links = reached.expect("checked");
            for (l, k) in &d.links {
                if *k == LinkKind::Endpoint && with_links.links.get(l) != Some(k) {
                    with_links = Plan { steps: vec![Step::DelLink { name: l.clone() }] }.apply_to(&with_links).expect("delete");
                    with_links.links.insert(l.clone(), *k);
                }
            }
            prop_assert_eq!(diff(&with_links, &d).apply_to(&with_links), Ok(d.clone()));
        }
    }
}
