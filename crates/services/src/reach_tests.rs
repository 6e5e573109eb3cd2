//! Data tests of the reach core: a small world per case (tenants, policies, NetworkPolicies,
//! endpoints as the API holds them) and the answer for one endpoint, one line per peer.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::*;

const ALL: &str = "TCP all; UDP all; SCTP all; ICMP echo";

/// `name@host ip tenant/segment key=value,...` with optional named ports `:http/TCP/8080`.
fn ep(spec: &str) -> EndpointInfo {
    let mut parts = spec.split_whitespace();
    let (name, host) = parts.next().unwrap().split_once('@').unwrap();
    let ip = parts.next().unwrap();
    let (tenant, segment) = parts.next().unwrap().split_once('/').unwrap();
    let mut e = EndpointInfo {
        name: name.into(),
        ip: ip.into(),
        tenant: tenant.into(),
        segment: segment.into(),
        host: host.into(),
        ..EndpointInfo::default()
    };
    for p in parts {
        if let Some(port) = p.strip_prefix(':') {
            let v: Vec<&str> = port.split('/').collect();
            e.ports.push(romana_api::rest::EndpointPort {
                name: v[0].into(),
                protocol: v[1].into(),
                port: v[2].parse().unwrap(),
            });
        } else {
            for kv in p.split(',') {
                let (k, v) = kv.split_once('=').unwrap();
                e.labels.insert(k.into(), v.into());
            }
        }
    }
    e
}

fn tenant(name: &str, isolation: &str) -> Tenant {
    serde_json::from_value(json!({"name": name, "external_id": "", "labels": {}, "number": 0,
        "segments": [], "isolation": isolation}))
    .unwrap()
}

struct World {
    tenants: Vec<Tenant>,
    policies: Vec<Policy>,
    netpols: Vec<NetworkPolicy>,
    endpoints: Vec<EndpointInfo>,
}

fn world(tenants: &[(&str, &str)], policies: &[Value], endpoints: &[&str]) -> World {
    let (mut ps, mut nps) = (Vec::new(), Vec::new());
    for p in policies {
        if p.get("kind").is_some() {
            nps.push(serde_json::from_value(p.clone()).unwrap());
        } else {
            ps.push(serde_json::from_value(p.clone()).unwrap());
        }
    }
    World {
        tenants: tenants.iter().map(|(n, i)| tenant(n, i)).collect(),
        policies: ps,
        netpols: nps,
        endpoints: endpoints.iter().map(|s| ep(s)).collect(),
    }
}

fn lines(peers: &[ReachPeer]) -> Vec<String> {
    peers.iter().map(|p| format!("{} {}: {}", p.kind, p.name, p.ports.join("; "))).collect()
}

/// The answer for `name` in `w`: ingress and egress lines, and the selecting policies.
fn check(w: &World, name: &str, ingress: &[&str], egress: &[&str], policies: &[&str]) {
    let inputs =
        Inputs { tenants: &w.tenants, policies: &w.policies, netpols: &w.netpols, endpoints: &w.endpoints };
    let r = reach(name, inputs).unwrap_or_else(|| panic!("{name} is known"));
    assert_eq!(lines(&r.ingress), ingress, "ingress of {name}");
    assert_eq!(lines(&r.egress), egress, "egress of {name}");
    let got: Vec<String> =
        r.policies.iter().map(|p| format!("{} {}", p.id, p.directions.join(","))).collect();
    assert_eq!(got, policies, "policies selecting {name}");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}

fn netpol(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

#[test]
fn without_policies_everything_reaches_everything() {
    let w = world(&[("red", "none")], &[], &["a@h1 10.0.0.1 red/", "b@h2 10.0.1.1 red/"]);
    let all = |peer: &str| format!("{peer}: {ALL}");
    check(
        &w,
        "a",
        &[&all("endpoint b"), &all("host h1"), &all("outside *")],
        &[&all("endpoint b"), &all("host h1"), &all("outside *")],
        &[],
    );
}

#[test]
fn tenant_isolation_keeps_other_tenants_out_but_not_in() {
    let w = world(
        &[("red", "tenant"), ("blue", "none")],
        &[],
        &["r1@h1 10.0.0.1 red/", "r2@h2 10.0.1.1 red/", "b1@h1 10.0.0.2 blue/"],
    );
    let all = |peer: &str| format!("{peer}: {ALL}");
    // Isolation is on ingress: blue cannot open to red, red can open to blue; the host may.
    check(
        &w,
        "r1",
        &[&all("endpoint r2"), &all("host h1")],
        &[&all("endpoint b1"), &all("endpoint r2"), &all("host h1"), &all("outside *")],
        &["romana.isolation.red ingress"],
    );
    check(
        &w,
        "b1",
        &[&all("endpoint r1"), &all("endpoint r2"), &all("host h1"), &all("outside *")],
        &[&all("host h1"), &all("outside *")],
        &[],
    );
}

#[test]
fn a_network_policy_opens_one_port_to_one_label() {
    let np = netpol(
        "shop",
        "db-from-web",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                            "ports": [{"protocol": "TCP", "port": 5432}]}]}),
    );
    let w = world(
        &[("shop", "none")],
        &[np],
        &["db@h1 10.0.0.1 shop/ app=db", "web@h2 10.0.1.1 shop/ app=web", "cron@h2 10.0.1.2 shop/ app=cron"],
    );
    check(
        &w,
        "db",
        &["endpoint web: TCP 5432"],
        &[
            &format!("endpoint cron: {ALL}"),
            &format!("endpoint web: {ALL}"),
            &format!("host h1: {ALL}"),
            &format!("outside *: {ALL}"),
        ],
        &["k8s:shop/db-from-web ingress"],
    );
    // From web's side: db only on 5432; cron is unaffected.
    let web = reach(
        "web",
        Inputs { tenants: &w.tenants, policies: &w.policies, netpols: &w.netpols, endpoints: &w.endpoints },
    )
    .unwrap();
    assert_eq!(lines(&web.egress)[1], "endpoint db: TCP 5432");
}

#[test]
fn named_ports_resolve_on_the_destination_and_ranges_stay_ranges() {
    let np = netpol(
        "shop",
        "api",
        json!({"podSelector": {"matchLabels": {"app": "api"}},
               "ingress": [{"ports": [{"protocol": "TCP", "port": "http"},
                                      {"protocol": "UDP", "port": 8000, "endPort": 8080},
                                      {"protocol": "UDP", "port": 9000}]}]}),
    );
    let w = world(
        &[("shop", "none")],
        &[np],
        &["api@h1 10.0.0.1 shop/ app=api :http/TCP/8443", "other@h1 10.0.0.2 shop/ app=x :http/TCP/80"],
    );
    let open = "TCP 8443; UDP 8000-8080, 9000";
    check(
        &w,
        "api",
        &[&format!("endpoint other: {open}"), &format!("host h1: {open}"), &format!("outside *: {open}")],
        &[&format!("endpoint other: {ALL}"), &format!("host h1: {ALL}"), &format!("outside *: {ALL}")],
        &["k8s:shop/api ingress"],
    );
}

#[test]
fn egress_to_a_cidr_with_exceptions() {
    let np = netpol(
        "shop",
        "out",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.0/25"]}}],
                           "ports": [{"protocol": "TCP", "port": 443}]}]}),
    );
    let w = world(&[("shop", "none")], &[np], &["a@h1 10.0.0.1 shop/", "b@h1 10.0.0.2 shop/"]);
    check(
        &w,
        "a",
        // b is isolated in egress by the same policy (it selects every endpoint), so only the
        // host and the outside reach a.
        &[&format!("host h1: {ALL}"), &format!("outside *: {ALL}")],
        &["cidr 192.0.2.0/24: TCP 443"],
        &["k8s:shop/out egress"],
    );
}

#[test]
fn a_romana_policy_by_segment() {
    let p = json!({"id": "web-in", "applied_to": [{"tenant": "t", "segment": "web"}],
                   "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "tcp", "ports": [80, 443]}, {"protocol": "icmp"}]}]});
    let w = world(&[("t", "none")], &[p], &["w@h1 10.0.0.1 t/web", "d@h2 10.0.1.1 t/db"]);
    let open = "TCP 80, 443; ICMP echo";
    check(
        &w,
        "w",
        &[&format!("endpoint d: {open}"), &format!("host h1: {open}"), &format!("outside *: {open}")],
        &[&format!("endpoint d: {ALL}"), &format!("host h1: {ALL}"), &format!("outside *: {ALL}")],
        &["romana:web-in ingress"],
    );
}

#[test]
fn an_unknown_endpoint_is_none_and_bad_records_are_reported() {
    let mut w = world(&[("t", "none")], &[], &["a@h1 10.0.0.1 t/", "b@h1 10.0.0.2 t/"]);
    let inputs =
        Inputs { tenants: &w.tenants, policies: &w.policies, netpols: &w.netpols, endpoints: &w.endpoints };
    assert!(reach("nobody", inputs).is_none());
    w.endpoints[1].ip = "not-an-ip".into();
    let inputs =
        Inputs { tenants: &w.tenants, policies: &w.policies, netpols: &w.netpols, endpoints: &w.endpoints };
    let r = reach("a", inputs).unwrap();
    assert_eq!(r.problems, ["endpoint b: address \"not-an-ip\" is unreadable"]);
    assert!(r.ingress.iter().all(|p| p.name != "b"));
}

#[test]
fn cuts_and_ranges() {
    assert_eq!(ranges_text(&[(1, 65535)]), "all");
    assert_eq!(ranges_text(&[(80, 80), (8000, 8080)]), "80, 8000-8080");
    let c: Cidr = "10.0.0.0/30".parse().unwrap();
    let x: Cidr = "10.0.0.0/31".parse().unwrap();
    assert_eq!(representative(&c, &[x]), Some("10.0.0.2".parse().unwrap()));
    assert_eq!(representative(&c, &[c]), None);
}
