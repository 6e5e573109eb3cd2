//! The fast path's content, pure: which local endpoints packets may be handed to or taken from
//! past the host's forwarding path (docs/fastpath.md), the map changes that get the kernel's
//! copy there, and which other netfilter hooks forbid it.
//!
//! Bypassing the forwarding path also bypasses the firewall's forward hook (and conntrack), so
//! only endpoints that no rule filters may be in it: the caller passes them as `eligible` (the
//! firewall's local endpoints isolated in neither direction, from the same pass that put the
//! rules in place), or `None` when this host enforces no policy at all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::state::LinkName;

/// An endpoint's /32 route of ours out of its host-side veth, as observed in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRoute {
    pub ip: Ipv4Addr,
    pub link: LinkName,
    pub ifindex: u32,
}

/// The fast path's map: destination address -> host-side veth to hand the packet to.
pub type Deliveries = BTreeMap<Ipv4Addr, u32>;

/// What the map should hold. Only veth routes count (the caller passes only those: the fast path
/// enters the pod through the veth's peer, which a tap does not have); an address routed out of
/// two links is left to the kernel's routing.
pub fn deliveries(routes: &[EndpointRoute], eligible: Option<&BTreeSet<Ipv4Addr>>) -> Deliveries {
    let mut seen: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for r in routes {
        *seen.entry(r.ip).or_default() += 1;
    }
    routes
        .iter()
        .filter(|r| seen[&r.ip] == 1 && eligible.is_none_or(|e| e.contains(&r.ip)))
        .map(|r| (r.ip, r.ifindex))
        .collect()
}

/// Changes from `current` to `desired`: entries to set (new or with another link), then entries
/// to delete.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MapDiff {
    pub put: Vec<(Ipv4Addr, u32)>,
    pub delete: Vec<Ipv4Addr>,
}

impl MapDiff {
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.delete.is_empty()
    }
}

pub fn diff_map(current: &Deliveries, desired: &Deliveries) -> MapDiff {
    MapDiff {
        put: desired.iter().filter(|(ip, i)| current.get(ip) != Some(i)).map(|(ip, i)| (*ip, *i)).collect(),
        delete: current.keys().filter(|ip| !desired.contains_key(ip)).copied().collect(),
    }
}

/// The netfilter hooks a delivered packet would pass on the kernel's path: prerouting, forward
/// and postrouting, and ingress (netdev, or inet since Linux 5.10).
const BYPASSED_HOOKS: [&str; 4] = ["prerouting", "forward", "postrouting", "ingress"];

/// Chains of other tables on hooks the fast path bypasses, from `nft list chains`: NAT (kube-proxy,
/// Docker, masquerading) needs conntrack to see both directions of a flow, and conntrack-based
/// filters (kube-proxy drops `ct state invalid`) misjudge a flow whose inbound half skipped
/// them. While any exists, the fast path must stay empty. Our own `inet romana` does not count:
/// its chains drop only isolated endpoints' traffic, and those endpoints are never delivered.
pub fn foreign_hooks(listing: &str) -> Vec<String> {
    let (mut table, mut chain) = ("", "");
    let mut out = vec![];
    for line in listing.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("table ") {
            table = t.trim_end_matches('{').trim();
        } else if let Some(c) = line.strip_prefix("chain ") {
            chain = c.trim_end_matches('{').trim();
        } else if let Some((_, rest)) = line.split_once(" hook ") {
            let hook = rest.split_whitespace().next().unwrap_or("");
            if table != "inet romana" && BYPASSED_HOOKS.contains(&hook) {
                out.push(format!("table {table} chain {chain} hook {hook}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(ip: &str, link: &str, ifindex: u32) -> EndpointRoute {
        EndpointRoute {
            ip: ip.parse().expect("test address"),
            link: LinkName::new(link).expect("test link"),
            ifindex,
        }
    }

    fn render(d: &Deliveries) -> Vec<String> {
        d.iter().map(|(ip, i)| format!("{ip} -> {i}")).collect()
    }

    /// Routes and eligibility in, map content out; then the diff from `current` to it, which
    /// applied to `current` must give exactly that content.
    fn check(routes: &[EndpointRoute], eligible: Option<&[&str]>, current: &[(&str, u32)], expect: &[&str]) {
        let eligible: Option<BTreeSet<Ipv4Addr>> =
            eligible.map(|e| e.iter().map(|s| s.parse().expect("test address")).collect());
        let want = deliveries(routes, eligible.as_ref());
        assert_eq!(render(&want), expect);
        let mut current: Deliveries =
            current.iter().map(|(ip, i)| (ip.parse().expect("test address"), *i)).collect();
        let d = diff_map(&current, &want);
        for ip in &d.delete {
            assert!(current.remove(ip).is_some(), "deletes only what is there");
        }
        current.extend(d.put.iter().copied());
        assert_eq!(current, want);
        assert!(diff_map(&want, &want).is_empty());
    }

    #[test]
    fn without_policy_every_endpoint_route_is_delivered() {
        let r = [route("10.1.0.2", "romana1", 7), route("10.1.0.3", "romana2", 8)];
        check(&r, None, &[], &["10.1.0.2 -> 7", "10.1.0.3 -> 8"]);
    }

    #[test]
    fn only_eligible_endpoints_and_nothing_before_the_firewall_said_which() {
        let r = [route("10.1.0.2", "romana1", 7), route("10.1.0.3", "romana2", 8)];
        check(&r, Some(&["10.1.0.3", "10.9.9.9"]), &[("10.1.0.2", 7)], &["10.1.0.3 -> 8"]);
        check(&r, Some(&[]), &[("10.1.0.2", 7), ("10.1.0.3", 8)], &[]);
    }

    #[test]
    fn a_recreated_link_is_updated_in_place_and_a_gone_route_is_deleted() {
        let r = [route("10.1.0.2", "romana1", 9)];
        check(&r, None, &[("10.1.0.2", 7), ("10.1.0.3", 8)], &["10.1.0.2 -> 9"]);
    }

    #[test]
    fn an_address_routed_out_of_two_links_is_left_to_the_kernel() {
        let r = [
            route("10.1.0.2", "romana1", 7),
            route("10.1.0.2", "romana2", 8),
            route("10.1.0.4", "romana3", 9),
        ];
        check(&r, None, &[("10.1.0.2", 7)], &["10.1.0.4 -> 9"]);
    }

    #[test]
    fn other_tables_on_bypassed_hooks_block_the_fast_path() {
        let listing = "table ip nat {\n\tchain PREROUTING {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n\
            \tchain OUTPUT {\n\t\ttype nat hook output priority -100; policy accept;\n\t}\n\tchain KUBE-SERVICES {\n\t}\n}\n\
            table inet romana {\n\tchain fwd-ingress {\n\t\ttype filter hook forward priority filter + 1; policy accept;\n\t}\n}\n\
            table netdev edge {\n\tchain in {\n\t\ttype filter hook ingress device \"eth0\" priority 0; policy accept;\n\t}\n}\n\
            table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n";
        assert_eq!(
            foreign_hooks(listing),
            ["table ip nat chain PREROUTING hook prerouting", "table netdev edge chain in hook ingress"]
        );
        assert!(foreign_hooks("").is_empty());
        assert!(foreign_hooks("table inet romana {\n\tchain fwd-egress {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n").is_empty());
    }
}
