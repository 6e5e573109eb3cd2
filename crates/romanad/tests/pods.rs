//! Pod records and the endpoint <-> pod join, black box (a romanad process with authentication
//! on, real HTTP), from the attacker's side: an agent cannot write pod records nor read another
//! host's, a tenant user sees only its namespaces, bad input is 422 naming the field, and nothing
//! changes on a refusal (read back as admin). Then the join: an endpoint registered for a pod
//! takes the record's labels and ports, a record change reaches the endpoint in the same
//! transaction, and under concurrent record writes and registrations none is missed.
#![allow(clippy::unwrap_used)]

mod common;

use reqwest::Method;
use romana_api::rest::{AddressRequest, EndpointInfo, EndpointPort, HostRequest, PodInfo, UserRequest};
use romana_client::Client;
use romana_test_support::TempDir;
use serde_json::{Value, json};

async fn call(url: &str, token: &str, method: &Method, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut req = romana_client::http().request(method.clone(), format!("{url}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = match tokio::time::timeout(std::time::Duration::from_secs(10), req.send()).await {
        Ok(r) => r.unwrap_or_else(|e| panic!("{method} {path}: {e}")),
        Err(_) => panic!("{method} {path}: no answer in 10 s"),
    };
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn pod(ns: &str, name: &str, host: &str, app: &str) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{ns}-{name}"),
        host: host.into(),
        labels: [("app".to_owned(), app.to_owned())].into(),
        ports: vec![EndpointPort { name: "http".into(), protocol: "TCP".into(), port: 8080 }],
        segment: String::new(),
    }
}

fn user(name: &str, role: &str, tenants: &[&str], hosts: &[&str]) -> UserRequest {
    UserRequest {
        name: name.into(),
        password: format!("{name}-password-123"),
        roles: vec![role.into()],
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
    }
}

async fn login(url: &str, name: &str) -> (Client, String) {
    let c = Client::new(vec![url.to_owned()]);
    c.login(name, &format!("{name}-password-123")).await.unwrap();
    let t = c.token().unwrap();
    (c, t)
}

/// The pod names in a `GET /pods` answer, as `namespace/name`, sorted.
fn names(body: &str) -> Vec<String> {
    let pods: Vec<PodInfo> = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let mut out: Vec<String> = pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
    out.sort();
    out
}

/// One case: method, path, body, expected status, and a text the answer must contain.
type Case = (Method, String, Option<Value>, u16, &'static str);

async fn run(url: &str, token: &str, who: &str, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for (method, path, body, expect, needle) in cases {
        let (status, text) = call(url, token, method, path, body.as_ref()).await;
        if status != *expect || !text.contains(needle) {
            failures.push(format!(
                "{who}: {method} {path} answered {status} {text}, not {expect} with {needle:?}"
            ));
        }
    }
    failures
}

struct Setup {
    _dir: TempDir,
    _d: romana_test_support::Romanad,
    url: String,
    admin: Client,
    admin_t: String,
}

async fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let d = common::embedded(&dir, &[]);
    let admin = common::admin(&dir).await;
    let topo: romana_api::topology::TopologyRequest = serde_json::from_value(json!({
        "networks": [{"name": "net", "cidr": "10.122.0.0/16", "block_mask": 29}],
        "topologies": [{"networks": ["net"], "map": [{"groups": []}]}]
    }))
    .unwrap();
    admin.apply_topology(&topo).await.unwrap();
    for (h, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
        let req = HostRequest {
            name: h.into(),
            ip: ip.into(),
            ipv6: None,
            agent_port: None,
            tags: Default::default(),
            k8s_info: None,
        };
        admin.add_host(&req).await.unwrap();
    }
    for t in ["red", "blue"] {
        let req = romana_api::rest::TenantRequest {
            name: t.into(),
            external_id: String::new(),
            labels: Default::default(),
            isolation: Default::default(),
        };
        admin.create_tenant(&req).await.unwrap();
    }
    admin.create_user(&user("agent-h1", "service", &[], &["h1"])).await.unwrap();
    admin.create_user(&user("controller", "service", &[], &[])).await.unwrap();
    admin.create_user(&user("alice", "tenant", &["red"], &[])).await.unwrap();
    let admin_t = admin.token().unwrap();
    Setup { url: d.url.clone(), _dir: dir, _d: d, admin, admin_t }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_records_are_written_by_controllers_and_read_by_scope() {
    let s = setup("pods-scope").await;
    let (_, controller) = login(&s.url, "controller").await;
    let (_, agent) = login(&s.url, "agent-h1").await;
    let (_, alice) = login(&s.url, "alice").await;
    use Method as M;
    let c = |m: M, path: &str, body: Option<Value>, status: u16, needle: &'static str| -> Case {
        (m, path.to_owned(), body, status, needle)
    };
    let web = pod("red", "web-0", "h1", "web");
    let mut failures = run(
        &s.url,
        &controller,
        "controller",
        &[
            c(M::PUT, "/pods/red/web-0", Some(json!(web)), 201, "web-0"),
            c(M::PUT, "/pods/red/web-0", Some(json!(web)), 200, "web-0"),
            c(M::PUT, "/pods/red/db-0", Some(json!(pod("red", "db-0", "h2", "db"))), 201, ""),
            c(M::PUT, "/pods/blue/api-0", Some(json!(pod("blue", "api-0", "h1", "api"))), 201, ""),
            // Empty namespace and name are the path's.
            c(
                M::PUT,
                "/pods/blue/lone",
                Some(json!({"namespace": "", "name": "", "host": "h2"})),
                201,
                "\"namespace\":\"blue\"",
            ),
        ],
    )
    .await;
    let (_, before) = call(&s.url, &s.admin_t, &M::GET, "/pods", None).await;
    assert_eq!(names(&before), ["blue/api-0", "blue/lone", "red/db-0", "red/web-0"]);

    let mut bad_ns = pod("Red", "x", "h1", "a");
    bad_ns.namespace = "Red".into();
    let mut bad_labels = pod("red", "x", "h1", "a b");
    bad_labels.labels.insert(String::new(), "v".into());
    let mut bad_port = pod("red", "x", "h1", "a");
    bad_port.ports[0].protocol = "ICMP".into();
    let refused = [
        // An agent writes no pod record, its own host's neither.
        (
            "agent-h1",
            &agent,
            c(M::PUT, "/pods/red/web-0", Some(json!(pod("red", "web-0", "h1", "evil"))), 403, "may not"),
        ),
        (
            "agent-h1",
            &agent,
            c(M::PUT, "/pods/red/new", Some(json!(pod("red", "new", "h1", "evil"))), 403, "may not"),
        ),
        ("agent-h1", &agent, c(M::DELETE, "/pods/red/web-0", None, 403, "may not")),
        // It reads no other host's pod: as if absent.
        ("agent-h1", &agent, c(M::GET, "/pods/red/db-0", None, 404, "unknown pod red/db-0")),
        // A tenant user writes none and reads no other namespace's.
        ("alice", &alice, c(M::PUT, "/pods/red/web-0", Some(json!(web)), 403, "")),
        ("alice", &alice, c(M::DELETE, "/pods/red/web-0", None, 403, "")),
        ("alice", &alice, c(M::GET, "/pods/blue/api-0", None, 403, "")),
        // Bad input: 422 naming the field.
        ("admin", &s.admin_t, c(M::PUT, "/pods/Red/x", Some(json!(bad_ns)), 422, "namespace:")),
        (
            "admin",
            &s.admin_t,
            c(M::PUT, "/pods/red/y", Some(json!(pod("red", "x", "h1", "a"))), 422, "does not match the path"),
        ),
        ("admin", &s.admin_t, c(M::PUT, "/pods/red/x", Some(json!(bad_labels)), 422, "labels")),
        ("admin", &s.admin_t, c(M::PUT, "/pods/red/x", Some(json!(bad_port)), 422, "ports[0].protocol")),
        (
            "admin",
            &s.admin_t,
            c(M::PUT, "/pods/red/x", Some(json!({"name": "x", "colour": 1})), 400, "colour"),
        ),
        (
            "admin",
            &s.admin_t,
            c(M::PUT, "/pods/red/x-", Some(json!({"namespace": "", "name": ""})), 422, "name:"),
        ),
    ];
    for (who, token, case) in refused {
        failures.extend(run(&s.url, token, who, &[case]).await);
    }
    let (_, after) = call(&s.url, &s.admin_t, &M::GET, "/pods", None).await;
    if after != before {
        failures.push(format!("refusals changed the pod records:\n before {before}\n after  {after}"));
    }

    // What each reads.
    for (who, token, expect) in [
        ("agent-h1", &agent, vec!["blue/api-0", "red/web-0"]),
        ("alice", &alice, vec!["red/db-0", "red/web-0"]),
        ("controller", &controller, vec!["blue/api-0", "blue/lone", "red/db-0", "red/web-0"]),
    ] {
        let (status, body) = call(&s.url, token, &M::GET, "/pods", None).await;
        if status != 200 || names(&body) != expect {
            failures.push(format!("{who}: GET /pods answered {status} {body}, not {expect:?}"));
        }
    }
    failures.extend(
        run(
            &s.url,
            &agent,
            "agent-h1",
            &[
                c(M::GET, "/pods/red/web-0", None, 200, "\"app\":\"web\""),
                c(M::GET, "/pods/red/none", None, 404, ""),
            ],
        )
        .await,
    );
    failures.extend(run(&s.url, &alice, "alice", &[c(M::GET, "/pods/red/db-0", None, 200, "db")]).await);
    // Deleting: the controller may, and absent is success.
    failures.extend(
        run(
            &s.url,
            &controller,
            "controller",
            &[
                c(M::DELETE, "/pods/blue/lone", None, 204, ""),
                c(M::DELETE, "/pods/blue/lone", None, 204, ""),
                c(M::GET, "/pods/blue/lone", None, 404, ""),
                // Names no record can have: an encoded '/' reaches no other key.
                c(M::GET, "/pods/blue/a%2Fb", None, 404, ""),
                c(M::DELETE, "/pods/blue/a%2Fb", None, 422, "not a Kubernetes pod name"),
            ],
        )
        .await,
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

fn endpoint(a: &romana_api::rest::Address, pod: &str) -> EndpointInfo {
    EndpointInfo {
        name: a.name.clone(),
        ip: a.ip.clone(),
        tenant: a.tenant.clone(),
        segment: a.segment.clone(),
        host: a.host.clone(),
        labels: [("runtime".to_owned(), "said".to_owned())].into(),
        ports: vec![],
        pod: pod.into(),
    }
}

async fn allocate(admin: &Client, name: &str, host: &str) -> romana_api::rest::Address {
    let req = AddressRequest {
        name: name.into(),
        host: host.into(),
        tenant: "red".into(),
        segment: "".into(),
        ip: None,
    };
    admin.allocate(&req, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_of_a_pod_follows_its_record() {
    let s = setup("pods-join").await;
    let (controller, _) = login(&s.url, "controller").await;
    let (agent, agent_t) = login(&s.url, "agent-h1").await;
    controller.put_pod(&pod("red", "web-0", "h1", "web")).await.unwrap();
    controller.put_pod(&pod("red", "db-0", "h2", "db")).await.unwrap();
    let w0 = allocate(&s.admin, "w0", "h1").await;

    // Registration takes the record's labels and ports, not the runtime's.
    let got = agent.put_endpoint(&endpoint(&w0, "red/web-0")).await.unwrap();
    assert_eq!(got.labels, pod("red", "web-0", "h1", "web").labels);
    assert_eq!(got.ports.len(), 1);
    assert_eq!(s.admin.endpoint("w0").await.unwrap(), got);

    // No record, another host's pod, a malformed pod reference: refused with the reason.
    use Method as M;
    let c = |body: EndpointInfo, status: u16, needle: &'static str| -> Case {
        (M::PUT, "/endpoints/w0".to_owned(), Some(json!(body)), status, needle)
    };
    let failures = run(
        &s.url,
        &agent_t,
        "agent-h1",
        &[
            c(endpoint(&w0, "red/none"), 424, "red/none, which has no record"),
            c(endpoint(&w0, "red/db-0"), 409, "is on host \\\"h2\\\""),
            c(endpoint(&w0, "red-db-0"), 422, "pod:"),
            // Labels of a pod's endpoint are the record's: no relabel behind its back.
            (
                M::PUT,
                "/endpoints/w0/labels".into(),
                Some(json!({"labels": {"a": "b"}})),
                409,
                "PUT /pods/red/web-0",
            ),
        ],
    )
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(s.admin.endpoint("w0").await.unwrap(), got, "nothing changed on refusal");

    // A change of the record is the endpoint's change.
    let mut web2 = pod("red", "web-0", "h1", "web2");
    web2.ports.clear();
    controller.put_pod(&web2).await.unwrap();
    let e = s.admin.endpoint("w0").await.unwrap();
    assert_eq!((e.labels, e.ports), (web2.labels.clone(), vec![]));

    // Deleted endpoint: a later record change does not bring it back; the record's delete leaves
    // the endpoint (CNI DEL removes it).
    agent.delete_endpoint("w0").await.unwrap();
    controller.put_pod(&pod("red", "web-0", "h1", "web3")).await.unwrap();
    assert_eq!(s.admin.endpoint("w0").await.unwrap_err().status(), Some(404));
    agent.put_endpoint(&endpoint(&w0, "red/web-0")).await.unwrap();
    controller.delete_pod("red", "web-0").await.unwrap();
    assert_eq!(s.admin.endpoint("w0").await.unwrap().labels["app"], "web3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_record_writes_and_registrations_miss_nothing() {
    let s = setup("pods-race").await;
    let (controller, _) = login(&s.url, "controller").await;
    let (agent, _) = login(&s.url, "agent-h1").await;
    controller.put_pod(&pod("red", "web-0", "h1", "v0")).await.unwrap();
    let w0 = allocate(&s.admin, "w0", "h1").await;
    const ROUNDS: usize = 30;
    let writer = tokio::spawn(async move {
        for i in 1..=ROUNDS {
            controller.put_pod(&pod("red", "web-0", "h1", &format!("v{i}"))).await.unwrap();
        }
    });
    let registrar = tokio::spawn(async move {
        for i in 0..ROUNDS {
            agent.put_endpoint(&endpoint(&w0, "red/web-0")).await.unwrap();
            if i + 1 < ROUNDS {
                agent.delete_endpoint("w0").await.unwrap();
            }
        }
    });
    writer.await.unwrap();
    registrar.await.unwrap();
    let e = s.admin.endpoint("w0").await.unwrap();
    assert_eq!(e.labels["app"], format!("v{ROUNDS}"), "the endpoint missed the record's last change: {e:?}");
}

/// On a host romana-k8s manages (its tag `romana.io/managed-by=romana-k8s`), pods' labels come
/// only from their records: the host's agent can neither register an endpoint with labels or
/// named ports of its own, nor relabel one, nor take the tag off its host. Before the tag, the
/// same requests succeed (the control); an admin is not restricted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_choose_labels_on_a_host_the_controller_manages() {
    let s = setup("pods-managed").await;
    let (controller, _) = login(&s.url, "controller").await;
    let (agent, agent_t) = login(&s.url, "agent-h1").await;
    let w0 = allocate(&s.admin, "w0", "h1").await;
    let w1 = allocate(&s.admin, "w1", "h1").await;
    let labelled = |a| EndpointInfo { ports: vec![], ..endpoint(a, "") };
    let ported = |a| EndpointInfo {
        labels: Default::default(),
        ports: vec![EndpointPort { name: "http".into(), protocol: "TCP".into(), port: 80 }],
        ..endpoint(a, "")
    };
    // The control: an unmanaged host's agent labels its endpoints (ROMANA_LABELS).
    agent.put_endpoint(&labelled(&w0)).await.unwrap();

    let mut tags = s.admin.host("h1").await.unwrap().tags;
    tags.insert("romana.io/managed-by".into(), "romana-k8s".into());
    controller.set_tags("h1", &romana_api::rest::TagsRequest { tags: tags.clone() }).await.unwrap();
    let before = (s.admin.endpoint("w0").await.unwrap(), s.admin.host("h1").await.unwrap().tags);
    let mut untagged = tags.clone();
    untagged.remove("romana.io/managed-by");
    let mut retagged = tags.clone();
    retagged.insert("romana.io/managed-by".into(), "someone-else".into());
    use Method as M;
    let managed = "host h1 is managed by romana-k8s";
    let failures = run(
        &s.url,
        &agent_t,
        "agent-h1",
        &[
            (M::PUT, "/endpoints/w1".into(), Some(json!(labelled(&w1))), 403, managed),
            (M::PUT, "/endpoints/w1".into(), Some(json!(ported(&w1))), 403, managed),
            (M::PUT, "/endpoints/w0".into(), Some(json!(labelled(&w0))), 403, managed),
            (M::PUT, "/endpoints/w0/labels".into(), Some(json!({"labels": {"app": "db"}})), 403, managed),
            (M::PUT, "/hosts/h1/tags".into(), Some(json!({"tags": untagged})), 403, "romana.io/managed-by"),
            (M::PUT, "/hosts/h1/tags".into(), Some(json!({"tags": retagged})), 403, "romana.io/managed-by"),
        ],
    )
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let after = (s.admin.endpoint("w0").await.unwrap(), s.admin.host("h1").await.unwrap().tags);
    assert_eq!(after, before, "nothing changed on refusal");
    assert_eq!(s.admin.endpoint("w1").await.unwrap_err().status(), Some(404), "w1 was not registered");

    // What stays allowed: a bare registration (kubelet pods register with `pod` set), other tags
    // with the mark kept, and an admin's labels.
    let bare = EndpointInfo { labels: Default::default(), ..labelled(&w1) };
    agent.put_endpoint(&bare).await.unwrap();
    let mut more = tags.clone();
    more.insert("zone".into(), "z1".into());
    agent.set_tags("h1", &romana_api::rest::TagsRequest { tags: more }).await.unwrap();
    s.admin.put_endpoint(&labelled(&w1)).await.unwrap();
    assert_eq!(s.admin.endpoint("w1").await.unwrap().labels, labelled(&w1).labels);
}
