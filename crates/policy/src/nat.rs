//! Egress NAT, pure: which endpoints' traffic leaves masqueraded to the host's address, and the
//! `nat-out` chain (`type nat hook postrouting`) of our `inet romana` table that does it.
//! Computed from the topology (networks with `nat_outgoing`, the `no_nat` list, every host's
//! address) and the host's local endpoints; knows nothing of nft or the kernel.
//!
//! A packet is masqueraded when its source lies in a network with `nat_outgoing` and its
//! destination lies in no Romana network (pod to pod is never NATed), in no `no_nat` range (other
//! routed ranges), in no VIP range and is no VIP (a pod reaching a VIP keeps its address, so the
//! service's endpoints see who it is and policy can admit it; no operator has to list the VIP
//! ranges in `no_nat`), and is no host of the cluster (pod to host keeps the pod's address, as
//! Calico does with `natOutgoingExclusions: IPPoolsAndHostIPs`); and when its flow was not
//! DNATed (a VIP's connection: its endpoints answer as the VIP, never as the host). The chain
//! holds that exemption, then one rule per (source network), and exists only while a local
//! endpoint lies in such a network:
//! any nat chain makes conntrack track every forwarded packet, which a host with nothing to
//! masquerade should not pay for. Only a flow's first packet passes a nat chain; its replies are
//! translated back by conntrack.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use romana_api::topology::TopologyRequest;
use romana_api::vip::{VipConfig, VipInfo};
use romana_ipam::spec::{GroupOrHostSpec, TopologySpec};
use romana_model::{Cidr, Family};

use crate::ruleset::{Chain, Dir, Element, Hook, Line, Match, Ruleset, Verdict};

/// The chain's name in our table.
pub const CHAIN: &str = "nat-out";

/// nftables' `srcnat` priority: after every filter chain on postrouting, where NAT belongs.
pub const PRIORITY: i32 = 100;

/// What egress NAT depends on, from the topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatConfig {
    /// Every Romana network: never NATed as a destination.
    pub networks: Vec<Cidr>,
    /// The networks with `nat_outgoing`: their endpoints' traffic is masqueraded.
    pub masquerade: Vec<Cidr>,
    /// The topology's `no_nat` ranges.
    pub no_nat: Vec<Cidr>,
    /// Every host of the cluster.
    pub hosts: BTreeSet<IpAddr>,
    /// The VIP ranges (`/config/vips`) and every VIP's address (`/vips`): never NATed as a
    /// destination, without being listed in `no_nat`.
    pub vips: Vec<Cidr>,
}

impl NatConfig {
    pub fn from_spec(spec: &TopologySpec) -> NatConfig {
        let mut hosts = BTreeSet::new();
        let mut stack: Vec<&GroupOrHostSpec> = spec.topologies.iter().flat_map(|t| &t.map).collect();
        while let Some(e) = stack.pop() {
            match e {
                GroupOrHostSpec::Host(h) => {
                    hosts.insert(h.ip);
                }
                GroupOrHostSpec::Group(g) => stack.extend(&g.groups),
            }
        }
        NatConfig {
            networks: spec.networks.iter().map(|n| n.cidr).collect(),
            masquerade: spec.networks.iter().filter(|n| n.nat_outgoing).map(|n| n.cidr).collect(),
            no_nat: spec.no_nat.clone(),
            hosts,
            vips: Vec::new(),
        }
    }

    /// The same with the VIP ranges and addresses exempt as destinations.
    pub fn with_vips(mut self, vips: Vec<Cidr>) -> NatConfig {
        self.vips = vips;
        self
    }

    /// From `GET /topology` (which lists every host in its group).
    pub fn from_topology(t: &TopologyRequest) -> Result<NatConfig, romana_api::Problems> {
        Ok(NatConfig::from_spec(&t.to_spec()?))
    }

    /// Whether `ip` (an endpoint's address) lies in a network whose traffic is masqueraded.
    pub fn masquerades_from(&self, ip: IpAddr) -> bool {
        self.masquerade.iter().any(|n| n.contains_addr(ip))
    }

    /// The destinations never NATed, of one family: Romana networks, `no_nat`, hosts; none
    /// inside another (nft refuses overlapping elements in an interval set), in order.
    pub fn exempt(&self, family: Family) -> Vec<Cidr> {
        let all: BTreeSet<Cidr> = self
            .networks
            .iter()
            .chain(&self.no_nat)
            .chain(&self.vips)
            .copied()
            .chain(self.hosts.iter().map(|h| Cidr::host(*h)))
            .filter(|c| c.family() == family)
            .collect();
        // In `Cidr` order a net comes before the nets inside it, and the nets kept are disjoint:
        // a net lies inside one kept earlier exactly when it lies inside the last one kept.
        let mut kept: Vec<Cidr> = Vec::with_capacity(all.len());
        for c in all {
            if !kept.last().is_some_and(|k| k.contains(&c)) {
                kept.push(c);
            }
        }
        kept
    }

    /// The chain for a host whose local endpoints are `local`; `None` when none of them is
    /// masqueraded. First the flows a DNAT translated (a VIP's: `vip-dnat` on prerouting) leave
    /// untouched: their first packet is the client's, and an endpoint's replies must carry the
    /// VIP, which conntrack restores, never the host's address. Then one rule per network with
    /// `nat_outgoing` that holds a local endpoint.
    pub fn chain(&self, local: &BTreeSet<IpAddr>) -> Option<Chain> {
        let mut lines: Vec<Line> = self
            .masquerade
            .iter()
            .filter(|n| local.iter().any(|ip| n.contains_addr(*ip)))
            .map(|n| Line {
                matches: vec![
                    Match::InNet { dir: Dir::Src, cidr: *n, except: vec![] },
                    Match::NotInNets { dir: Dir::Dst, family: n.family(), nets: self.exempt(n.family()) },
                ],
                verdict: Verdict::Masquerade,
            })
            .collect();
        if lines.is_empty() {
            return None;
        }
        lines.insert(0, Line { matches: vec![Match::Dnated], verdict: Verdict::Accept });
        Some(Chain::new(Some((Hook::Postrouting, PRIORITY)), lines))
    }
}

/// The VIP ranges and every VIP's own address (one outside the ranges when given explicitly), as
/// destinations NAT exempts (`NatConfig::with_vips`). Malformed entries (romanad checks them on
/// the way in) are skipped.
pub fn vip_destinations(config: &VipConfig, vips: &[VipInfo]) -> Vec<Cidr> {
    let ranges = config.ranges.iter().filter_map(|r| r.parse::<Cidr>().ok());
    let addresses = vips.iter().filter_map(|v| v.address.parse::<IpAddr>().ok()).map(Cidr::host);
    let all: BTreeSet<Cidr> = ranges.chain(addresses).collect();
    all.into_iter().collect()
}

/// The host's local endpoints as the firewall's table lists them (its `local-4`/`local-6` sets).
pub fn local_endpoints(rs: &Ruleset) -> BTreeSet<IpAddr> {
    ["local-4", "local-6"]
        .iter()
        .filter_map(|n| rs.sets.get(*n))
        .flat_map(|s| s.elements.iter())
        .filter_map(|e| match e {
            Element::Addr(ip) => Some(*ip),
            Element::AddrPort(..) => None,
        })
        .collect()
}

/// Adds the NAT chain to the firewall's table for this host's endpoints (or leaves it out when
/// nothing is masqueraded); returns whether it did.
pub fn add_to(rs: &mut Ruleset, nat: &NatConfig) -> bool {
    match nat.chain(&local_endpoints(rs)) {
        Some(chain) => {
            rs.chains.insert(CHAIN.to_owned(), Arc::new(chain));
            true
        }
        None => false,
    }
}

/// One firewall pass's table with egress NAT: the chain added (`add_to`), and the endpoints it
/// masquerades taken off the fast path's set (`unfiltered`), since the fast path would hand
/// their packets to the uplink past postrouting, where the masquerade happens. Returns whether
/// the chain is there.
pub fn amend_pass(rs: &mut Ruleset, unfiltered: &mut BTreeSet<IpAddr>, nat: &NatConfig) -> bool {
    let added = add_to(rs, nat);
    if added {
        unfiltered.retain(|ip| !nat.masquerades_from(*ip));
    }
    added
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ruleset::{Set, SetType};

    const TOPOLOGY: &str = r#"{
        "networks": [
            {"name": "pods", "cidr": "10.112.0.0/16"},
            {"name": "legacy", "cidr": "10.200.0.0/16", "nat_outgoing": false},
            {"name": "v6", "cidr": "fd00:10::/64"}
        ],
        "no_nat": ["172.16.0.0/12", "172.16.5.0/24", "192.168.1.11/32"],
        "topologies": [{"networks": ["pods", "legacy", "v6"], "map": [
            {"name": "r1", "groups": [{"name": "h1", "ip": "192.168.1.11"}, {"name": "h2", "ip": "192.168.1.12"}]},
            {"name": "r2", "groups": [{"name": "h3", "ip": "192.168.2.11"}]}
        ]}]
    }"#;

    fn config() -> NatConfig {
        NatConfig::from_topology(&serde_json::from_str(TOPOLOGY).unwrap()).unwrap()
    }

    /// The rules (`nft` text without comments) for a host with these local endpoints.
    fn check(local: &[&str], expect: &[&str]) {
        let local: BTreeSet<IpAddr> = local.iter().map(|s| s.parse().unwrap()).collect();
        check_with(config(), &local, expect);
    }

    fn check_with(nat: NatConfig, local: &BTreeSet<IpAddr>, expect: &[&str]) {
        let got: Vec<String> =
            nat.chain(local).map(|c| c.lines().iter().map(Line::body).collect()).unwrap_or_default();
        let want: Vec<String> = match expect {
            [] => vec![],
            _ => std::iter::once(DNATED.to_owned()).chain(expect.iter().map(|e| (*e).to_owned())).collect(),
        };
        assert_eq!(got, want, "local endpoints {local:?}");
    }

    /// Every chain's first rule: a VIP's DNATed flows are never masqueraded.
    const DNATED: &str = "ct status dnat accept";

    const V4: &str = "ip daddr != { 10.112.0.0/16, 10.200.0.0/16, 172.16.0.0/12, 192.168.1.11/32, 192.168.1.12/32, 192.168.2.11/32 } masquerade";

    #[test]
    fn rules_follow_the_local_endpoints() {
        // No local endpoint, or only endpoints of a network without NAT: no chain at all.
        check(&[], &[]);
        check(&["10.200.0.5"], &[]);
        // An endpoint of a NATed network: its network's rule, exempting every Romana network,
        // the no_nat ranges (172.16.5.0/24 folded into 172.16.0.0/12) and every host.
        check(&["10.112.0.9", "10.200.0.5"], &[&format!("ip saddr 10.112.0.0/16 {V4}")]);
        check(
            &["10.112.0.9", "fd00:10::9"],
            &[
                &format!("ip saddr 10.112.0.0/16 {V4}"),
                "ip6 saddr fd00:10::/64 ip6 daddr != { fd00:10::/64 } masquerade",
            ],
        );
    }

    /// VIP ranges and VIP addresses are destinations reached with the pod's own address, with no
    /// `no_nat` entry: (VIPs, the rule for a pod of the NATed network).
    #[test]
    fn vips_are_never_masqueraded_destinations() {
        let local: BTreeSet<IpAddr> = ["10.112.0.9".parse().unwrap()].into();
        let cases: &[(&[&str], &str)] = &[
            (&[], V4),
            (
                &["198.51.100.0/28", "203.0.113.7/32"],
                "ip daddr != { 10.112.0.0/16, 10.200.0.0/16, 172.16.0.0/12, 192.168.1.11/32, 192.168.1.12/32, 192.168.2.11/32, 198.51.100.0/28, 203.0.113.7/32 } masquerade",
            ),
            // A VIP inside its range, or inside a no_nat range, is folded into it.
            (
                &["198.51.100.0/28", "198.51.100.5/32", "172.16.9.9/32"],
                "ip daddr != { 10.112.0.0/16, 10.200.0.0/16, 172.16.0.0/12, 192.168.1.11/32, 192.168.1.12/32, 192.168.2.11/32, 198.51.100.0/28 } masquerade",
            ),
        ];
        for (vips, rule) in cases {
            let nat = config().with_vips(vips.iter().map(|v| v.parse().unwrap()).collect());
            check_with(nat, &local, &[&format!("ip saddr 10.112.0.0/16 {rule}")]);
        }
        // VIPs exempt nothing on a host with nothing to masquerade.
        let nat = config().with_vips(vec!["198.51.100.0/28".parse().unwrap()]);
        check_with(nat, &["10.200.0.5".parse().unwrap()].into(), &[]);
    }

    #[test]
    fn vip_destinations_are_the_ranges_and_every_address() {
        let config = VipConfig { ranges: vec!["198.51.100.0/28".into(), "bad".into()] };
        let vips: Vec<VipInfo> = ["198.51.100.5", "203.0.113.7"]
            .iter()
            .map(|a| {
                serde_json::from_value(serde_json::json!({"address": a, "service": "web", "tenant": "t",
                    "selector": {}}))
                .unwrap()
            })
            .collect();
        let got: Vec<String> = vip_destinations(&config, &vips).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["198.51.100.0/28", "198.51.100.5/32", "203.0.113.7/32"]);
        assert!(vip_destinations(&VipConfig::default(), &[]).is_empty());
    }

    #[test]
    fn who_is_masqueraded() {
        let c = config();
        for (ip, nat) in
            [("10.112.3.4", true), ("10.200.3.4", false), ("fd00:10::1", true), ("192.168.1.11", false)]
        {
            assert_eq!(c.masquerades_from(ip.parse().unwrap()), nat, "{ip}");
        }
    }

    #[test]
    fn the_chain_joins_the_table_only_for_nated_endpoints() {
        let table = |eps: &[&str]| {
            let mut rs = Ruleset::default();
            let mut set = Set::new(SetType::Addr(Family::V4));
            set.elements.extend(eps.iter().map(|e| Element::Addr(e.parse().unwrap())));
            rs.sets.insert("local-4".into(), Arc::new(set));
            rs
        };
        let mut rs = table(&["10.200.0.5"]);
        assert!(!add_to(&mut rs, &config()));
        assert!(rs.chains.is_empty());
        let mut rs = table(&["10.112.0.9"]);
        assert!(add_to(&mut rs, &config()));
        let text = rs.render_replace();
        assert!(
            text.contains(
                "add chain inet romana nat-out { type nat hook postrouting priority 100; policy accept; }"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!("add rule inet romana nat-out ip saddr 10.112.0.0/16 {V4} comment")),
            "{text}"
        );
        let dnated = text.find(&format!("nat-out {DNATED}")).expect("the DNAT exemption");
        assert!(dnated < text.find("masquerade").unwrap(), "before any masquerade: {text}");
        // A topology without NAT anywhere adds nothing.
        let mut off = config();
        off.masquerade.clear();
        assert!(!add_to(&mut table(&["10.112.0.9"]), &off));
    }

    #[test]
    fn masqueraded_endpoints_leave_the_fast_path() {
        let set = |ips: &[&str]| -> BTreeSet<IpAddr> { ips.iter().map(|s| s.parse().unwrap()).collect() };
        let mut rs = Ruleset::default();
        let mut local = Set::new(SetType::Addr(Family::V4));
        local.elements.extend(["10.112.0.9", "10.200.0.5"].map(|e| Element::Addr(e.parse().unwrap())));
        rs.sets.insert("local-4".into(), Arc::new(local));
        // fd00:10::/64 masquerades too (IPv6 has its own rule in the chain); 10.200/16 does not.
        let mut unfiltered = set(&["10.112.0.9", "10.200.0.5", "fd00:10::5"]);
        assert!(amend_pass(&mut rs, &mut unfiltered, &config()));
        assert_eq!(unfiltered, set(&["10.200.0.5"]));
        // Without a chain (nothing masqueraded here) the fast path keeps everyone.
        let mut off = config();
        off.masquerade.clear();
        let mut unfiltered = set(&["10.112.0.9", "10.200.0.5"]);
        let mut rs2 = Ruleset::default();
        assert!(!amend_pass(&mut rs2, &mut unfiltered, &off));
        assert_eq!(unfiltered.len(), 2);
    }
}
