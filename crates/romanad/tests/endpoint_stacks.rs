//! `PUT /endpoint-stacks/{name}` (a dual-stack endpoint's two records in one transaction), black
//! box against a romanad process with authentication on, over real HTTP: agent-h1, a service
//! user bound to host h1, registers its own dual-stack endpoint's `<name>` and `<name>#v6` in
//! one call; from the attacker's side, every stack that another host's agent could not write
//! record by record (another host's records, a claim of them as its own, an address IPAM did not
//! give, a mixed stack of its own and another host's record, names outside the stack) is refused
//! with the exact status and writes neither record (read back as admin). A stack for a pod takes
//! the pod record's labels for both records, and a later change of the record reaches both.
#![allow(clippy::unwrap_used)]

mod common;

use reqwest::Method;
use romana_api::rest::UserRequest;
use romana_api::rest::{
    Address, AddressRequest, EndpointInfo, HostRequest, PodInfo, SegmentRequest, TenantRequest,
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

fn addr(name: &str, host: &str) -> AddressRequest {
    AddressRequest {
        name: name.into(),
        host: host.into(),
        tenant: "blue".into(),
        segment: "db".into(),
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

/// The record an agent registers for `a` (labels app=db).
fn record(a: &Address) -> EndpointInfo {
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

fn stack(records: &[EndpointInfo]) -> Value {
    json!(records)
}

async fn login(url: &str, name: &str) -> String {
    let c = Client::new(vec![url.to_owned()]);
    c.login(name, &format!("{name}-password-123")).await.unwrap();
    c.token().unwrap()
}

/// Every endpoint record, as the admin reads them.
async fn records(url: &str, admin: &str) -> Value {
    let (status, body) = call(url, admin, &Method::GET, "/endpoints", None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_both_records_of_its_own_endpoints_at_once_and_nothing_else() {
    let dir = TempDir::new("endpoint-stacks");
    let d = common::embedded(&dir, &[]);
    let admin = common::admin(&dir).await;
    let admin_t = admin.token().unwrap();
    let topo: romana_api::topology::TopologyRequest = serde_json::from_value(json!({
        "networks": [{"name": "net4", "cidr": "10.121.0.0/16", "block_mask": 29},
                     {"name": "net6", "cidr": "fd00:121::/112", "block_mask": 125}],
        "topologies": [{"networks": ["net4", "net6"], "map": [{"groups": []}]}]
    }))
    .unwrap();
    admin.apply_topology(&topo).await.unwrap();
    admin.add_host(&host("h1", "192.0.2.1")).await.unwrap();
    admin.add_host(&host("h2", "192.0.2.2")).await.unwrap();
    let tenant = TenantRequest {
        name: "blue".into(),
        external_id: String::new(),
        labels: Default::default(),
        isolation: Default::default(),
    };
    admin.create_tenant(&tenant).await.unwrap();
    let seg = SegmentRequest { name: "db".into(), external_id: String::new(), labels: Default::default() };
    admin.add_segment("blue", &seg).await.unwrap();
    let user = UserRequest {
        name: "agent-h1".into(),
        password: "agent-h1-password-123".into(),
        roles: vec!["service".into()],
        tenants: vec![],
        hosts: vec!["h1".into()],
    };
    admin.create_user(&user).await.unwrap();
    let agent = login(&d.url, "agent-h1").await;

    // Dual-stack addresses: two on h1, one on h2 (each a `<name>` and a `<name>#v6`).
    let h1_a = admin.allocate_stack(&addr("h1-a", "h1")).await.unwrap();
    let h1_b = admin.allocate_stack(&addr("h1-b", "h1")).await.unwrap();
    let h2_a = admin.allocate_stack(&addr("h2-a", "h2")).await.unwrap();
    for s in [&h1_a, &h1_b, &h2_a] {
        assert_eq!(s.len(), 2, "one address per family: {s:?}");
    }
    let (r4, r6) = (record(&h1_a[0]), record(&h1_a[1]));
    let mut wrong_ip = record(&h1_b[1]);
    wrong_ip.ip = h1_a[1].ip.clone();
    let mut h2_claimed: Vec<EndpointInfo> = h2_a.iter().map(record).collect();
    for r in &mut h2_claimed {
        r.host = "h1".into();
    }
    let mut bad_label = record(&h1_b[1]);
    bad_label.labels = [("app".to_owned(), "has space".to_owned())].into();
    let mut other_host = record(&h1_b[1]);
    other_host.host = "h2".into();
    let mut three = vec![record(&h1_b[0]), record(&h1_b[1])];
    three.push(record(&h1_b[1]));
    // (what, path, body, status): each refused, nothing written.
    let refused: Vec<(&str, &str, Value, u16)> = vec![
        (
            "another host's records",
            "/endpoint-stacks/h2-a",
            stack(&h2_a.iter().map(record).collect::<Vec<_>>()),
            403,
        ),
        ("another host's records claimed as its own", "/endpoint-stacks/h2-a", stack(&h2_claimed), 409),
        (
            "its own and another host's record",
            "/endpoint-stacks/h1-b",
            stack(&[record(&h1_b[0]), record(&h2_a[1])]),
            422,
        ),
        (
            "its own record and one for another host",
            "/endpoint-stacks/h1-b",
            stack(&[record(&h1_b[0]), other_host]),
            403,
        ),
        (
            "an IPv6 address IPAM gave another name",
            "/endpoint-stacks/h1-b",
            stack(&[record(&h1_b[0]), wrong_ip]),
            409,
        ),
        ("an invalid second record", "/endpoint-stacks/h1-b", stack(&[record(&h1_b[0]), bad_label]), 422),
        (
            "records of another endpoint than the path's",
            "/endpoint-stacks/h1-b",
            stack(&[r4.clone(), r6.clone()]),
            422,
        ),
        ("the same record twice", "/endpoint-stacks/h1-b", stack(&[record(&h1_b[0]), record(&h1_b[0])]), 422),
        ("three records", "/endpoint-stacks/h1-b", stack(&three), 422),
        ("no record", "/endpoint-stacks/h1-b", json!([]), 422),
        ("one record, not a list", "/endpoint-stacks/h1-b", json!(record(&h1_b[0])), 400),
    ];
    let before = records(&d.url, &admin_t).await;
    let mut failures = Vec::new();
    for (what, path, body, want) in &refused {
        let (status, text) = call(&d.url, &agent, &Method::PUT, path, Some(body)).await;
        if status != *want {
            failures.push(format!("{what}: PUT {path} answered {status}, not {want}: {text}"));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if v["message"].as_str().is_none_or(str::is_empty) || v["status_code"] != json!(status) {
            failures.push(format!("{what}: {status} without the JSON error body: {text}"));
        }
        let after = records(&d.url, &admin_t).await;
        if after != before {
            failures.push(format!("{what}: the records changed:\n before {before}\n after  {after}"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));

    // Its own endpoint's two records: written, in the answer and in the registry, IPv6 in its
    // one spelling.
    let mut spelled = r6.clone();
    let segments = r6.ip.parse::<std::net::Ipv6Addr>().unwrap().segments();
    spelled.ip = segments.iter().map(|s| format!("{s:04x}")).collect::<Vec<_>>().join(":");
    assert_ne!(spelled.ip, r6.ip);
    let (status, text) =
        call(&d.url, &agent, &Method::PUT, "/endpoint-stacks/h1-a", Some(&stack(&[r4.clone(), spelled])))
            .await;
    assert_eq!(status, 200, "{text}");
    let answered: Vec<EndpointInfo> = serde_json::from_str(&text).unwrap();
    assert_eq!(answered, [r4.clone(), r6.clone()]);
    for r in [&r4, &r6] {
        assert_eq!(&admin.endpoint(&r.name).await.unwrap(), r);
    }
    // Again (a retried ADD) is the same; an IPv4-only stack of one record is fine too.
    let (status, text) =
        call(&d.url, &agent, &Method::PUT, "/endpoint-stacks/h1-a", Some(&stack(&[r4.clone(), r6.clone()])))
            .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) =
        call(&d.url, &agent, &Method::PUT, "/endpoint-stacks/h1-b", Some(&stack(&[record(&h1_b[0])]))).await;
    assert_eq!(status, 200, "{text}");

    // A pod's stack: both records take the pod record's labels, and its change reaches both.
    let pod = PodInfo {
        namespace: "blue".into(),
        name: "db-0".into(),
        uid: "u1".into(),
        host: "h1".into(),
        labels: [("app".to_owned(), "from-pod".to_owned())].into(),
        ports: vec![],
        segment: "db".into(),
    };
    admin.put_pod(&pod).await.unwrap();
    let h1_c = admin.allocate_stack(&addr("h1-c", "h1")).await.unwrap();
    let pod_records: Vec<EndpointInfo> = h1_c
        .iter()
        .map(|a| EndpointInfo { pod: "blue/db-0".into(), labels: Default::default(), ..record(a) })
        .collect();
    let (status, text) =
        call(&d.url, &agent, &Method::PUT, "/endpoint-stacks/h1-c", Some(&stack(&pod_records))).await;
    assert_eq!(status, 200, "{text}");
    let relabelled = PodInfo { labels: [("app".to_owned(), "changed".to_owned())].into(), ..pod };
    admin.put_pod(&relabelled).await.unwrap();
    for a in &h1_c {
        let e = admin.endpoint(&a.name).await.unwrap();
        assert_eq!(e.labels, relabelled.labels, "{}: the pod record's change reached it", a.name);
    }
}
