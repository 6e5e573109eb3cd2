//! The controller against the test Kubernetes API server (driven with kubectl) and romanad:
//! namespaces, pods, nodes and NetworkPolicies created, replaced, labelled and deleted reach
//! romanad; a kill -9 while things change and a restart miss and duplicate nothing; a forced
//! 410 Gone relists; every API call the controller made is in `--print-permissions`. No root.

mod common;

use std::collections::BTreeMap;

use common::{Env, eventually};
use romana_client::Client;

fn ns_yaml(name: &str, labels: &[(&str, &str)], isolation: Option<&str>) -> String {
    let labels: String = labels.iter().map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
    let ann =
        isolation.map(|i| format!("  annotations:\n    romana.io/isolation: {i}\n")).unwrap_or_default();
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n{labels}{ann}")
}

fn pod_yaml(ns: &str, name: &str, app: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\n\
         spec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n    ports:\n    - name: pg\n      containerPort: 5432\n"
    )
}

fn node_yaml(name: &str, ip: &str, zone: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    topology.kubernetes.io/zone: {zone}\n\
         status:\n  addresses:\n  - type: InternalIP\n    address: {ip}\n"
    )
}

fn np_yaml(ns: &str, name: &str, from_app: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  podSelector:\n    matchLabels:\n      app: db\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app: {from_app}\n"
    )
}

async fn tenant_labels(c: &Client, name: &str) -> Option<BTreeMap<String, String>> {
    c.tenant(name).await.ok().map(|t| t.labels)
}

async fn netpol_from(c: &Client, ns: &str, name: &str) -> Option<String> {
    let all = c.netpols().await.ok()?;
    let np = all.into_iter().find(|n| n.metadata.namespace == ns && n.metadata.name == name)?;
    let peer = np.spec.ingress?.first()?.from.as_ref()?.first()?.pod_selector.clone()?;
    peer.match_labels.get("app").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_follows_the_api_server() {
    let env = Env::start("k8s-follow").await;
    let c = &env.admin;
    let mut ctl = env.controller("c1", &["--pod-reclaim-grace", "1"]);

    // A namespace: tenant with its labels, uid and isolation.
    env.kubectl_f("create", &ns_yaml("shop", &[("team", "a")], Some("tenant")));
    let uid = env.kubectl(&["get", "namespace", "shop", "-o", "jsonpath={.metadata.uid}"]);
    let t = eventually("tenant shop", 30, || async { c.tenant("shop").await.ok() }).await;
    assert_eq!(t.external_id, uid);
    assert_eq!(t.isolation, "tenant");
    assert_eq!(t.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(t.labels.get("kubernetes.io/metadata.name").map(String::as_str), Some("shop"));

    // A node: host with its InternalIP and zone tag.
    env.kubectl_f("create", &node_yaml("node1", "192.168.77.1", "z1"));
    let h = eventually("host node1", 30, || async { c.host("node1").await.ok() }).await;
    assert_eq!(h.ip, "192.168.77.1");
    assert_eq!(h.tags.get("zone").map(String::as_str), Some("z1"));

    // A pod: its record with labels, host and named port.
    env.kubectl_f("create", &pod_yaml("shop", "db-0", "db", "node1"));
    let p = eventually("pod record shop/db-0", 30, || async { c.pod("shop", "db-0").await.ok() }).await;
    assert_eq!(p.host, "node1");
    assert_eq!(p.labels.get("app").map(String::as_str), Some("db"));
    assert_eq!(p.ports.len(), 1);
    assert_eq!((p.ports[0].name.as_str(), p.ports[0].port), ("pg", 5432));

    // Labels change in place: pod and namespace.
    env.kubectl(&["label", "pod", "-n", "shop", "db-0", "app=db2", "--overwrite"]);
    eventually("pod label app=db2", 30, || async {
        let p = c.pod("shop", "db-0").await.ok()?;
        (p.labels.get("app").map(String::as_str) == Some("db2")).then_some(())
    })
    .await;
    env.kubectl(&["label", "namespace", "shop", "team=b", "--overwrite"]);
    eventually("namespace label team=b", 30, || async {
        (tenant_labels(c, "shop").await?.get("team").map(String::as_str) == Some("b")).then_some(())
    })
    .await;

    // A NetworkPolicy: created, replaced, deleted.
    env.kubectl_f("create", &np_yaml("shop", "allow-web", "web"));
    eventually("policy allow-web", 30, || async {
        (netpol_from(c, "shop", "allow-web").await? == "web").then_some(())
    })
    .await;
    env.kubectl_f("replace", &np_yaml("shop", "allow-web", "api"));
    eventually("policy allow-web replaced", 30, || async {
        (netpol_from(c, "shop", "allow-web").await? == "api").then_some(())
    })
    .await;
    // One romanad refuses (the test server does not validate the protocol; a real API server
    // would refuse it first): a Warning Event on the policy, and the others still go through.
    let bad = np_yaml("shop", "bad", "web").replace(
        "          app: web\n",
        "          app: web\n    ports:\n    - protocol: ICMP\n      port: 1\n",
    );
    env.kubectl_f("create", &bad);
    env.kubectl_f("create", &np_yaml("shop", "after-bad", "web"));
    eventually("policy after-bad", 30, || async { netpol_from(c, "shop", "after-bad").await }).await;
    let events = eventually("a Warning Event on the refused policy", 30, || async {
        let out = env.kubectl(&["get", "events", "-n", "shop", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let items = v["items"].as_array()?.clone();
        let ours: Vec<_> = items
            .into_iter()
            .filter(|e| {
                e["involvedObject"]["name"] == "bad" && e["involvedObject"]["kind"] == "NetworkPolicy"
            })
            .collect();
        (!ours.is_empty()).then_some(ours)
    })
    .await;
    assert_eq!(events[0]["type"], "Warning");
    assert!(events[0]["message"].as_str().unwrap_or("").contains("ICMP"), "{}", events[0]);
    assert!(netpol_from(c, "shop", "bad").await.is_none(), "romanad never stored the refused policy");
    env.kubectl(&["delete", "networkpolicy", "-n", "shop", "allow-web"]);
    eventually("policy allow-web deleted", 30, || async {
        netpol_from(c, "shop", "allow-web").await.is_none().then_some(())
    })
    .await;

    // Killed while things change; what changed meanwhile (deletions included) lands on restart,
    // and nothing is duplicated.
    ctl.kill9();
    env.kubectl(&["delete", "pod", "-n", "shop", "db-0"]);
    env.kubectl_f("create", &pod_yaml("shop", "db-1", "db", "node1"));
    env.kubectl(&["delete", "networkpolicy", "-n", "shop", "after-bad"]);
    env.kubectl(&["label", "namespace", "shop", "team=c", "--overwrite"]);
    env.kubectl_f("create", &ns_yaml("blog", &[], None));
    let ctl = env.controller("c1", &["--pod-reclaim-grace", "1"]);
    eventually("changes made while down", 30, || async {
        let pods = c.pods().await.ok()?;
        let names: Vec<_> = pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
        let team = tenant_labels(c, "shop").await?.get("team").cloned();
        let gone = netpol_from(c, "shop", "after-bad").await.is_none();
        let blog = c.tenant("blog").await.is_ok();
        (names == ["shop/db-1"] && team.as_deref() == Some("c") && gone && blog).then_some(())
    })
    .await;
    let tenants: Vec<String> = c.tenants().await.expect("tenants").into_iter().map(|t| t.name).collect();
    assert_eq!(tenants.iter().filter(|t| *t == "shop").count(), 1, "{tenants:?}");

    // 410 Gone: history compacted and watches closed; the watchers relist and what changed
    // meanwhile lands.
    let lists_before = env.api.requests().iter().filter(|r| r.verb == "list").count();
    env.api.compact();
    env.kubectl(&["label", "pod", "-n", "shop", "db-1", "app=db3", "--overwrite"]);
    eventually("pod label after the compaction", 30, || async {
        let p = c.pod("shop", "db-1").await.ok()?;
        (p.labels.get("app").map(String::as_str) == Some("db3")).then_some(())
    })
    .await;
    eventually("a relist after 410", 30, || async {
        (env.api.requests().iter().filter(|r| r.verb == "list").count() > lists_before).then_some(())
    })
    .await;

    // A pod deleted from the API whose CNI DEL never comes (its node is lost): after the grace
    // period its endpoint and address are released. A live pod's endpoint stays.
    for pod in ["lost", "alive"] {
        env.kubectl_f("create", &pod_yaml("shop", pod, "db", "node1"));
        eventually("pod record", 30, || async { c.pod("shop", pod).await.ok() }).await;
        let name = format!("cni:pods:{pod}:eth0");
        let req = romana_api::rest::AddressRequest {
            name: name.clone(),
            host: "node1".into(),
            tenant: "shop".into(),
            segment: String::new(),
            ip: None,
        };
        let a = c.allocate(&req, None).await.expect("address");
        let e = romana_api::rest::EndpointInfo {
            name,
            ip: a.ip,
            tenant: "shop".into(),
            host: "node1".into(),
            pod: format!("shop/{pod}"),
            ..Default::default()
        };
        c.put_endpoint(&e).await.expect("endpoint as CNI ADD registers it");
    }
    env.kubectl(&["delete", "pod", "-n", "shop", "lost"]);
    eventually("the lost pod's endpoint and address released", 30, || async {
        let gone =
            c.endpoint("cni:pods:lost:eth0").await.is_err() && c.address("cni:pods:lost:eth0").await.is_err();
        gone.then_some(())
    })
    .await;
    assert!(c.endpoint("cni:pods:alive:eth0").await.is_ok(), "a live pod's endpoint is never reclaimed");
    assert!(c.address("cni:pods:alive:eth0").await.is_ok());

    // A namespace deleted: its tenant goes (it has no endpoints); a tenant made by hand stays,
    // and so does an operator's policy in it.
    c.create_tenant(&romana_api::rest::TenantRequest {
        name: "manual".into(),
        external_id: String::new(),
        labels: BTreeMap::new(),
        isolation: String::new(),
    })
    .await
    .expect("hand-made tenant");
    let by_hand = serde_json::from_str::<serde_json::Value>(
        r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "by-hand", "namespace": "manual"}, "spec": {"podSelector": {}}}"#,
    )
    .expect("JSON");
    c.apply_netpol(&by_hand).await.expect("hand-made policy");
    env.kubectl(&["delete", "namespace", "blog"]);
    eventually("tenant blog deleted", 30, || async { c.tenant("blog").await.is_err().then_some(()) }).await;
    // Another resync has passed (--resync-interval 2 in the tests) and the hand-made ones stay.
    let resyncs = ctl.metric("romana_k8s_resyncs_total").await.unwrap_or(0.0);
    eventually("a full resync", 30, || async {
        (ctl.metric("romana_k8s_resyncs_total").await? > resyncs).then_some(())
    })
    .await;
    assert!(c.tenant("manual").await.is_ok(), "a hand-made tenant is never deleted");
    assert!(c.netpols().await.expect("policies").iter().any(|n| n.metadata.name == "by-hand"));

    // A node deleted: its host goes. A host made by hand stays.
    c.add_host(&romana_api::rest::HostRequest {
        name: "manual".into(),
        ip: "192.168.77.9".into(),
        ipv6: None,
        agent_port: None,
        tags: BTreeMap::new(),
        k8s_info: None,
    })
    .await
    .expect("hand-made host");
    env.kubectl(&["delete", "node", "node1"]);
    eventually("host node1 removed", 30, || async { c.host("node1").await.is_err().then_some(()) }).await;
    assert!(c.host("manual").await.is_ok(), "a hand-made host is never removed");

    // Metrics say what happened.
    let m = ctl.metrics().await;
    assert!(m.contains("romana_k8s_writes_total{kind=\"pod\",result=\"ok\"}"), "{m}");
    assert!(m.contains("romana_k8s_leader 1"), "{m}");

    drop(ctl);
}

fn permissions() -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_romana-k8s"))
        .arg("--print-permissions")
        .output()
        .expect("runs");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("--print-permissions prints JSON")
}

/// Only the controller talks to this API server (objects are written in-process), so every
/// request in its log is the controller's: each must be in `--print-permissions`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_call_is_in_print_permissions() {
    use serde_json::json;
    let env = Env::start("k8s-perms").await;
    let c = &env.admin;
    let before = env.api.requests().len();
    let ctl = env.controller("p1", &[]);
    let put =
        |api: &str, res: &str, o: serde_json::Value| env.api.put_object(api, res, o).expect("put_object");
    put("v1", "namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n1"}}));
    put(
        "v1",
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "h1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.77.2"}]}}),
    );
    put(
        "v1",
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n1"},
        "spec": {"nodeName": "h1", "containers": [{"name": "c", "image": "x"}]}}),
    );
    let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bad", "namespace": "n1"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}});
    put("networking.k8s.io/v1", "networkpolicies", bad);
    // A LoadBalancer Service with a VIP: its outcome is patched on, status included.
    c.set_vip_config(&romana_api::vip::VipConfig { ranges: vec!["198.51.100.0/28".into()] })
        .await
        .expect("ranges");
    put(
        "v1",
        "services",
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s", "namespace": "n1", "annotations": {"romana.io/vip": "auto"}},
        "spec": {"type": "LoadBalancer", "selector": {"app": "s"}, "ports": [{"port": 80}]}}),
    );
    eventually("pod record n1/p", 30, || async { c.pod("n1", "p").await.ok() }).await;
    eventually("the Service's LoadBalancer status", 30, || async {
        env.api.requests().iter().any(|r| r.resource == "services/status" && r.verb == "patch").then_some(())
    })
    .await;
    eventually("the Event of the refused policy", 30, || async {
        env.api.requests().iter().any(|r| r.resource == "events" && r.verb == "create").then_some(())
    })
    .await;
    eventually("leadership", 30, || async { ctl.leads().await.then_some(()) }).await;
    let perms = permissions();
    let covered = |g: &str, r: &str, v: &str| {
        perms.as_array().into_iter().flatten().any(|p| {
            p["apiGroup"] == g
                && p["resource"] == r
                && p["verbs"].as_array().is_some_and(|vs| vs.iter().any(|x| x == v))
        })
    };
    let seen = env.api.requests();
    let ours = &seen[before..];
    for r in ours {
        assert!(covered(&r.group, &r.resource, &r.verb), "not in --print-permissions: {r:?}");
    }
    // And the list is not padded: every kind of call it names was made.
    for p in perms.as_array().expect("array") {
        for v in p["verbs"].as_array().expect("verbs") {
            let made = ours.iter().any(|r| {
                p["apiGroup"] == r.group.as_str()
                    && p["resource"] == r.resource.as_str()
                    && v == r.verb.as_str()
            });
            // A Lease replace happens on renewal, which may not have come yet; create and get have.
            if !(p["resource"] == "leases" && v == "update") {
                assert!(made, "listed but never made: {p} {v}");
            }
        }
    }
}
