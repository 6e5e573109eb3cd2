//! The Kubernetes front end refuses bad policies with every problem listed, each naming its field.
#![allow(clippy::unwrap_used)]

use romana_api::netpol::NetworkPolicy;
use romana_policy::from_k8s;
use serde_json::json;

/// `spec` in namespace x: Ok, or Err containing each of `problems` (substrings).
fn check(name: &str, spec: serde_json::Value, problems: &[&str]) {
    let np: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"}, "spec": spec
    }))
    .unwrap();
    match (from_k8s(&np), problems.is_empty()) {
        (Ok(_), true) => {}
        (Err(e), false) => {
            for p in problems {
                assert!(e.0.iter().any(|x| x.contains(p)), "{name}: {p:?} not in {:?}", e.0);
            }
            assert_eq!(e.0.len(), problems.len(), "{name}: exactly these problems: {:?}", e.0);
        }
        (got, _) => panic!("{name}: got {got:?}, want problems {problems:?}"),
    }
}

#[test]
fn bad_policies_list_every_problem() {
    check("empty spec is deny-all-ingress", json!({}), &[]);
    check(
        "bad operator and missing values",
        json!({"podSelector": {"matchExpressions": [
            {"key": "a", "operator": "Near", "values": ["1"]},
            {"key": "b", "operator": "In"},
            {"key": "c", "operator": "Exists", "values": ["x"]}]}}),
        &["matchExpressions[0].operator", "matchExpressions[1].values", "matchExpressions[2].values"],
    );
    check(
        "ipBlock mixed with a selector, except outside",
        json!({"ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16", "10.0.0.0/8"]}},
            {"ipBlock": {"cidr": "10.0.0.0/33"}},
            {}]}]}),
        &[
            "from[0]: ipBlock cannot be combined",
            "except[0]",
            "except[1]",
            "from[2].ipBlock.cidr",
            "from[3]: a peer needs",
        ],
    );
    check(
        "IPv6 ipBlock: except of the other family or outside, host bits",
        json!({"ingress": [{"from": [
            {"ipBlock": {"cidr": "fd00::/16", "except": ["fd00:9::/32"]}},
            {"ipBlock": {"cidr": "fd00::/16", "except": ["10.0.0.0/8", "fd01::/32", "fd00::/16"]}},
            {"ipBlock": {"cidr": "fd00::1/16"}},
            {"ipBlock": {"cidr": "::/0", "except": ["2001:db8::/32"]}}]}]}),
        &[
            "from[1].ipBlock.except[0]",
            "from[1].ipBlock.except[1]",
            "from[1].ipBlock.except[2]",
            "from[2].ipBlock.cidr",
        ],
    );
    check(
        "ports",
        json!({"egress": [{"ports": [
            {"protocol": "ICMP", "port": 1},
            {"port": 0},
            {"port": 90, "endPort": 80},
            {"port": "web", "endPort": 81},
            {"port": "Not_A_Name"},
            {"endPort": 81}]}]}),
        &[
            "ports[0].protocol",
            "ports[1].port",
            "ports[2].endPort",
            "ports[3].endPort",
            "ports[4].port",
            "ports[5].endPort",
        ],
    );
    check("policyTypes", json!({"policyTypes": ["Ingress", "Sideways"]}), &["policyTypes[1]"]);
    let np: NetworkPolicy = serde_json::from_value(json!({"metadata": {"name": ""}, "spec": {}})).unwrap();
    let e = from_k8s(&np).unwrap_err();
    assert!(
        e.0.iter().any(|p| p.contains("metadata.name"))
            && e.0.iter().any(|p| p.contains("metadata.namespace")),
        "{e}"
    );
}

#[test]
fn defaulting_follows_the_api() {
    let np = |spec: serde_json::Value| -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "x"}, "spec": spec})).unwrap()
    };
    // No policyTypes, no egress rules: Ingress only.
    let p = from_k8s(&np(json!({"egress": []}))).unwrap();
    assert!(p.ingress.is_some() && p.egress.is_none());
    // No policyTypes, egress rules: both.
    let p = from_k8s(&np(json!({"egress": [{}]}))).unwrap();
    assert!(p.ingress.is_some() && p.egress.is_some());
    // Explicit Egress only: ingress is not isolated.
    let p = from_k8s(&np(json!({"policyTypes": ["Egress"]}))).unwrap();
    assert!(p.ingress.is_none() && p.egress == Some(vec![]));
    assert_eq!(p.id, "k8s:x/p");
}

#[test]
fn names_follow_kubernetes_rules() {
    // (name, namespace, the problem's field, or "" when valid)
    let long = "a".repeat(254);
    let cases: &[(&str, &str, &str)] = &[
        ("web-allow.v2", "team-a", ""),
        (&long[..253], &long[..63], ""),
        (&long, "x", "metadata.name: 254 characters, at most 253"),
        ("a\0b", "x", "metadata.name: \"a\\0b\" is not a DNS-1123 subdomain"),
        ("a/b", "x", "metadata.name: \"a/b\" is not"),
        ("ABC", "x", "metadata.name: \"ABC\" is not"),
        ("-a", "x", "metadata.name"),
        ("a..b", "x", "metadata.name"),
        ("a.", "x", "metadata.name"),
        ("p", "../auth", "metadata.namespace: \"../auth\" is not a DNS-1123 label"),
        ("p", "a.b", "metadata.namespace"),
        ("p", &long[..64], "metadata.namespace: 64 characters, at most 63"),
        ("p", "Team_A", "metadata.namespace"),
    ];
    for (name, namespace, want) in cases {
        let np: NetworkPolicy =
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace}, "spec": {}}))
                .unwrap();
        match (from_k8s(&np), *want) {
            (Ok(_), "") => {}
            (Err(e), want) if !want.is_empty() => {
                assert_eq!(e.0.len(), 1, "{name:?}/{namespace:?}: one problem: {e}");
                assert!(
                    e.0[0].starts_with(want),
                    "{name:?}/{namespace:?}: {:?} should start {want:?}",
                    e.0[0]
                );
            }
            (got, want) => panic!("{name:?}/{namespace:?}: got {got:?}, want {want:?}"),
        }
    }
}
