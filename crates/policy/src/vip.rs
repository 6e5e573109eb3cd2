//! VIPs' DNAT in our table, pure: the `vip-dnat` chain (`type nat hook prerouting priority
//! dstnat`) that sends traffic to each VIP this host serves on to the service's endpoints on
//! this host: one rule per forwarded port (`tcp dport 80` -> the target port), or one rule for
//! every protocol and port when the VIP names none; several endpoints are spread by
//! `numgen random` (conntrack keeps each connection on its endpoint). The chain exists only while
//! the host serves a VIP, so a host without one has no nat hook of ours.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use romana_model::Cidr;

use crate::model::Protocol;
use crate::ruleset::{Chain, Dir, Hook, Line, Match, Ruleset, Verdict};

/// The chain's name in `table inet romana`.
pub const CHAIN: &str = "vip-dnat";
/// nftables' `dstnat`.
pub const PRIORITY: i32 = -100;

/// One forwarded port: `port` on the VIP to `target` on the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DnatPort {
    pub protocol: Protocol,
    pub port: u16,
    pub target: u16,
}

/// A VIP this host serves, and its endpoints here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VipDnat {
    pub vip: Ipv4Addr,
    /// Empty: every protocol and port, unchanged.
    pub ports: Vec<DnatPort>,
    pub backends: Vec<Ipv4Addr>,
}

/// The DNAT chain for `vips` (`None` when no VIP has an endpoint here).
pub fn dnat_chain(vips: &[VipDnat]) -> Option<Chain> {
    let mut lines = Vec::new();
    for v in vips.iter().filter(|v| !v.backends.is_empty()) {
        let dst = Match::InNet { dir: Dir::Dst, cidr: Cidr::host(IpAddr::V4(v.vip)), except: vec![] };
        let mut to = v.backends.clone();
        to.sort();
        to.dedup();
        if v.ports.is_empty() {
            lines.push(Line { matches: vec![dst], verdict: Verdict::Dnat { to, port: None } });
            continue;
        }
        for p in &v.ports {
            let port = Match::Ports { protocol: p.protocol, first: p.port, last: p.port };
            let target = (p.target != 0 && p.target != p.port).then_some(p.target);
            lines.push(Line {
                matches: vec![dst.clone(), port],
                verdict: Verdict::Dnat { to: to.clone(), port: target },
            });
        }
    }
    (!lines.is_empty()).then(|| Chain::new(Some((Hook::Prerouting, PRIORITY)), lines))
}

/// `rs` with the DNAT chain for `vips` in it (or without one when there is nothing to DNAT).
pub fn with_dnat(rs: &mut Ruleset, vips: &[VipDnat]) {
    match dnat_chain(vips) {
        Some(c) => {
            if rs.chains.get(CHAIN).is_none_or(|old| **old != c) {
                rs.chains.insert(CHAIN.to_owned(), Arc::new(c));
            }
        }
        None => {
            rs.chains.remove(CHAIN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vips: &[VipDnat], expect: &[&str]) {
        let mut rs = Ruleset::default();
        with_dnat(&mut rs, vips);
        let text = rs.render_replace();
        let rules: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("add rule") || l.starts_with("add chain"))
            .map(|l| l.split(" comment ").next().unwrap_or(l))
            .collect();
        assert_eq!(rules, expect);
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("an address")
    }

    #[test]
    fn dnat_rules() {
        let web = VipDnat {
            vip: ip("198.51.100.1"),
            ports: vec![
                DnatPort { protocol: Protocol::Tcp, port: 80, target: 8080 },
                DnatPort { protocol: Protocol::Udp, port: 53, target: 0 },
            ],
            backends: vec![ip("10.0.0.3"), ip("10.0.0.2")],
        };
        let all = VipDnat { vip: ip("198.51.100.2"), ports: vec![], backends: vec![ip("10.0.0.4")] };
        let none = VipDnat { vip: ip("198.51.100.3"), ports: vec![], backends: vec![] };
        check(
            &[web, all, none.clone()],
            &[
                "add chain inet romana vip-dnat { type nat hook prerouting priority -100; policy accept; }",
                "add rule inet romana vip-dnat ip daddr 198.51.100.1/32 tcp dport 80 dnat ip to numgen random mod 2 map { 0 : 10.0.0.2, 1 : 10.0.0.3 }:8080",
                "add rule inet romana vip-dnat ip daddr 198.51.100.1/32 udp dport 53 dnat ip to numgen random mod 2 map { 0 : 10.0.0.2, 1 : 10.0.0.3 }",
                "add rule inet romana vip-dnat ip daddr 198.51.100.2/32 dnat ip to 10.0.0.4",
            ],
        );
        // Nothing to DNAT: no chain, so no nat hook of ours.
        check(&[none], &[]);
        check(&[], &[]);
    }

    /// The kernel's listing of the chain (nft -j's shape) reads back as exactly what was
    /// planned, so a pass after it plans nothing; a `filter` chain on prerouting under our name
    /// is not ours and is rewritten.
    #[test]
    fn the_chain_reads_back_from_nft_json_as_planned() {
        let vips = [VipDnat { vip: ip("198.51.100.1"), ports: vec![], backends: vec![ip("10.0.0.2")] }];
        let mut desired = Ruleset::default();
        with_dnat(&mut desired, &vips);
        let chain = &desired.chains[CHAIN];
        let listing = |kind: &str| {
            let mut items = vec![
                serde_json::json!({"table": {"family": "inet", "name": "romana", "handle": 1}}),
                serde_json::json!({"chain": {"family": "inet", "table": "romana", "name": CHAIN, "handle": 1,
                    "type": kind, "hook": "prerouting", "prio": -100, "policy": "accept"}}),
            ];
            for key in chain.keys() {
                items.push(serde_json::json!({"rule": {"family": "inet", "table": "romana", "chain": CHAIN,
                    "handle": 3, "comment": key, "expr": []}}));
            }
            serde_json::json!({ "nftables": items }).to_string()
        };
        let observed = crate::nftjson::parse(&listing("nat")).expect("parses");
        assert_eq!(observed.chains[CHAIN].base, Some((Hook::Prerouting, PRIORITY)));
        assert!(crate::nftplan::plan(Some(&observed), &desired).is_empty(), "nothing to do");
        let foreign = crate::nftjson::parse(&listing("filter")).expect("parses");
        assert!(!crate::nftplan::plan(Some(&foreign), &desired).is_empty(), "rewritten");
    }
}
