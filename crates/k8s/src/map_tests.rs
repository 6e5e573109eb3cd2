//! Data tests of the mappings: Kubernetes objects as JSON, as the API server sends them.

use serde_json::json;

use super::*;

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("test object parses")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

type Pairs<'a> = &'a [(&'a str, &'a str)];

fn check_tenant(ns: serde_json::Value, expect: Result<(&str, &str, Pairs<'_>, &str), MapError>) {
    let got = tenant(&obj(ns.clone()));
    let want = expect.map(|(name, uid, l, iso)| TenantRequest {
        name: name.into(),
        external_id: uid.into(),
        labels: labels(l),
        isolation: iso.into(),
    });
    assert_eq!(got, want, "namespace {ns}");
}

#[test]
fn namespaces() {
    let mb = (MANAGED_BY, MANAGER);
    check_tenant(json!({"metadata": {"name": "a", "uid": "u1"}}), Ok(("a", "u1", &[mb], "none")));
    check_tenant(
        json!({"metadata": {"name": "a", "uid": "u1", "labels": {"kubernetes.io/metadata.name": "a", "team": "x"},
            "annotations": {"romana.io/isolation": "segment"}}}),
        Ok(("a", "u1", &[("kubernetes.io/metadata.name", "a"), mb, ("team", "x")], "segment")),
    );
    check_tenant(
        json!({"metadata": {"name": "a", "annotations": {"romana.io/isolation": " tenant "}}}),
        Ok(("a", "", &[mb], "tenant")),
    );
    check_tenant(
        json!({"metadata": {"name": "a", "annotations": {"romana.io/isolation": "none"}}}),
        Ok(("a", "", &[mb], "none")),
    );
    check_tenant(
        json!({"metadata": {"name": "a", "annotations": {"romana.io/isolation": "strict"}}}),
        Err(MapError::Isolation { name: "a".into(), value: "strict".into() }),
    );
    check_tenant(json!({"metadata": {}}), Err(MapError::NoName { kind: "namespace" }));
}

fn check_pod(p: serde_json::Value, expect: Result<Option<PodInfo>, MapError>) {
    assert_eq!(pod(&obj(p.clone())), expect, "pod {p}");
}

fn port(name: &str, protocol: &str, port: u16) -> EndpointPort {
    EndpointPort { name: name.into(), protocol: protocol.into(), port }
}

#[test]
fn pods() {
    check_pod(
        json!({"metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"app": "web"},
                "annotations": {"romana.io/segment": "front"}},
               "spec": {"nodeName": "h1", "containers": [
                  {"name": "c1", "ports": [{"name": "http", "containerPort": 80},
                                           {"containerPort": 81},
                                           {"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
                  {"name": "c2", "ports": [{"name": "admin", "containerPort": 9000, "protocol": "TCP"}]}]}}),
        Ok(Some(PodInfo {
            namespace: "n".into(),
            name: "p".into(),
            uid: "u".into(),
            host: "h1".into(),
            labels: labels(&[("app", "web")]),
            // Unnamed ports are not selectable by name: left out; sorted by name.
            ports: vec![port("admin", "TCP", 9000), port("dns", "UDP", 53), port("http", "TCP", 80)],
            segment: "front".into(),
        })),
    );
    // Not scheduled yet: no host; no spec at all is still a pod.
    check_pod(
        json!({"metadata": {"name": "p", "namespace": "n"}}),
        Ok(Some(PodInfo { namespace: "n".into(), name: "p".into(), ..PodInfo::default() })),
    );
    check_pod(
        json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"hostNetwork": true, "containers": []}}),
        Ok(None),
    );
    check_pod(
        json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"containers": [{"name": "c", "ports": [{"name": "x", "containerPort": 70000}]}]}}),
        Err(MapError::Port { namespace: "n".into(), name: "p".into(), port_name: "x".into(), port: 70000 }),
    );
    check_pod(
        json!({"metadata": {"name": "p"}}),
        Err(MapError::NoNamespace { kind: "pod", name: "p".into() }),
    );
}

fn check_host(n: serde_json::Value, rack: &str, expect: Result<(&str, Pairs<'_>), MapError>) {
    let got = host(&obj(n.clone()), rack);
    let want = expect.map(|(ip, t)| HostDesired { name: "n1".into(), ip: ip.into(), tags: labels(t) });
    assert_eq!(got, want, "node {n}");
}

#[test]
fn nodes() {
    let mb = (MANAGED_BY, MANAGER);
    let addrs = |a: serde_json::Value| json!({"metadata": {"name": "n1"}, "status": {"addresses": a}});
    check_host(
        addrs(json!([{"type": "Hostname", "address": "n1"}, {"type": "ExternalIP", "address": "1.2.3.4"},
                     {"type": "InternalIP", "address": "10.0.0.1"}])),
        "romana.io/rack",
        Ok(("10.0.0.1", &[mb])),
    );
    // Dual stack: IPv4 is the host's address, IPv6 a tag (either order).
    check_host(
        addrs(
            json!([{"type": "InternalIP", "address": "fd00::1"}, {"type": "InternalIP", "address": "10.0.0.1"}]),
        ),
        "romana.io/rack",
        Ok(("10.0.0.1", &[(IPV6_TAG, "fd00::1"), mb])),
    );
    check_host(
        addrs(json!([{"type": "InternalIP", "address": "fd00::1"}])),
        "romana.io/rack",
        Ok(("fd00::1", &[mb])),
    );
    check_host(
        addrs(json!([{"type": "ExternalIP", "address": "1.2.3.4"}])),
        "romana.io/rack",
        Err(MapError::NoInternalIp { name: "n1".into() }),
    );
    check_host(
        addrs(json!([{"type": "InternalIP", "address": "bogus"}])),
        "r",
        Err(MapError::NoInternalIp { name: "n1".into() }),
    );
    let labelled = json!({"metadata": {"name": "n1", "labels": {
            "topology.kubernetes.io/zone": "z1", "topology.kubernetes.io/region": "r1",
            "romana.io/rack": "rack7", "example.com/rack": "rk9", "other": "x"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    check_host(
        labelled.clone(),
        "romana.io/rack",
        Ok(("10.0.0.1", &[mb, ("rack", "rack7"), ("region", "r1"), ("zone", "z1")])),
    );
    // The rack label is configurable.
    check_host(
        labelled,
        "example.com/rack",
        Ok(("10.0.0.1", &[mb, ("rack", "rk9"), ("region", "r1"), ("zone", "z1")])),
    );
}

#[test]
fn network_policies() {
    let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "n", "uid": "u9", "resourceVersion": "7", "generation": 2},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}},
                                       {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}}],
                              "ports": [{"protocol": "TCP", "port": "pg"}, {"port": 5432, "endPort": 5440}]}]}});
    let got = netpol(&obj(np.clone())).expect("maps");
    // What romanad would store for the same JSON posted directly.
    let direct: NetworkPolicy = obj(np);
    assert_eq!(got.policy, direct);
    assert_eq!(got.uid, "u9");
    // The posted JSON carries no server fields (resourceVersion etc.).
    assert_eq!(got.json["metadata"], json!({"name": "db", "namespace": "n"}));
    // An empty spec is the default policy (select all, deny ingress).
    let empty = netpol(&obj(json!({"metadata": {"name": "d", "namespace": "n"}}))).expect("maps");
    assert_eq!(empty.policy.spec, romana_api::netpol::NetworkPolicySpec::default());
    assert_eq!(
        netpol(&obj(json!({"metadata": {"name": "d"}}))),
        Err(MapError::NoNamespace { kind: "networkpolicy", name: "d".into() })
    );
}
