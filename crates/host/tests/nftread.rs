//! Our table read over raw netlink against `nft -j list table` read by the policy crate's JSON
//! reader, in namespaces this test creates (`rnr-*`, deleted by their guards): the compiler's
//! tables (every set type, base chains, rules) and tables a foreign process tampered with
//! (sets of other types or flags, rules without our comment, a chain on a hook we never use)
//! give the same `Observed`; no table reads as none.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use romana_host::nftnl::ElementKey;
use romana_host::nftread::{KeyKind, TableRead};
use romana_host::{in_netns, nft};
use romana_model::Family;
use romana_policy::eval::{Endpoint, NamedPort, World};
use romana_policy::firewall::{FirewallInput, compile};
use romana_policy::nftplan::{Observed, plan};
use romana_policy::nftread::{ReadChain, ReadSet, observed};
use romana_policy::ruleset::{Element, SetType};
use romana_policy::{Peer, PolicyRules, Port, PortRule, Protocol, Rule, Selector, nftjson};
use romana_test_support::Netns;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn netns() -> Option<Netns> {
    Netns::new(&format!("rnr-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// The netlink read as the agent converts it.
fn by_netlink(ns: &Netns) -> Option<Observed> {
    let t: Option<TableRead> =
        in_netns(&ns.0, || async { nft::Nft::default().read_table() }).unwrap().unwrap();
    t.map(|t| {
        let fam = |v6: bool| if v6 { Family::V6 } else { Family::V4 };
        let sets = t.sets.into_iter().map(|(name, s)| ReadSet {
            name,
            ty: s.kind.map(|k| match k {
                KeyKind::Addr { v6 } => SetType::Addr(fam(v6)),
                KeyKind::AddrPort { v6 } => SetType::AddrPort(fam(v6)),
            }),
            elements: s.keys.map(|ks| {
                ks.into_iter()
                    .map(|k| match k {
                        ElementKey::Addr(a) => Element::Addr(a),
                        ElementKey::AddrPort(a, p) => Element::AddrPort(a, p),
                    })
                    .collect()
            }),
        });
        let chains = t.chains.into_iter().map(|(name, c)| ReadChain { name, base: c.base, rules: c.rules });
        observed(sets.collect(), chains.collect())
    })
}

fn by_json(ns: &Netns) -> Option<Observed> {
    in_netns(&ns.0, || async { nft::list_table(false).unwrap().map(|j| nftjson::parse(&j).unwrap()) })
        .unwrap()
}

fn foreign(ns: &Netns, script: &str) {
    let s = script.to_owned();
    in_netns(&ns.0, move || async move { nft::apply(&s) }).unwrap().unwrap();
}

fn pod(id: &str, ip: &str, app: &str, host: &str) -> Endpoint {
    Endpoint {
        id: id.into(),
        tenant: "t".into(),
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        ip: Some(ip.parse().unwrap()),
        host: host.into(),
        ports: vec![NamedPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 }],
        ..Endpoint::default()
    }
}

fn policy(id: &str) -> PolicyRules {
    let sel = |v: &str| Selector::label_is("app", v);
    PolicyRules {
        id: id.into(),
        tenant: "t".into(),
        scope: romana_policy::Scope::Tenant,
        target: sel("web"),
        ingress: Some(vec![Rule {
            peers: Some(vec![Peer::Endpoints { tenants: None, endpoints: Some(sel("client")) }]),
            ports: Some(vec![PortRule { protocol: Protocol::Tcp, port: Some(Port::Named("http".into())) }]),
        }]),
        egress: Some(vec![]),
    }
}

#[test]
fn netlink_reads_what_nft_json_reads() {
    let Some(ns) = netns() else { return eprintln!("skipped: cannot create namespaces") };
    assert_eq!(by_netlink(&ns), None, "no table reads as none");
    let eps = vec![
        pod("w1", "10.0.0.1", "web", "h0"),
        pod("w6", "fd00::1", "web", "h0"),
        pod("c1", "10.0.0.2", "client", "h1"),
        pod("c6", "fd00::2", "client", "h1"),
    ];
    let world = World { tenants: BTreeMap::from([("t".to_owned(), BTreeMap::new())]) };
    let policies = [Arc::new(policy("p1")), Arc::new(policy("p2"))];
    let want = compile(FirewallInput { host: "h0", policies: &policies, world: &world, endpoints: &eps });
    foreign(&ns, &plan(None, &want).script);
    let read = by_netlink(&ns).unwrap();
    assert_eq!(read, by_json(&ns).unwrap());
    assert_eq!(read, Observed::of(&want), "the compiler's table reads back as applied");
    let types: Vec<SetType> = read.sets.values().map(|s| s.ty).collect();
    for ty in [SetType::Addr(Family::V4), SetType::Addr(Family::V6)] {
        assert!(types.contains(&ty), "{ty} covered");
    }
    assert!(read.sets.values().any(|s| matches!(s.ty, SetType::AddrPort(_)) && !s.elements.is_empty()));
    assert!(read.chains.values().any(|c| c.base.is_some()), "base chains covered");

    // Tampering: a set of another type and one with flags under names of ours, a rule without
    // our comment, a base chain on a hook we never use, a nat chain where a filter one should be.
    foreign(
        &ns,
        "add set inet romana odd { type ether_addr; }
         add set inet romana ranges { type ipv4_addr; flags interval; }
         add element inet romana ranges { 10.1.0.0/16 }
         add rule inet romana ingress-policies accept
         add chain inet romana pre { type filter hook prerouting priority -7; }
         add chain inet romana natty { type nat hook postrouting priority 100; }",
    );
    let read = by_netlink(&ns).unwrap();
    assert_eq!(read, by_json(&ns).unwrap());
    assert!(read.foreign_sets.contains("odd") && read.foreign_sets.contains("ranges"), "{read:?}");
    assert_eq!(read.chains["ingress-policies"].rules.last().map(String::as_str), Some(""));

    // Another table is never read.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "nft",
            "add table inet other; add set inet other s { type ipv4_addr; }",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!by_netlink(&ns).unwrap().sets.contains_key("s"));
}
