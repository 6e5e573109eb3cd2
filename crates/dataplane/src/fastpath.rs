//! The fast path's content, pure: which local endpoints packets may be handed to or taken from
//! past the host's forwarding path (docs/fastpath.md), the map changes that get the kernel's
//! copy there, which other netfilter hooks forbid it, and which uplinks' wires it may skip.
//!
//! Bypassing the forwarding path also bypasses the firewall's forward hook (and conntrack), so
//! only endpoints that no rule filters may be in it: the caller passes them as `eligible` (the
//! firewall's local endpoints isolated in neither direction, from the same pass that put the
//! rules in place), or `None` when this host enforces no policy at all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::state::LinkName;

/// An endpoint's /32 or /128 route of ours out of its host-side veth, as observed in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRoute {
    pub ip: IpAddr,
    pub link: LinkName,
    pub ifindex: u32,
}

/// The fast path's maps (one per family in the kernel): destination address -> host-side veth to
/// hand the packet to.
pub type Deliveries = BTreeMap<IpAddr, u32>;

/// What the map should hold. Only veth routes count (the caller passes only those: the fast path
/// enters the pod through the veth's peer, which a tap does not have); an address routed out of
/// two links is left to the kernel's routing.
pub fn deliveries(routes: &[EndpointRoute], eligible: Option<&BTreeSet<IpAddr>>) -> Deliveries {
    let mut seen: BTreeMap<IpAddr, usize> = BTreeMap::new();
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
    pub put: Vec<(IpAddr, u32)>,
    pub delete: Vec<IpAddr>,
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
    hooked_chains(listing, &BYPASSED_HOOKS)
}

/// Chains on the netdev egress hook, from `nft list chains`: a packet handed to the far end of
/// a veth uplink (`handoff`) is not transmitted by the uplink, so these would miss it.
pub fn egress_hooks(listing: &str) -> Vec<String> {
    hooked_chains(listing, &["egress"])
}

/// "table T chain C hook H" for each chain of a table other than ours on one of `hooks`.
fn hooked_chains(listing: &str, hooks: &[&str]) -> Vec<String> {
    let (mut table, mut chain) = ("", "");
    let mut out = vec![];
    for line in listing.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("table ") {
            table = t.trim_end_matches('{').trim();
        } else if let Some(c) = line.strip_prefix("chain ") {
            chain = c.trim_end_matches('{').trim();
        } else if let Some((_, rest)) = line.split_once(" hook ") {
            let hook = rest.split_whitespace().next().unwrap_or("");
            if table != "inet romana" && hooks.contains(&hook) {
                out.push(format!("table {table} chain {chain} hook {hook}"));
            }
        }
    }
    out
}

/// An uplink as observed: what `romana_send` sends out of, and what decides whether it may hand
/// packets straight to the far end of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub ifindex: u32,
    /// Its far end when it is a veth whose peer is in another namespace (a nested host, or
    /// hosts simulated as namespaces): `None` for a NIC or anything else.
    pub far_end: Option<FarEnd>,
    /// The kinds of the qdiscs on it (`noqueue` for a veth nobody shapes); read only when it
    /// has a far end.
    pub qdiscs: Vec<String>,
    /// How many BPF programs run at its tcx egress; `None` when not known (read only when it
    /// has a far end).
    pub egress_programs: Option<usize>,
}

/// The peer of a veth uplink, in the other namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarEnd {
    pub mac: [u8; 6],
    /// An XDP program is attached to it (it runs only for transmitted packets).
    pub xdp: bool,
}

/// Whether `romana_send` may hand a packet whose next hop is `uplink`'s far end straight to
/// that end's ingress (`bpf_redirect_peer`), as if it had crossed the wire, instead of
/// transmitting it: the MAC the program then requires the FIB's next hop to have. It may when
/// nothing on the uplink's transmit side or the far end's XDP would have seen the packet: no
/// qdisc but `noqueue` (or `ingress`, which sees only what arrives), no tcx egress program, no
/// XDP on the far end, no nftables egress chain (`egress_chains`, from `egress_hooks`).
/// `Err` says why not.
pub fn handoff(uplink: &Uplink, egress_chains: &[String]) -> Result<[u8; 6], String> {
    let Some(far) = &uplink.far_end else {
        return Err("not a veth with its peer in another namespace".into());
    };
    let shaped: Vec<&String> = uplink.qdiscs.iter().filter(|q| *q != "noqueue" && *q != "ingress").collect();
    if !shaped.is_empty() {
        return Err(format!("qdiscs {shaped:?} on it"));
    }
    match uplink.egress_programs {
        Some(0) => {}
        Some(n) => return Err(format!("{n} tcx egress programs on it")),
        None => return Err("its tcx egress programs cannot be read".into()),
    }
    if far.xdp {
        return Err("an XDP program on its peer".into());
    }
    if !egress_chains.is_empty() {
        return Err(format!("nftables egress chains: {}", egress_chains.join(", ")));
    }
    Ok(far.mac)
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
        let eligible: Option<BTreeSet<IpAddr>> =
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

    /// A dual-stack endpoint has an entry per family, each eligible on its own (the firewall's
    /// sets are per family), to the same link.
    #[test]
    fn both_families_side_by_side() {
        let r =
            [route("10.1.0.2", "romana1", 7), route("fd10::2", "romana1", 7), route("fd10::3", "romana2", 8)];
        check(&r, None, &[], &["10.1.0.2 -> 7", "fd10::2 -> 7", "fd10::3 -> 8"]);
        check(&r, Some(&["10.1.0.2", "fd10::3"]), &[("fd10::2", 7)], &["10.1.0.2 -> 7", "fd10::3 -> 8"]);
        check(&[route("fd10::2", "romana1", 7), route("fd10::2", "romana2", 8)], None, &[], &[]);
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

    fn uplink(far_end: Option<FarEnd>, qdiscs: &[&str], egress_programs: Option<usize>) -> Uplink {
        Uplink {
            name: "eth0".into(),
            ifindex: 2,
            far_end,
            qdiscs: qdiscs.iter().map(|q| (*q).to_owned()).collect(),
            egress_programs,
        }
    }

    #[test]
    fn a_veth_uplink_is_skipped_only_when_nothing_on_its_transmit_side_would_see_the_packet() {
        let mac = [2, 0, 0, 0, 0, 7];
        let far = |xdp| Some(FarEnd { mac, xdp });
        let check = |u: Uplink, chains: &[&str], expect: Result<[u8; 6], &str>| {
            let chains: Vec<String> = chains.iter().map(|c| (*c).to_owned()).collect();
            assert_eq!(handoff(&u, &chains), expect.map_err(str::to_owned), "{u:?} {chains:?}");
        };
        check(uplink(far(false), &["noqueue"], Some(0)), &[], Ok(mac));
        check(uplink(far(false), &["noqueue", "ingress"], Some(0)), &[], Ok(mac));
        check(uplink(None, &["mq"], Some(0)), &[], Err("not a veth with its peer in another namespace"));
        check(uplink(far(false), &["noqueue", "clsact"], Some(0)), &[], Err("qdiscs [\"clsact\"] on it"));
        check(uplink(far(false), &["tbf"], Some(0)), &[], Err("qdiscs [\"tbf\"] on it"));
        check(uplink(far(false), &["noqueue"], Some(1)), &[], Err("1 tcx egress programs on it"));
        check(uplink(far(true), &["noqueue"], Some(0)), &[], Err("an XDP program on its peer"));
        check(uplink(far(false), &["noqueue"], None), &[], Err("its tcx egress programs cannot be read"));
        check(
            uplink(far(false), &["noqueue"], Some(0)),
            &["table netdev t chain out hook egress"],
            Err("nftables egress chains: table netdev t chain out hook egress"),
        );
    }

    #[test]
    fn egress_chains_are_found_apart_from_the_bypassed_hooks() {
        let listing = "table netdev shaper {\n\tchain out {\n\t\ttype filter hook egress device \"eth0\" priority 0; policy accept;\n\t}\n}\n\
            table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n";
        assert_eq!(egress_hooks(listing), ["table netdev shaper chain out hook egress"]);
        assert_eq!(foreign_hooks(listing), ["table ip filter chain FORWARD hook forward"]);
    }
}
