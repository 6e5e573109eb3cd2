//! Tenancy from the attacker's side, black box (a romanad process with authentication on, real
//! HTTP): two tenants, red and blue, with objects of every kind; red's user walks every
//! tenant-scoped route (and the service-only and public ones) and must see and change only red's
//! objects, with the exact statuses, and no body may mention blue's objects unless red's own
//! request named them. Reads of blue's objects answer exactly what a name that does not exist
//! answers.
#![allow(clippy::unwrap_used)]

mod common;

use reqwest::Method;
use romana_api::rest::{AddressRequest, HostRequest, SegmentRequest, TenantRequest, UserRequest};
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

fn tenant(name: &str, external_id: &str) -> TenantRequest {
    TenantRequest {
        name: name.into(),
        external_id: external_id.into(),
        labels: Default::default(),
        isolation: Default::default(),
    }
}

fn addr(name: &str, tenant: &str, segment: &str, ip: Option<&str>) -> AddressRequest {
    AddressRequest {
        name: name.into(),
        host: "h1".into(),
        tenant: tenant.into(),
        segment: segment.into(),
        ip: ip.map(str::to_owned),
    }
}

fn policy(id: &str, target: Value) -> Value {
    json!({"id": id, "applied_to": [target], "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "any"}]}]})
}

fn netpol(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"podSelector": {}, "ingress": [{}]}})
}

fn user(name: &str, tenants: &[&str]) -> UserRequest {
    UserRequest {
        name: name.into(),
        password: format!("{name}-password-123"),
        roles: vec!["tenant".into()],
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        hosts: vec![],
    }
}

async fn login(url: &str, name: &str) -> String {
    let c = Client::new(vec![url.to_owned()]);
    c.login(name, &format!("{name}-password-123")).await.unwrap();
    c.token().unwrap()
}

/// One request of red's user and what it must answer.
struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    status: u16,
}

fn case(method: Method, path: &str, body: Option<Value>, status: u16) -> Case {
    Case { method, path: path.to_owned(), body, status }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_and_changes_only_its_own_objects() {
    let dir = TempDir::new("tenancy");
    let d = common::embedded(&dir, &[]);
    let admin = common::admin(&dir).await;
    let admin_t = admin.token().unwrap();

    // Two networks: one any tenant may use, one only blue may.
    let topo: romana_api::topology::TopologyRequest = serde_json::from_value(json!({
        "networks": [{"name": "shared", "cidr": "10.111.0.0/16", "block_mask": 29},
                     {"name": "bluenet", "cidr": "10.112.0.0/16", "block_mask": 29, "tenants": ["blue"]}],
        "topologies": [{"networks": ["shared", "bluenet"], "map": [{"groups": []}]}]
    }))
    .unwrap();
    admin.apply_topology(&topo).await.unwrap();
    admin
        .add_host(&HostRequest {
            name: "h1".into(),
            ip: "192.0.2.1".into(),
            ipv6: None,
            agent_port: None,
            tags: Default::default(),
            k8s_info: None,
        })
        .await
        .unwrap();
    admin.create_tenant(&tenant("red", "ext-red")).await.unwrap();
    admin.create_tenant(&tenant("blue", "ext-blue")).await.unwrap();
    let seg =
        |n: &str| SegmentRequest { name: n.into(), external_id: String::new(), labels: Default::default() };
    admin.add_segment("red", &seg("web")).await.unwrap();
    admin.add_segment("blue", &seg("blue-db")).await.unwrap();
    // red-a1 and blue-a1 share the network any tenant may use (blue's at an address of its
    // choosing, in a block of its own); blue-b1 is in blue's own network.
    let red_a = admin.allocate(&addr("red-a1", "red", "web", None), None).await.unwrap();
    let blue_a =
        admin.allocate(&addr("blue-a1", "blue", "blue-db", Some("10.111.0.20")), None).await.unwrap();
    let blue_b = admin.allocate(&addr("blue-b1", "blue", "blue-db", None), None).await.unwrap();
    assert!(blue_b.ip.starts_with("10.112."), "{blue_b:?}");
    // A free address in blue's block (10.111.0.16/29).
    let blue_free = "10.111.0.21".to_owned();
    for (name, a) in [("red-a1", &red_a), ("blue-a1", &blue_a)] {
        admin
            .put_endpoint(&romana_api::rest::EndpointInfo {
                name: name.into(),
                ip: a.ip.clone(),
                tenant: a.tenant.clone(),
                segment: a.segment.clone(),
                host: "h1".into(),
                labels: Default::default(),
                ports: vec![],
                pod: String::new(),
            })
            .await
            .unwrap();
    }
    admin.add_policy(&policy("red-pol", json!({"tenant": "red"}))).await.unwrap();
    let blue_pol = admin.add_policy(&policy("blue-pol", json!({"tenant": "blue"}))).await.unwrap();
    admin.add_policy(&policy("blue-cidr", json!({"cidr": "10.112.0.0/16"}))).await.unwrap();
    admin.apply_netpol(&netpol("red", "red-np")).await.unwrap();
    admin.apply_netpol(&netpol("blue", "blue-np")).await.unwrap();
    admin.create_user(&user("alice", &["red"])).await.unwrap();
    // An account whose tenant list holds blue's external id by mistake: names, not ids, scope.
    admin.create_user(&user("carol", &["ext-blue"])).await.unwrap();
    let red = login(&d.url, "alice").await;

    // Everything that names blue's objects: no answer to red may contain these, unless red's
    // own request did.
    let blue_marks = ["blue", &blue_a.ip, &blue_b.ip, &blue_free, "10.112."];
    use Method as M;
    let red_pol2 = policy("red-pol2", json!({"tenant": "red", "segment": "web"}));
    let cases = vec![
        // Tenants and segments (TenantFiltered, TenantPath).
        case(M::GET, "/tenants", None, 200),
        case(M::GET, "/tenants/red", None, 200),
        case(M::GET, "/tenants/ext-red", None, 403),
        case(M::GET, "/tenants/blue", None, 403),
        case(M::GET, "/tenants/ext-blue", None, 403),
        case(M::GET, "/tenants/red/segments", None, 200),
        case(M::GET, "/tenants/blue/segments", None, 403),
        case(M::POST, "/tenants/red/segments", Some(json!({"name": "web2"})), 201),
        case(M::POST, "/tenants/blue/segments", Some(json!({"name": "x"})), 403),
        case(M::GET, "/tenants/red/segments/web", None, 200),
        case(M::GET, "/tenants/blue/segments/blue-db", None, 403),
        case(M::DELETE, "/tenants/red/segments/web2", None, 204),
        case(M::DELETE, "/tenants/blue/segments/blue-db", None, 403),
        // Tenants are the service's to create, change and delete.
        case(M::POST, "/tenants", Some(json!({"name": "red2"})), 403),
        case(M::PUT, "/tenants/red", Some(json!({"name": "red"})), 403),
        case(M::DELETE, "/tenants/blue", None, 403),
        // Networks (Read): only those red may use, and no other tenant's name.
        case(M::GET, "/networks", None, 200),
        // Addresses (TenantBody, TenantFiltered).
        case(M::GET, "/addresses", None, 200),
        case(M::GET, "/addresses?tenant=blue", None, 200),
        case(M::GET, "/addresses?host=h1", None, 200),
        case(M::GET, "/addresses/red-a1", None, 200),
        case(M::GET, &format!("/addresses/{}", red_a.ip), None, 200),
        case(M::GET, "/addresses/blue-a1", None, 404),
        case(M::GET, &format!("/addresses/{}", blue_a.ip), None, 404),
        case(M::DELETE, "/addresses/blue-a1", None, 404),
        case(M::DELETE, &format!("/addresses/{}", blue_b.ip), None, 404),
        case(M::DELETE, "/address?addressName=blue-a1", None, 404),
        case(M::POST, "/addresses", Some(json!(addr("red-a2", "red", "web", None))), 201),
        case(M::POST, "/address", Some(json!(addr("red-a3", "red", "web", None))), 200),
        case(M::POST, "/addresses", Some(json!(addr("x1", "blue", "blue-db", None))), 403),
        case(M::POST, "/address", Some(json!(addr("x2", "blue", "blue-db", None))), 403),
        // Conflicts with blue's name, address and block name none of blue's objects.
        case(M::POST, "/addresses", Some(json!(addr("blue-a1", "red", "web", None))), 409),
        case(M::POST, "/addresses", Some(json!(addr("red-x", "red", "web", Some(&blue_a.ip)))), 409),
        case(M::POST, "/addresses", Some(json!(addr("red-y", "red", "web", Some(&blue_free)))), 409),
        case(M::DELETE, "/addresses/red-a2", None, 200),
        // Romana policies (TenantBody, TenantFiltered).
        case(M::GET, "/policies", None, 200),
        case(M::GET, "/policies/red-pol", None, 200),
        case(M::GET, "/policies/blue-pol", None, 404),
        case(M::GET, "/policies/blue-cidr", None, 404),
        case(M::POST, "/policies", Some(policy("evil", json!({"tenant": "blue"}))), 403),
        case(M::POST, "/policies", Some(policy("evil", json!({"cidr": "0.0.0.0/0"}))), 403),
        case(M::POST, "/policies", Some(policy("evil", json!({"dest": "local"}))), 403),
        case(M::PUT, "/policies/evil", Some(policy("evil", json!({"tenant": "blue"}))), 403),
        case(M::PUT, "/policies/evil", Some(policy("evil", json!({"cidr": "0.0.0.0/0"}))), 403),
        case(M::PUT, "/policies/evil", Some(policy("evil", json!({"dest": "local"}))), 403),
        case(M::PUT, "/policies/evil", Some(policy("evil", json!({"dest": "host"}))), 403),
        case(M::POST, "/policies", Some(policy("blue-pol", json!({"tenant": "red"}))), 409),
        case(M::PUT, "/policies/blue-pol", Some(policy("blue-pol", json!({"tenant": "red"}))), 403),
        case(M::PUT, "/policies/blue-cidr", Some(policy("blue-cidr", json!({"tenant": "red"}))), 403),
        case(M::PUT, "/policies/red-pol2", Some(red_pol2.clone()), 200),
        case(M::PUT, "/policies/red-pol2", Some(red_pol2), 200),
        case(M::DELETE, "/policies/blue-pol", None, 404),
        case(M::DELETE, "/policies", Some(json!({"id": "blue-pol"})), 404),
        case(M::DELETE, "/policies/red-pol2", None, 200),
        // Kubernetes NetworkPolicies (TenantBody, TenantFiltered, TenantPath).
        case(M::GET, "/networkpolicies", None, 200),
        case(M::GET, "/networkpolicies/red/red-np", None, 200),
        case(M::GET, "/networkpolicies/blue/blue-np", None, 403),
        case(M::DELETE, "/networkpolicies/blue/blue-np", None, 403),
        case(M::POST, "/networkpolicies", Some(netpol("blue", "blue-np")), 403),
        case(M::POST, "/networkpolicies", Some(netpol("red", "red-np2")), 201),
        case(M::DELETE, "/networkpolicies/red/red-np2", None, 200),
        // Service-only routes: endpoints, hosts, blocks, topology, the watch.
        case(M::GET, "/endpoints", None, 403),
        case(M::GET, "/endpoints/red-a1", None, 403),
        case(M::GET, "/endpoints/blue-a1", None, 403),
        case(M::DELETE, "/endpoints/blue-a1", None, 403),
        case(M::PUT, "/endpoints/blue-a1/labels", Some(json!({"labels": {}})), 403),
        case(M::GET, "/blocks", None, 403),
        case(M::GET, "/networks/bluenet/blocks", None, 403),
        case(M::GET, "/hosts", None, 403),
        case(M::GET, "/topology", None, 403),
        case(M::GET, "/watch", None, 403),
        case(M::GET, "/liveness", None, 403),
        case(M::GET, "/fabric", None, 403),
        case(M::GET, "/routes/h1", None, 403),
        case(M::GET, "/auth/users", None, 403),
        // Public and any-role routes.
        case(M::GET, "/", None, 200),
        case(M::GET, "/auth/whoami", None, 200),
        case(M::GET, "/metrics", None, 200),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let (status, body) = call(&d.url, &red, &c.method, &c.path, c.body.as_ref()).await;
        let asked = format!("{} {}", c.path, c.body.as_ref().map(Value::to_string).unwrap_or_default());
        if status != c.status {
            failures.push(format!("{} {} answered {status}, not {}: {body}", c.method, asked, c.status));
        }
        for mark in blue_marks {
            if body.contains(mark) && !asked.contains(mark) {
                failures.push(format!("{} {} answered {status} naming {mark:?}: {body}", c.method, asked));
            }
        }
        if status >= 400 {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if v["message"].as_str().is_none_or(str::is_empty) || v["status_code"] != json!(status) {
                failures.push(format!("{} {asked}: {status} without the JSON error body: {body}", c.method));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Lists hold exactly red's objects.
    let names = |path: &'static str, field: &'static str| {
        let (url, red) = (d.url.clone(), red.clone());
        async move {
            let (_, body) = call(&url, &red, &Method::GET, path, None).await;
            let v: Vec<Value> = serde_json::from_str(&body).unwrap();
            v.iter().map(|x| x.pointer(field).and_then(Value::as_str).unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    assert_eq!(names("/tenants", "/name").await, ["red"]);
    assert_eq!(names("/addresses", "/name").await, ["red-a1", "red-a3"]);
    assert_eq!(names("/policies", "/id").await, ["red-pol"]);
    assert_eq!(names("/networkpolicies", "/metadata/name").await, ["red-np"]);
    assert_eq!(names("/networks", "/name").await, ["shared"]);

    // Reads of blue's objects answer what a name that does not exist answers.
    for (blue, none) in [
        ("/addresses/blue-a1", "/addresses/nonesuch"),
        (&format!("/addresses/{}", blue_a.ip), "/addresses/10.111.255.254"),
        ("/policies/blue-pol", "/policies/nonesuch"),
        ("/policies/blue-cidr", "/policies/nonesuch"),
        ("/tenants/blue", "/tenants/nonesuch"),
        ("/tenants/blue/segments/blue-db", "/tenants/nonesuch/segments/x"),
        ("/networkpolicies/blue/blue-np", "/networkpolicies/nonesuch/x"),
    ] {
        let key = |p: &str| p.rsplit('/').next().unwrap().to_owned();
        let (s1, b1) = call(&d.url, &red, &Method::GET, blue, None).await;
        let (s2, b2) = call(&d.url, &red, &Method::GET, none, None).await;
        assert_eq!((s1, b1.replace(&key(blue), "K")), (s2, b2.replace(&key(none), "K")), "{blue} vs {none}");
    }

    // A tenant list that names blue's external id reaches nothing of blue's.
    let carol = login(&d.url, "carol").await;
    let (status, body) = call(&d.url, &carol, &Method::GET, "/tenants/ext-blue", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(&d.url, &carol, &Method::GET, "/tenants/ext-blue/segments", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) =
        call(&d.url, &carol, &Method::POST, "/tenants/ext-blue/segments", Some(&json!({"name": "c"}))).await;
    assert_eq!(status, 404);

    // Blue's objects are as the admin left them.
    assert_eq!(admin.policy("blue-pol").await.unwrap(), blue_pol);
    assert!(admin.policy("evil").await.is_err(), "no policy evil was written");
    assert_eq!(admin.address("blue-a1").await.unwrap().ip, blue_a.ip);
    assert_eq!(admin.address("blue-b1").await.unwrap().ip, blue_b.ip);
    assert_eq!(admin.segments("blue").await.unwrap().len(), 1);
    let (status, _) = call(&d.url, &admin_t, &Method::GET, "/networkpolicies/blue/blue-np", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&d.url, &admin_t, &Method::GET, "/endpoints/blue-a1", None).await;
    assert_eq!(status, 200);
}
