//! An agent's credential from the attacker's side, black box (a romanad process with
//! authentication on, real HTTP): agent-h1, a service user bound to host h1, walks every route a
//! service may write against host h2's objects and against tenants and policies, and must be
//! refused with the exact status and change nothing (read back as admin); the same calls
//! against h1's own objects succeed, and an unbound service user (a controller) keeps its rights.
#![allow(clippy::unwrap_used)]

mod common;

use reqwest::Method;
use romana_api::rest::{
    AddressRequest, EndpointInfo, HostRequest, SegmentRequest, TenantRequest, UserRequest,
};
use romana_client::Client;
use romana_test_support::TempDir;
use serde_json::{Value, json};

async fn call(url: &str, token: &str, method: &Method, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut req = romana_client::http().request(method.clone(), format!("{url}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = match tokio::time::timeout(std::time::Duration::from_secs(5), req.send()).await {
        Ok(r) => r.unwrap_or_else(|e| panic!("{method} {path}: {e}")),
        Err(_) => panic!("{method} {path}: no answer in 5 s"),
    };
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn addr(name: &str, host: &str, segment: &str) -> AddressRequest {
    AddressRequest {
        name: name.into(),
        host: host.into(),
        tenant: "blue".into(),
        segment: segment.into(),
        ip: None,
    }
}

fn host(name: &str, ip: &str) -> HostRequest {
    HostRequest {
        name: name.into(),
        ip: ip.into(),
        ipv6: None,
        agent_port: None,
        tags: Default::default(),
        k8s_info: None,
    }
}

fn endpoint(a: &romana_api::rest::Address) -> EndpointInfo {
    EndpointInfo {
        name: a.name.clone(),
        ip: a.ip.clone(),
        tenant: a.tenant.clone(),
        segment: a.segment.clone(),
        host: a.host.clone(),
        labels: [("app".to_owned(), "db".to_owned())].into(),
        ports: vec![],
        pod: String::new(),
    }
}

fn service_user(name: &str, hosts: &[&str]) -> UserRequest {
    UserRequest {
        name: name.into(),
        password: format!("{name}-password-123"),
        roles: vec!["service".into()],
        tenants: vec![],
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
    }
}

async fn login(url: &str, name: &str) -> String {
    let c = Client::new(vec![url.to_owned()]);
    c.login(name, &format!("{name}-password-123")).await.unwrap();
    c.token().unwrap()
}

fn allow_all(id: &str) -> Value {
    json!({"id": id, "applied_to": [{"tenant": "blue"}],
           "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "any"}]}]})
}

fn netpol(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"podSelector": {}, "ingress": [{}]}})
}

/// What the admin reads of everything an agent could change.
async fn snapshot(url: &str, admin: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in [
        "/hosts",
        "/addresses",
        "/endpoints",
        "/tenants",
        "/tenants/blue/segments",
        "/policies",
        "/networkpolicies",
        "/liveness",
        "/blackouts",
        "/auth/users",
    ] {
        let (status, body) = call(url, admin, &Method::GET, path, None).await;
        assert_eq!(status, 200, "admin GET {path}: {body}");
        out.push((path.to_owned(), serde_json::from_str(&body).unwrap()));
    }
    out
}

/// Runs `cases` with `token`, and lists every answer whose status is not the expected one or
/// whose error has no JSON body naming the problem.
async fn run(
    url: &str,
    token: &str,
    who: &str,
    cases: &[(Method, String, Option<Value>, u16)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (method, path, body, expect) in cases {
        let (status, text) = call(url, token, method, path, body.as_ref()).await;
        if status != *expect {
            failures.push(format!("{who}: {method} {path} answered {status}, not {expect}: {text}"));
        }
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if v["message"].as_str().is_none_or(str::is_empty) || v["status_code"] != json!(status) {
                failures
                    .push(format!("{who}: {method} {path}: {status} without the JSON error body: {text}"));
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_changes_only_its_own_hosts_records() {
    let dir = TempDir::new("agent-scope");
    let d = common::embedded(&dir, &[]);
    let admin = common::admin(&dir).await;
    let admin_t = admin.token().unwrap();

    let topo: romana_api::topology::TopologyRequest = serde_json::from_value(json!({
        "networks": [{"name": "net", "cidr": "10.121.0.0/16", "block_mask": 29}],
        "topologies": [{"networks": ["net"], "map": [{"groups": []}]}]
    }))
    .unwrap();
    admin.apply_topology(&topo).await.unwrap();
    admin.add_host(&host("h1", "192.0.2.1")).await.unwrap();
    admin.add_host(&host("h2", "192.0.2.2")).await.unwrap();
    admin
        .create_tenant(&TenantRequest {
            name: "blue".into(),
            external_id: String::new(),
            labels: Default::default(),
            isolation: Default::default(),
        })
        .await
        .unwrap();
    for s in ["db", "web"] {
        let seg = SegmentRequest { name: s.into(), external_id: String::new(), labels: Default::default() };
        admin.add_segment("blue", &seg).await.unwrap();
    }
    let h1_a = admin.allocate(&addr("h1-a", "h1", "db"), None).await.unwrap();
    let h2_a = admin.allocate(&addr("h2-a", "h2", "db"), None).await.unwrap();
    for a in [&h1_a, &h2_a] {
        admin.put_endpoint(&endpoint(a)).await.unwrap();
    }
    admin.add_policy(&allow_all("blue-pol")).await.unwrap();
    admin.apply_netpol(&netpol("blue", "blue-np")).await.unwrap();
    admin.create_user(&service_user("agent-h1", &["h1"])).await.unwrap();
    admin.create_user(&service_user("controller", &[])).await.unwrap();
    let agent = login(&d.url, "agent-h1").await;

    // The binding travels in the token: whoami shows it.
    let (status, me) = call(&d.url, &agent, &Method::GET, "/auth/whoami", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(serde_json::from_str::<Value>(&me).unwrap()["hosts"], json!(["h1"]), "{me}");

    // Only a service user is bound to hosts, and only to valid host names.
    let mut bad = service_user("bad-1", &["h1"]);
    bad.roles = vec!["tenant".into()];
    bad.tenants = vec!["blue".into()];
    let mut admin_bound = service_user("bad-2", &["h1"]);
    admin_bound.roles.push("admin".into());
    for (u, problem) in
        [(bad, "hosts"), (admin_bound, "hosts"), (service_user("bad-3", &["not a host"]), "not a host")]
    {
        let (status, body) = call(&d.url, &admin_t, &Method::POST, "/auth/users", Some(&json!(u))).await;
        assert_eq!(status, 422, "{body}");
        assert!(body.contains(problem), "{body}");
    }

    let before = snapshot(&d.url, &admin_t).await;
    use Method as M;
    let c = |m: M, path: &str, body: Option<Value>, status: u16| (m, path.to_owned(), body, status);
    let mut h2_relabelled = endpoint(&h2_a);
    h2_relabelled.labels = [("app".to_owned(), "web".to_owned())].into();
    let mut h2_claimed = endpoint(&h2_a);
    h2_claimed.host = "h1".into();
    let mut h1_other_segment = endpoint(&h1_a);
    h1_other_segment.segment = "web".into();
    let refused = vec![
        // Another host's liveness, tags, registration and removal.
        c(M::PUT, "/hosts/h2/alive", None, 403),
        c(M::PUT, "/hosts/h2/tags", Some(json!({"tags": {"evil": "1"}})), 403),
        c(M::DELETE, "/hosts/h2", None, 403),
        c(M::POST, "/hosts", Some(json!(host("h2", "198.51.100.66"))), 403),
        c(M::POST, "/hosts", Some(json!(host("h3", "198.51.100.67"))), 403),
        // Addresses on another host: neither allocated nor released.
        c(M::POST, "/addresses", Some(json!(addr("x1", "h2", "db"))), 403),
        c(M::POST, "/address", Some(json!(addr("x2", "h2", "db"))), 403),
        c(M::DELETE, "/addresses/h2-a", None, 403),
        c(M::DELETE, &format!("/addresses/{}", h2_a.ip), None, 403),
        c(M::DELETE, "/address?addressName=h2-a", None, 403),
        // Another host's endpoint records: no write, relabel or delete, nor a claim of it as h1's.
        c(M::PUT, "/endpoints/h2-a", Some(json!(h2_relabelled)), 403),
        c(M::PUT, "/endpoints/h2-a", Some(json!(h2_claimed)), 409),
        c(M::PUT, "/endpoints/h2-a/labels", Some(json!({"labels": {"app": "web"}})), 403),
        c(M::DELETE, "/endpoints/h2-a", None, 403),
        // Its own endpoint in a segment IPAM did not give it.
        c(M::PUT, "/endpoints/h1-a", Some(json!(h1_other_segment)), 409),
        // Tenants and segments.
        c(M::POST, "/tenants", Some(json!({"name": "evil"})), 403),
        c(M::PUT, "/tenants/blue", Some(json!({"name": "blue", "isolation": "none"})), 403),
        c(M::DELETE, "/tenants/blue", None, 403),
        c(M::POST, "/tenants/blue/segments", Some(json!({"name": "evil"})), 403),
        c(M::DELETE, "/tenants/blue/segments/web", None, 403),
        // Policies and NetworkPolicies.
        c(M::POST, "/policies", Some(allow_all("evil")), 403),
        c(M::PUT, "/policies/blue-pol", Some(allow_all("blue-pol")), 403),
        c(M::DELETE, "/policies/blue-pol", None, 403),
        c(M::DELETE, "/policies", Some(json!({"id": "blue-pol"})), 403),
        c(M::POST, "/networkpolicies", Some(netpol("blue", "evil")), 403),
        c(M::DELETE, "/networkpolicies/blue/blue-np", None, 403),
        // Admin routes stay the admin's.
        c(M::POST, "/blackouts", Some(json!({"cidr": "10.121.0.0/24"})), 403),
        c(M::POST, "/topology", Some(json!(topo)), 403),
        c(M::POST, "/auth/users", Some(json!(service_user("evil", &[]))), 403),
    ];
    let mut failures = run(&d.url, &agent, "agent-h1", &refused).await;
    let after = snapshot(&d.url, &admin_t).await;
    for ((path, b), (_, a)) in before.iter().zip(&after) {
        if a != b {
            failures.push(format!("GET {path} changed:\n before {b}\n after  {a}"));
        }
    }

    // What agents read today, every host's included.
    let reads: Vec<_> = [
        "/hosts",
        "/hosts/h2",
        "/routes/h1",
        "/routes/h2",
        "/addresses",
        "/addresses/h2-a",
        "/endpoints",
        "/endpoints/h2-a",
        "/policies",
        "/networkpolicies",
        "/tenants",
        "/tenants/blue",
        "/liveness",
        "/blocks",
        "/topology",
    ]
    .iter()
    .map(|p| c(M::GET, p, None, 200))
    .collect();
    failures.extend(run(&d.url, &agent, "agent-h1", &reads).await);

    // The same writes against its own host succeed.
    let h1_b = json!(addr("h1-b", "h1", "db"));
    let own = vec![
        c(M::POST, "/hosts", Some(json!(host("h1", "192.0.2.1"))), 200),
        c(M::PUT, "/hosts/h1/alive", None, 200),
        c(M::PUT, "/hosts/h1/tags", Some(json!({"tags": {"rack": "1"}})), 200),
        c(M::POST, "/addresses", Some(h1_b), 201),
        c(M::POST, "/address", Some(json!(addr("h1-c", "h1", "web"))), 200),
        c(M::PUT, "/endpoints/h1-a", Some(json!(endpoint(&h1_a))), 200),
        c(M::PUT, "/endpoints/h1-a/labels", Some(json!({"labels": {"app": "web"}})), 200),
        c(M::DELETE, "/endpoints/h1-a", None, 204),
        c(M::DELETE, "/addresses/h1-b", None, 200),
        c(M::DELETE, "/address?addressName=h1-c", None, 200),
        c(M::DELETE, "/hosts/h1", None, 200),
    ];
    failures.extend(run(&d.url, &agent, "agent-h1", &own).await);
    let (_, hosts) = call(&d.url, &admin_t, &M::GET, "/hosts", None).await;
    let names: Vec<Value> = serde_json::from_str::<Value>(&hosts).unwrap()["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].clone())
        .collect();
    if names != vec![json!("h2")] {
        failures.push(format!("agent-h1 must have removed its own host, and only it: {hosts}"));
    }

    // An unbound service user is a controller: it keeps every service right.
    let controller = login(&d.url, "controller").await;
    let controller_cases = vec![
        c(M::PUT, "/hosts/h2/tags", Some(json!({"tags": {"rack": "2"}})), 200),
        c(M::PUT, "/endpoints/h2-a/labels", Some(json!({"labels": {"app": "web"}})), 200),
        c(M::POST, "/policies", Some(allow_all("controller-pol")), 201),
        c(M::PUT, "/tenants/blue", Some(json!({"name": "blue", "isolation": "segment"})), 200),
    ];
    failures.extend(run(&d.url, &controller, "controller", &controller_cases).await);

    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
