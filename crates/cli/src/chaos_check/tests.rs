//! The chaos invariants as data: a model and what romanad and the kernel say, and the
//! violations expected.

use super::*;
use crate::chaos_plan::Op;

fn addr(pod: &str, ip: &str, host: &str) -> Address {
    Address {
        name: address_name(pod),
        ip: ip.into(),
        prefix_len: 32,
        network: "pods".into(),
        block: String::new(),
        host: host.into(),
        tenant: "red".into(),
        segment: String::new(),
    }
}

fn ep(pod: &str, ip: &str, host: &str, app: &str) -> EndpointInfo {
    EndpointInfo {
        name: address_name(pod),
        ip: ip.into(),
        tenant: "red".into(),
        segment: String::new(),
        host: host.into(),
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        ports: vec![],
        pod: String::new(),
    }
}

/// A model where `a` (10.0.0.2 on h0) and `b` (10.0.0.3 on h1) are live and `z` was deleted.
fn model() -> Model {
    let mut m = Model::default();
    for (pod, host, ip) in [("a", 0, "10.0.0.2"), ("b", 1, "10.0.0.3"), ("z", 0, "10.0.0.9")] {
        let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        m.outcome(&Op::Add { pod: pod.into(), host, tenant: "red".into(), labels }, true, &[ip.into()]);
    }
    m.outcome(&Op::Del { pod: "z".into() }, true, &[]);
    m
}

fn check(addresses: Vec<Address>, endpoints: Vec<EndpointInfo>, expect: &[&str]) {
    let s = Snapshot { addresses, endpoints, ..Default::default() };
    let got: Vec<String> = registry(&model(), &["h0".into(), "h1".into()], &s)
        .iter()
        .map(|x| format!("{}: {}", x.kind, x.detail))
        .collect();
    assert_eq!(got, expect);
}

#[test]
fn registry_violations() {
    let good_a = || (addr("a", "10.0.0.2", "h0"), ep("a", "10.0.0.2", "h0", "web"));
    let good_b = || (addr("b", "10.0.0.3", "h1"), ep("b", "10.0.0.3", "h1", "web"));
    let (a, ea) = good_a();
    let (b, eb) = good_b();
    check(vec![a.clone(), b.clone()], vec![ea.clone(), eb.clone()], &[]);
    // An address held twice, and by a name no pod has: a double allocation and a leak.
    let mut twice = addr("x", "10.0.0.2", "h1");
    twice.name = format!("cni:{NETWORK}:x:eth0");
    check(
        vec![a.clone(), b.clone(), twice],
        vec![ea.clone(), eb.clone()],
        &[
            "double-allocation: 10.0.0.2 is held by cni:romana-sandbox:a:eth0 and cni:romana-sandbox:x:eth0",
            "leak: cni:romana-sandbox:x:eth0 holds 10.0.0.2 on h1 but no live pod has it",
        ],
    );
    // Addresses of other users (not the sandbox network's CNI names) are not leaks.
    let mut other = addr("q", "10.0.0.7", "h1");
    other.name = "gateway-h1".into();
    check(vec![a.clone(), b.clone(), other], vec![ea.clone(), eb.clone()], &[]);
    // An acknowledged ADD lost, or moved.
    check(
        vec![a.clone(), addr("b", "10.0.0.4", "h1")],
        vec![ea.clone()],
        &[
            "lost-add: cni:romana-sandbox:b:eth0 was added as 10.0.0.3 on h1; IPAM says 10.0.0.4 on h1",
            "lost-add: cni:romana-sandbox:b:eth0 was added but has no endpoint record",
        ],
    );
    // A relabel acknowledged but not kept.
    check(
        vec![a.clone(), b.clone()],
        vec![ea.clone(), ep("b", "10.0.0.3", "h1", "db")],
        &[
            r#"lost-label: endpoint cni:romana-sandbox:b:eth0 has labels {"app": "db"}; the last acknowledged are {"app": "web"}"#,
        ],
    );
    // An acknowledged DEL that left its address and record behind: gone is gone, and a leak.
    check(
        vec![a, b, addr("z", "10.0.0.9", "h0")],
        vec![ea, eb, ep("z", "10.0.0.9", "h0", "web")],
        &[
            "leak: cni:romana-sandbox:z:eth0 holds 10.0.0.9 on h0 but no live pod has it",
            "leak: endpoint cni:romana-sandbox:z:eth0 (10.0.0.9 on h0) belongs to no live pod",
            "del-not-gone: cni:romana-sandbox:z:eth0 was deleted but IPAM still holds 10.0.0.9 for it",
            "del-not-gone: cni:romana-sandbox:z:eth0 was deleted but its endpoint record remains",
        ],
    );
}

#[test]
fn kernel_routes_against_the_route_managers_set() {
    let set: HostRoutesInfo = serde_json::from_value(serde_json::json!({
        "host": "h0", "revision": 3, "per_block": 2, "per_endpoint": 0,
        "routes": [
            {"dest": "10.0.0.16/28", "kind": "host", "via": "h1", "via_ip": "192.168.1.12"},
            {"dest": "10.0.0.0/16", "kind": "throw"},
            {"dest": "10.1.0.0/16", "kind": "group", "via": "/r2"}
        ]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let want = expected_routes(&set, &["10.0.0.2"]);
    assert_eq!(
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        ["10.0.0.16/28 via 192.168.1.12", "10.0.0.2/32 dev", "throw 10.0.0.0/16"]
    );
    // iproute2's JSON, as `ip -j route show proto 77` prints it.
    let kernel = r#"[{"type":"throw","dst":"10.0.0.0/16","protocol":"77","flags":[]},
        {"dst":"10.0.0.16/28","gateway":"192.168.1.12","dev":"eth0","protocol":"77","flags":[]},
        {"dst":"10.0.0.2","dev":"romana1a2b3c4d","protocol":"77","scope":"link","flags":[]}]"#;
    let have = kernel_routes(kernel).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(routes("h0", &want, &have), vec![]);
    let stale = r#"[{"type":"throw","dst":"10.0.0.0/16"},{"dst":"10.0.0.16/28","gateway":"192.168.1.13","dev":"eth0"},
        {"dst":"10.0.0.5","dev":"romana9"}]"#;
    let have = kernel_routes(stale).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        routes("h0", &want, &have),
        vec![Violation {
            kind: "route-drift",
            detail: "h0: missing 10.0.0.16/28 via 192.168.1.12, missing 10.0.0.2/32 dev, extra 10.0.0.16/28 via 192.168.1.13, extra 10.0.0.5/32 dev".into()
        }]
    );
    assert!(kernel_routes("not json").is_err());
}

fn snapshot_with_policy(np: Option<serde_json::Value>) -> Snapshot {
    let tenant = |name: &str, isolation: &str| Tenant {
        name: name.into(),
        external_id: String::new(),
        labels: BTreeMap::new(),
        number: 1,
        segments: vec![],
        isolation: isolation.into(),
    };
    Snapshot {
        addresses: vec![],
        endpoints: vec![ep("a", "10.0.0.2", "h0", "web"), ep("b", "10.0.0.3", "h1", "db")],
        tenants: vec![tenant("red", "none")],
        policies: vec![],
        netpols: np
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")))
            .collect(),
    }
}

#[test]
fn probes_against_the_evaluator() {
    let db_from_client = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "red"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}});
    let open = policy_inputs(&snapshot_with_policy(None));
    let closed = policy_inputs(&snapshot_with_policy(Some(db_from_client)));
    assert!(open.3.is_empty() && closed.3.is_empty());
    let r = |s: &str, d: &str, ok: bool| (s.to_owned(), d.to_owned(), ok);
    // Open: everything answers; a failed ping is a violation.
    let v4 = Family::V4;
    assert_eq!(probes(&open, v4, &[r("a", "b", true), r("b", "a", true)]), vec![]);
    assert_eq!(probes(&open, v4, &[r("a", "b", false)])[0].kind, "probe-blocked");
    // db admits only clients: a -> b must fail, b -> a still works.
    assert_eq!(probes(&closed, v4, &[r("a", "b", false), r("b", "a", true)]), vec![]);
    assert_eq!(
        probes(&closed, v4, &[r("a", "b", true)]),
        vec![Violation { kind: "probe-leaked", detail: "ping a -> b is denied but was answered".into() }]
    );
    // A pod without an endpoint record is the registry's violation, not the probe's.
    assert_eq!(probes(&closed, v4, &[r("a", "nobody", true)]), vec![]);
    // IPv4-only endpoints have no IPv6 records: nothing to hold an IPv6 probe against.
    assert_eq!(probes(&closed, Family::V6, &[r("a", "b", true)]), vec![]);
}

#[test]
fn a_missing_or_foreign_table_is_drift_and_the_compiled_one_is_not() {
    let inputs = policy_inputs(&snapshot_with_policy(None));
    assert_eq!(firewall("h0", &inputs, None)[0].kind, "nft-drift");
    assert_eq!(firewall("h0", &inputs, Some("{")).len(), 1);
    // An empty table (the agent's first pass not done, or flushed by someone) is drift too.
    let empty = r#"{"nftables": [{"metainfo": {"json_schema_version": 1}},
        {"table": {"family": "inet", "name": "romana", "handle": 1}}]}"#;
    let got = firewall("h0", &inputs, Some(empty));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].detail.starts_with("h0: the kernel's table differs"), "{got:?}");
}

/// A dual-stack model: `a` (10.0.0.2 and fd00::2 on h0) live, `z` (10.0.0.9, fd00::9) deleted,
/// `h` (10.0.0.3 on h1) live but its ADD answered IPv4 only.
fn dual_model() -> Model {
    let mut m = Model::default();
    m.dual_stack = true;
    let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    for (pod, host, ips) in [("a", 0, &["10.0.0.2", "fd00::2"][..]), ("z", 0, &["fd00::9", "10.0.0.9"][..])] {
        let op = Op::Add { pod: pod.into(), host, tenant: "red".into(), labels: labels.clone() };
        m.outcome(&op, true, &ips.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    m.outcome(&Op::Del { pod: "z".into() }, true, &[]);
    m
}

fn v6(mut x: (Address, EndpointInfo)) -> (Address, EndpointInfo) {
    x.0.name = v6_address_name(&x.0.name);
    x.1.name = v6_address_name(&x.1.name);
    x
}

fn check_dual(m: &Model, records: Vec<(Address, EndpointInfo)>, expect: &[&str]) {
    let (addresses, endpoints) = records.into_iter().unzip();
    let s = Snapshot { addresses, endpoints, ..Default::default() };
    let got: Vec<String> = registry(m, &["h0".into(), "h1".into()], &s)
        .iter()
        .map(|x| format!("{}: {}", x.kind, x.detail))
        .collect();
    assert_eq!(got, expect);
}

#[test]
fn dual_stack_registry_violations_cover_the_v6_records() {
    let m = dual_model();
    let a4 = || (addr("a", "10.0.0.2", "h0"), ep("a", "10.0.0.2", "h0", "web"));
    let a6 = || v6((addr("a", "fd00::2", "h0"), ep("a", "fd00::2", "h0", "web")));
    let p = &m.pods["a"];
    assert_eq!((p.ip.as_deref(), p.ipv6.as_deref()), (Some("10.0.0.2"), Some("fd00::2")));
    assert_eq!(m.pods.get("z"), None, "deleted");
    check_dual(&m, vec![a4(), a6()], &[]);
    // The IPv6 address moved and its record replaced by a stray one, or labelled apart from its pod.
    let mut moved = a6();
    moved.0.ip = "fd00::3".into();
    let stray = (moved.0, ep("q", "10.0.0.7", "h0", "web"));
    check_dual(
        &m,
        vec![a4(), stray],
        &[
            "leak: endpoint cni:romana-sandbox:q:eth0 (10.0.0.7 on h0) belongs to no live pod",
            "lost-add: cni:romana-sandbox:a:eth0#v6 was added as fd00::2 on h0; IPAM says fd00::3 on h0",
            "lost-add: cni:romana-sandbox:a:eth0#v6 was added but has no endpoint record",
        ],
    );
    let mut relabelled = a6();
    relabelled.1.labels = BTreeMap::from([("app".to_owned(), "db".to_owned())]);
    check_dual(
        &m,
        vec![a4(), relabelled],
        &[
            r#"lost-label: endpoint cni:romana-sandbox:a:eth0#v6 has labels {"app": "db"}; the last acknowledged are {"app": "web"}"#,
        ],
    );
    // A deleted pod's IPv6 address and record left behind: a leak and not gone.
    check_dual(
        &m,
        vec![a4(), a6(), v6((addr("z", "fd00::9", "h0"), ep("z", "fd00::9", "h0", "web")))],
        &[
            "leak: cni:romana-sandbox:z:eth0#v6 holds fd00::9 on h0 but no live pod has it",
            "leak: endpoint cni:romana-sandbox:z:eth0#v6 (fd00::9 on h0) belongs to no live pod",
            "del-not-gone: cni:romana-sandbox:z:eth0#v6 was deleted but IPAM still holds fd00::9 for it",
            "del-not-gone: cni:romana-sandbox:z:eth0#v6 was deleted but its endpoint record remains",
        ],
    );
    // An IPv6 address held twice (by a and by another pod's #v6).
    let mut twice = v6((addr("x", "fd00::2", "h1"), ep("x", "fd00::2", "h1", "web")));
    twice.1.name = address_name("a") + "#v6";
    check_dual(
        &m,
        vec![a4(), a6(), (twice.0, a6().1)],
        &[
            "double-allocation: fd00::2 is held by cni:romana-sandbox:a:eth0#v6 and cni:romana-sandbox:x:eth0#v6",
            "leak: cni:romana-sandbox:x:eth0#v6 holds fd00::2 on h1 but no live pod has it",
        ],
    );
    // An ADD acknowledged with one family only, in a dual-stack sandbox.
    let mut m = dual_model();
    let op = Op::Add { pod: "h".into(), host: 1, tenant: "red".into(), labels: BTreeMap::new() };
    m.outcome(&op, true, &["10.0.0.3".into()]);
    let mut h4 = (addr("h", "10.0.0.3", "h1"), ep("h", "10.0.0.3", "h1", "web"));
    h4.1.labels = BTreeMap::new();
    check_dual(
        &m,
        vec![a4(), a6(), h4],
        &[
            "lost-add: ADD of h on h1 answered [10.0.0.3] in a dual-stack sandbox: one address of each family expected",
        ],
    );
}

#[test]
fn ipv6_kernel_routes_against_the_route_managers_set() {
    let set: HostRoutesInfo = serde_json::from_value(serde_json::json!({
        "host": "h0", "revision": 3, "per_block": 2, "per_endpoint": 0,
        "routes": [
            {"dest": "10.0.0.16/28", "kind": "host", "via": "h1", "via_ip": "192.168.1.12"},
            {"dest": "fd00::10/124", "kind": "host", "via": "h1", "via_ip": "fd72:6d73:1::12"}
        ]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let want = expected_routes(&set, &["10.0.0.2", "fd00::2"]);
    assert_eq!(
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "10.0.0.16/28 via 192.168.1.12",
            "10.0.0.2/32 dev",
            "fd00::10/124 via fd72:6d73:1::12",
            "fd00::2/128 dev"
        ]
    );
    // `ip -j -6 route show proto 77`: host routes without their /128.
    let v6 = r#"[{"dst":"fd00::10/124","gateway":"fd72:6d73:1::12","dev":"eth0","protocol":"77","flags":[]},
        {"dst":"fd00::2","dev":"romana1a2b3c4d","protocol":"77","metric":1024,"flags":[],"pref":"medium"}]"#;
    let v4 = r#"[{"dst":"10.0.0.16/28","gateway":"192.168.1.12","dev":"eth0"},{"dst":"10.0.0.2","dev":"romana1a2b3c4d"}]"#;
    let mut have = kernel_routes(v4).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        routes("h0", &want, &have),
        vec![Violation {
            kind: "route-drift",
            detail: "h0: missing fd00::10/124 via fd72:6d73:1::12, missing fd00::2/128 dev".into()
        }],
        "the IPv6 routes are checked, not only the IPv4 ones"
    );
    have.extend(kernel_routes(v6).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(routes("h0", &want, &have), vec![]);
}

#[test]
fn ipv6_probes_against_the_evaluator_use_the_v6_records_and_icmpv6() {
    let db_from_client = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "red"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}});
    let mut s = snapshot_with_policy(Some(db_from_client));
    let mut six = vec![ep("a", "fd00::2", "h0", "web"), ep("b", "fd00::3", "h1", "db")];
    for e in &mut six {
        e.name = v6_address_name(&e.name);
    }
    s.endpoints.extend(six);
    let inputs = policy_inputs(&s);
    assert!(inputs.3.is_empty(), "{:?}", inputs.3);
    let r = |s: &str, d: &str, ok: bool| (s.to_owned(), d.to_owned(), ok);
    assert_eq!(Family::V6.ping(), Probe { protocol: Protocol::Icmpv6, port: 128 * 256 });
    assert_eq!(allowed(&inputs, Family::V6, "a", "b"), Some(false));
    assert_eq!(allowed(&inputs, Family::V6, "b", "a"), Some(true));
    assert_eq!(probes(&inputs, Family::V6, &[r("a", "b", false), r("b", "a", true)]), vec![]);
    assert_eq!(
        probes(&inputs, Family::V6, &[r("a", "b", true), r("b", "a", false)]),
        vec![
            Violation { kind: "probe6-leaked", detail: "ping -6 a -> b is denied but was answered".into() },
            Violation {
                kind: "probe6-blocked",
                detail: "ping -6 b -> a is allowed but got no answer".into()
            },
        ]
    );
    // The IPv6 record relabelled apart from the IPv4 one: each family follows its own record.
    let v6b = s.endpoints.iter_mut().find(|e| e.name.ends_with("b:eth0#v6")).unwrap_or_else(|| panic!());
    v6b.labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let inputs = policy_inputs(&s);
    assert_eq!(
        (allowed(&inputs, Family::V4, "a", "b"), allowed(&inputs, Family::V6, "a", "b")),
        (Some(false), Some(true))
    );
}
