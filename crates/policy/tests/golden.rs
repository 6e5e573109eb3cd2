//! Golden files of the rendered `inet romana` table for representative inputs
//! (`tests/data/firewall/*.nft`): a Kubernetes NetworkPolicy with selectors, named ports, ipBlock
//! and egress; Romana policies with host/local peers and ICMP; segment isolation; IPv6 ipBlocks
//! and ICMPv6. A change in
//! what the compiler emits shows up as a readable diff. `UPDATE_GOLDEN=1` rewrites the files.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use romana_api::netpol::NetworkPolicy;
use romana_api::policy::Policy;
use romana_policy::eval::{Endpoint, NamedPort, World};
use romana_policy::firewall::{FirewallInput, compile};
use romana_policy::isolation::{Isolation, implicit_policies};
use romana_policy::{PolicyRules, Protocol, SEGMENT_LABEL, from_k8s, from_romana};

fn ep(id: &str, tenant: &str, labels: &[(&str, &str)], ip: &str, host: &str) -> Endpoint {
    Endpoint {
        id: id.into(),
        tenant: tenant.into(),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ip: Some(ip.parse().unwrap()),
        ports: vec![],
        host: host.into(),
        is_host: false,
    }
}

fn world() -> (World, Vec<Endpoint>) {
    let w = World {
        tenants: BTreeMap::from([
            ("x".into(), BTreeMap::from([("ns".to_owned(), "x".to_owned())])),
            ("y".into(), BTreeMap::from([("ns".to_owned(), "y".to_owned())])),
        ]),
    };
    let mut web = ep("x/web", "x", &[("app", "web"), (SEGMENT_LABEL, "front")], "10.1.0.2", "h1");
    web.ports.push(NamedPort { name: "http".into(), protocol: Protocol::Tcp, port: 8080 });
    let eps = vec![
        web,
        ep("x/db", "x", &[("app", "db"), (SEGMENT_LABEL, "back")], "10.1.0.3", "h1"),
        ep("x/web6", "x", &[("app", "web")], "fd00:1::2", "h1"),
        ep("y/client", "y", &[("app", "client")], "10.2.0.2", "h2"),
    ];
    (w, eps)
}

fn check(name: &str, policies: &[PolicyRules]) {
    let (w, eps) = world();
    let policies: Vec<Arc<PolicyRules>> = policies.iter().cloned().map(Arc::new).collect();
    let rs = compile(FirewallInput { host: "h1", policies: &policies, world: &w, endpoints: &eps });
    let got = rs.render_replace();
    let path = format!("{}/tests/data/firewall/{name}.nft", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (UPDATE_GOLDEN=1 writes it)"));
    assert_eq!(got, want, "{name}: the rendered table differs from {path}");
}

#[test]
fn kubernetes_policy() {
    let np: NetworkPolicy = serde_json::from_str(
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
            "metadata":{"name":"web","namespace":"x"},
            "spec":{"podSelector":{"matchLabels":{"app":"web"}},"policyTypes":["Ingress","Egress"],
              "ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"ns":"y"}},"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["client"]}]}},
                                  {"ipBlock":{"cidr":"10.0.0.0/8","except":["10.9.0.0/16"]}}],
                          "ports":[{"protocol":"TCP","port":"http"},{"protocol":"UDP","port":53,"endPort":60}]}],
              "egress":[{"to":[{"podSelector":{"matchLabels":{"app":"db"}}}],"ports":[{"protocol":"TCP","port":5432}]}]}}"#,
    )
    .unwrap();
    check("k8s-web", &[from_k8s(&np).unwrap()]);
}

#[test]
fn romana_policy() {
    let p: Policy = serde_json::from_str(
        r#"{"name":"ops","applied_to":[{"tenant":"x","segment":"back"}],
            "ingress":[{"peers":[{"peer":"host"},{"peer":"local"}],"rules":[{"protocol":"tcp","ports":[22]},{"protocol":"icmp","icmp_type":8,"icmp_code":0}]}]}"#,
    )
    .unwrap();
    check("romana-ops", &from_romana(&p).unwrap());
}

#[test]
fn romana_targets_beyond_tenants() {
    // The host itself (ingress from its own endpoints), a CIDR of endpoints, every endpoint.
    let p: Policy = serde_json::from_str(
        r#"{"name":"edge","applied_to":[{"dest":"host"},{"cidr":"10.1.0.0/24"},{"dest":"local"}],
            "ingress":[{"peers":[{"tenant":"y"},{"cidr":"192.0.2.0/24"}],"rules":[{"protocol":"tcp","ports":[22]},{"protocol":"udp","port_ranges":[[5000,5010]]}]}]}"#,
    )
    .unwrap();
    check("romana-targets", &from_romana(&p).unwrap());
}

#[test]
fn segment_isolation() {
    let modes = BTreeMap::from([("x".to_owned(), Isolation::Segment), ("y".to_owned(), Isolation::None)]);
    let segments =
        BTreeMap::from([("x".to_owned(), BTreeSet::from(["front".to_owned(), "back".to_owned()]))]);
    check("isolation-segment", &implicit_policies(&modes, &segments));
}

#[test]
fn ipv6_blocks_and_icmpv6() {
    // An ipBlock of each family (with `except`), and ICMPv6 beside ICMP: each line only in its
    // family, and IPv6 echo to the web pod on both families' selector sets.
    let np: NetworkPolicy = serde_json::from_str(
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
            "metadata":{"name":"web6","namespace":"x"},
            "spec":{"podSelector":{"matchLabels":{"app":"web"}},
              "ingress":[{"from":[{"ipBlock":{"cidr":"fd00::/16","except":["fd00:9::/32","fd00:a::/48"]}},
                                  {"ipBlock":{"cidr":"10.0.0.0/8"}}],
                          "ports":[{"protocol":"TCP","port":80}]}]}}"#,
    )
    .unwrap();
    let p: Policy = serde_json::from_str(
        r#"{"name":"ping","applied_to":[{"tenant":"x"}],
            "ingress":[{"peers":[{"tenant":"y"}],"rules":[{"protocol":"icmpv6","icmp_type":128,"icmp_code":0},{"protocol":"icmp","icmp_type":8},{"protocol":"icmpv6"}]}]}"#,
    )
    .unwrap();
    let mut policies = vec![from_k8s(&np).unwrap()];
    policies.extend(from_romana(&p).unwrap());
    check("ipv6-icmpv6", &policies);
}
