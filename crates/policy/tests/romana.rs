//! Romana policies through the rule model, as data: a small world (two hosts, tenants t1 with
//! segments web and db and t2 with web, the hosts themselves, an outside address) and, per case,
//! a policy and the connections it must allow or refuse. Expectations follow romana-spec §5's
//! meaning of targets, peers (`any`, `host`, `local`, CIDR, tenant, segment) and rules (ports,
//! ranges, ICMP type and code), with Kubernetes-style isolation of selected targets.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use romana_api::policy::Policy;
use romana_policy::{Endpoint, Probe, Protocol, SEGMENT_LABEL, World, allowed, from_romana};

fn ep(id: &str, tenant: &str, segment: &str, ip: &str, host: &str) -> Endpoint {
    Endpoint {
        id: id.into(),
        tenant: tenant.into(),
        labels: BTreeMap::from([(SEGMENT_LABEL.to_owned(), segment.to_owned())]),
        ip: Some(ip.parse().unwrap()),
        ports: vec![],
        host: host.into(),
        is_host: false,
    }
}

fn world() -> (World, BTreeMap<&'static str, Endpoint>) {
    let w =
        World { tenants: BTreeMap::from([("t1".into(), BTreeMap::new()), ("t2".into(), BTreeMap::new())]) };
    let mut e = BTreeMap::new();
    e.insert("web1", ep("web1", "t1", "web", "10.1.0.1", "h1"));
    e.insert("db1", ep("db1", "t1", "db", "10.1.0.17", "h1"));
    e.insert("web2", ep("web2", "t1", "web", "10.1.1.1", "h2"));
    e.insert("other", ep("other", "t2", "web", "10.2.0.1", "h2"));
    let host = |id: &'static str, ip: &str| Endpoint {
        is_host: true,
        ..ep(id, "", "", ip, &id.replace("host", "h"))
    };
    e.insert("host1", host("host1", "192.168.0.1"));
    e.insert("host2", host("host2", "192.168.0.2"));
    e.insert("outside", ep("outside", "", "", "203.0.113.9", "none"));
    e.insert("web6", ep("web6", "t1", "web", "fd00:1::1", "h1"));
    e.insert("outside6", ep("outside6", "", "", "2001:db8::9", "none"));
    (w, e)
}

fn tcp(port: u16) -> Probe {
    Probe { protocol: Protocol::Tcp, port }
}
fn udp(port: u16) -> Probe {
    Probe { protocol: Protocol::Udp, port }
}
fn icmp(t: u8, c: u8) -> Probe {
    Probe { protocol: Protocol::Icmp, port: u16::from(t) << 8 | u16::from(c) }
}

fn icmpv6(t: u8, c: u8) -> Probe {
    Probe { protocol: Protocol::Icmpv6, port: u16::from(t) << 8 | u16::from(c) }
}

/// Compiles `policy`; each expectation is (from, to, probe, allowed).
fn check(name: &str, policy: &str, want: &[(&str, &str, Probe, bool)]) {
    let (w, e) = world();
    let p: Policy = serde_json::from_str(policy).unwrap();
    let compiled = from_romana(&p).unwrap_or_else(|err| panic!("{name}: {err}"));
    for (from, to, probe, expect) in want {
        let got = allowed(&compiled, &w, &e[from], &e[to], *probe);
        assert_eq!(got, *expect, "{name}: {from} -> {to} {probe:?}");
    }
}

#[test]
fn romana_policies() {
    check(
        "segment to segment on a port",
        r#"{"name":"db-from-web","applied_to":[{"tenant":"t1","segment":"db"}],
            "ingress":[{"peers":[{"tenant":"t1","segment":"web"}],"rules":[{"protocol":"tcp","ports":[5432]}]}]}"#,
        &[
            ("web1", "db1", tcp(5432), true),
            ("web2", "db1", tcp(5432), true),
            ("web1", "db1", tcp(5433), false),
            ("web1", "db1", udp(5432), false),
            ("other", "db1", tcp(5432), false),
            ("host1", "db1", tcp(5432), false),
            // Targets not selected stay open.
            ("other", "web1", tcp(80), true),
        ],
    );
    check(
        "2.0 shape: string ids, port ranges",
        r#"{"id":"kube.t1.p","direction":"ingress","applied_to":[{"tenant_id":"t1","segment_id":"web"}],
            "ingress":[{"peers":[{"tenant_id":"t2"}],"rules":[{"protocol":"tcp","port_ranges":[[8000,8080]]}]}]}"#,
        &[
            ("other", "web1", tcp(8080), true),
            ("other", "web1", tcp(8081), false),
            ("db1", "web1", tcp(8000), false),
        ],
    );
    check(
        "host and local peers",
        r#"{"name":"hl","applied_to":[{"tenant":"t1"}],
            "ingress":[{"peers":[{"peer":"host"},{"peer":"local"}],"rules":[{"protocol":"any"}]}]}"#,
        &[
            ("host1", "web1", tcp(22), true),
            ("host2", "web1", tcp(22), false),
            ("db1", "web1", udp(53), true),
            ("web2", "web1", udp(53), false),
            ("other", "web2", tcp(1), true),
            ("host2", "web2", icmp(8, 0), true),
        ],
    );
    check(
        "icmp type and code; any other protocol refused",
        r#"{"name":"ping","applied_to":[{"tenant":"t1","segment":"web"}],
            "ingress":[{"peers":[{"peer":"any"}],"rules":[{"protocol":"icmp","icmp_type":8,"icmp_code":0},{"protocol":"icmp","icmp_type":3}]}]}"#,
        &[
            ("outside", "web1", icmp(8, 0), true),
            ("outside", "web1", icmp(8, 1), false),
            ("outside", "web1", icmp(0, 0), false),
            ("outside", "web1", icmp(3, 4), true),
            ("outside", "web1", tcp(80), false),
        ],
    );
    check(
        "icmpv6 type and code; neighbour discovery passes whatever the policy",
        r#"{"name":"ping6","applied_to":[{"tenant":"t1","segment":"web"}],
            "ingress":[{"peers":[{"cidr":"2001:db8::/32"}],"rules":[{"protocol":"icmpv6","icmp_type":128,"icmp_code":0},{"protocol":"icmpv6","icmp_type":1}]}]}"#,
        &[
            ("outside6", "web6", icmpv6(128, 0), true),
            ("outside6", "web6", icmpv6(128, 1), false),
            ("outside6", "web6", icmpv6(129, 0), false),
            ("outside6", "web6", icmpv6(1, 4), true),
            ("outside6", "web6", tcp(80), false),
            // Not from the CIDR: refused, but neighbour and router discovery always pass.
            ("host1", "web1", icmpv6(128, 0), false),
            ("outside", "web1", icmp(8, 0), false),
            ("outside6", "web6", icmpv6(135, 0), true),
            ("outside6", "web6", icmpv6(136, 0), true),
            ("outside6", "web6", icmpv6(133, 0), true),
            ("outside6", "web6", icmpv6(134, 0), true),
        ],
    );
    check(
        "egress to a cidr, 2.0 egress-under-ingress shape",
        r#"{"name":"out","direction":"egress","applied_to":[{"tenant":"t2"}],
            "ingress":[{"peers":[{"cidr":"203.0.113.0/24"}],"rules":[{"protocol":"udp","ports":[53]}]}]}"#,
        &[
            ("other", "outside", udp(53), true),
            ("other", "outside", tcp(53), false),
            ("other", "web1", udp(53), false),
            // Ingress to t2 is not isolated by an egress policy.
            ("web1", "other", tcp(80), true),
        ],
    );
    check(
        "applied to a cidr: the endpoints in it, of any tenant",
        r#"{"name":"block","applied_to":[{"cidr":"10.1.0.0/28"}],
            "ingress":[{"peers":[{"tenant":"t2"}],"rules":[{"protocol":"tcp","ports":[80]}]}]}"#,
        &[
            // web1 (10.1.0.1) is in the block: isolated, t2 admitted on 80 only.
            ("other", "web1", tcp(80), true),
            ("other", "web1", tcp(81), false),
            ("web2", "web1", tcp(80), false),
            // db1 (10.1.0.17) and web2 (10.1.1.1) are outside it: untouched.
            ("web2", "db1", tcp(81), true),
            ("db1", "web2", tcp(81), true),
        ],
    );
    check(
        "applied to dest host: what the host's own endpoints open to it",
        r#"{"name":"ssh","applied_to":[{"dest":"host"}],
            "ingress":[{"peers":[{"tenant":"t1","segment":"web"}],"rules":[{"protocol":"tcp","ports":[22]}]}]}"#,
        &[
            ("web1", "host1", tcp(22), true),
            ("web1", "host1", tcp(80), false),
            ("db1", "host1", tcp(22), false),
            ("other", "host2", tcp(22), false),
            ("web2", "host2", tcp(22), true),
            // Other hosts' endpoints, the outside and the host's own traffic are not policed.
            ("web2", "host1", tcp(80), true),
            ("outside", "host1", tcp(80), true),
            ("host1", "web1", tcp(80), true),
        ],
    );
    check(
        "applied to dest local: every endpoint, of every tenant",
        r#"{"name":"all","applied_to":[{"dest":"local"}],
            "ingress":[{"peers":[{"peer":"local"}],"rules":[{"protocol":"any"}]}]}"#,
        &[
            // Only endpoints on the target's own host get in.
            ("db1", "web1", tcp(80), true),
            ("web2", "web1", tcp(80), false),
            ("web1", "web2", tcp(80), false),
            ("other", "web2", udp(53), true),
            ("outside", "other", tcp(80), false),
        ],
    );
}

#[test]
fn what_is_not_compiled_yet_is_refused_by_name() {
    let p: Policy = serde_json::from_str(
        r#"{"name":"x","applied_to":[{"dest":"host"},{"tenant_id":7}],"ingress":[{"peers":[{"tenant_external_id":"abc"}],"rules":[{"protocol":"any"}]}],
            "egress":[{"peers":[{"peer":"any"}],"rules":[{"protocol":"any"}]}]}"#,
    )
    .unwrap();
    let e = from_romana(&p).unwrap_err();
    assert!(e.0.iter().any(|m| m.starts_with("applied_to[0]: dest host takes ingress rules only")), "{e}");
    assert!(e.0.iter().any(|m| m.starts_with("applied_to[1]: tenants by numeric id")), "{e}");
    assert!(e.0.iter().any(|m| m.starts_with("ingress[0].peers[0]: tenants by numeric id")), "{e}");
}
