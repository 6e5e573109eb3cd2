//! VIPs, black box (a romanad process with authentication on, real HTTP), from the attacker's
//! side: what every role may read and change (admin and controllers create and delete; agents
//! and tenant users do not; a tenant user reads only its tenants' VIPs, others are 404), bad
//! input is 409/422 naming the problem and changes nothing (read back as admin); then the
//! assignment: a VIP is served by a live host with the service's endpoints, with a standby, and
//! moves when the serving host's heartbeat lapses. Waits poll; nothing asserts on time.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use reqwest::Method;
use romana_api::rest::{AddressRequest, EndpointInfo, HostRequest, UserRequest};
use romana_api::vip::VipInfo;
use romana_client::Client;
use romana_test_support::TempDir;
use serde_json::{Value, json};

async fn call(url: &str, token: &str, method: &Method, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut req = romana_client::http().request(method.clone(), format!("{url}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = match tokio::time::timeout(Duration::from_secs(10), req.send()).await {
        Ok(r) => r.unwrap_or_else(|e| panic!("{method} {path}: {e}")),
        Err(_) => panic!("{method} {path}: no answer in 10 s"),
    };
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
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
    let d = common::embedded(&dir, &["--host-liveness-ttl", "1"]);
    let admin = common::admin(&dir).await;
    let topo: romana_api::topology::TopologyRequest = serde_json::from_value(json!({
        "networks": [{"name": "net", "cidr": "10.122.0.0/16", "block_mask": 29}],
        "topologies": [{"networks": ["net"], "map": [{"groups": []}]}]
    }))
    .unwrap();
    admin.apply_topology(&topo).await.unwrap();
    for (h, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2"), ("h3", "192.0.2.3")] {
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
    for (name, role, tenants, hosts) in [
        ("agent-h1", "service", &[][..], &["h1"][..]),
        ("agent-h2", "service", &[], &["h2"]),
        ("controller", "service", &[], &[]),
        ("alice", "tenant", &["red"], &[]),
        ("bob", "tenant", &["blue"], &[]),
    ] {
        admin.create_user(&user(name, role, tenants, hosts)).await.unwrap();
    }
    let admin_t = admin.token().unwrap();
    Setup { url: d.url.clone(), _dir: dir, _d: d, admin, admin_t }
}

fn vips(body: &str) -> Vec<String> {
    let v: Vec<VipInfo> = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v.into_iter().map(|v| format!("{} {}/{}", v.address, v.tenant, v.service)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_reads_and_changes_only_what_it_may() {
    let s = setup("vips-roles").await;
    let (_, controller) = login(&s.url, "controller").await;
    let (_, agent) = login(&s.url, "agent-h1").await;
    let (_, alice) = login(&s.url, "alice").await;
    let (_, bob) = login(&s.url, "bob").await;
    use Method as M;
    let c = |m: M, path: &str, body: Option<Value>, status: u16, needle: &'static str| -> Case {
        (m, path.to_owned(), body, status, needle)
    };
    let web = |addr: &str, tenant: &str| json!({"address": addr, "service": "web", "tenant": tenant});
    let mut failures = run(
        &s.url,
        &s.admin_t,
        "admin",
        &[
            c(M::POST, "/vips", Some(web("198.51.100.10", "red")), 201, "\"app\":\"web\""),
            // Without an address and without a range: 422 saying how to configure one.
            c(M::POST, "/vips", Some(json!({"service": "web", "tenant": "red"})), 422, "PUT /config/vips"),
            c(M::PUT, "/config/vips", Some(json!({"ranges": ["198.51.100.8/30"]})), 200, ""),
            c(M::PUT, "/config/vips", Some(json!({"ranges": ["10.0.0.0/33"]})), 422, "ranges[0]"),
            c(M::PUT, "/config/vips", Some(json!({"ranges": ["fd00::/64"]})), 422, "IPv6"),
            // Drawn: the lowest free one (.9; .8 and .11 are the range's network and broadcast).
            c(M::POST, "/vips", Some(json!({"service": "api", "tenant": "blue"})), 201, "198.51.100.9"),
        ],
    )
    .await;
    failures.extend(
        run(
            &s.url,
            &controller,
            "controller",
            &[
                c(
                    M::POST,
                    "/vips",
                    Some(json!({"address": "203.0.113.1", "service": "db", "tenant": "red", "ports": [{"protocol": "tcp", "port": 5432}]})),
                    201,
                    "\"protocol\":\"TCP\"",
                ),
                // .9 and .10 are taken, .11 is the broadcast address: the range is used up.
                c(M::POST, "/vips", Some(json!({"service": "x", "tenant": "red"})), 409, "198.51.100.8/30 is in use"),
                c(M::DELETE, "/vips/198.51.100.10", None, 200, "198.51.100.10"),
                c(M::POST, "/vips", Some(web("198.51.100.10", "red")), 201, ""),
            ],
        )
        .await,
    );
    let (_, before) = call(&s.url, &s.admin_t, &M::GET, "/vips", None).await;
    let all = vips(&before);
    assert_eq!(all.len(), 3, "{all:?}");

    let refused = [
        // An agent reads VIPs (it serves them) and changes none, its own host's neither.
        ("agent-h1", &agent, c(M::POST, "/vips", Some(web("203.0.113.1", "red")), 403, "may not")),
        ("agent-h1", &agent, c(M::DELETE, "/vips/198.51.100.10", None, 403, "may not")),
        ("agent-h1", &agent, c(M::PUT, "/config/vips", Some(json!({"ranges": []})), 403, "")),
        // A tenant user creates and deletes none, its own tenant's neither.
        ("alice", &alice, c(M::POST, "/vips", Some(web("203.0.113.1", "red")), 403, "")),
        ("alice", &alice, c(M::DELETE, "/vips/198.51.100.10", None, 403, "")),
        ("alice", &alice, c(M::PUT, "/config/vips", Some(json!({"ranges": []})), 403, "")),
        // It reads its own tenant's; another's is not found, and says nothing of it.
        ("alice", &alice, c(M::GET, "/vips/198.51.100.10", None, 200, "\"tenant\":\"red\"")),
        ("alice", &alice, c(M::GET, "/vips/198.51.100.9", None, 404, "no VIP 198.51.100.9")),
        ("bob", &bob, c(M::GET, "/vips/198.51.100.10", None, 404, "no VIP")),
        // Bad input: 422 naming the field, 409 naming the clash.
        (
            "admin",
            &s.admin_t,
            c(M::POST, "/vips", Some(web("10.122.0.5", "red")), 422, "inside Romana network net"),
        ),
        ("admin", &s.admin_t, c(M::POST, "/vips", Some(web("192.0.2.2", "red")), 409, "address of host h2")),
        (
            "admin",
            &s.admin_t,
            c(M::POST, "/vips", Some(web("198.51.100.10", "red")), 409, "exists (service web of tenant red)"),
        ),
        ("admin", &s.admin_t, c(M::POST, "/vips", Some(web("fd00::1", "red")), 422, "IPv6")),
        ("admin", &s.admin_t, c(M::POST, "/vips", Some(web("224.0.0.1", "red")), 422, "not a unicast")),
        ("admin", &s.admin_t, c(M::POST, "/vips", Some(web("nope", "red")), 422, "not an IP address")),
        (
            "admin",
            &s.admin_t,
            c(M::POST, "/vips", Some(web("203.0.113.1", "green")), 422, "no tenant \\\"green\\\""),
        ),
        (
            "admin",
            &s.admin_t,
            c(
                M::POST,
                "/vips",
                Some(json!({"address": "203.0.113.1", "service": "Web!", "tenant": "red", "host": "h9",
                            "ports": [{"protocol": "icmp", "port": 0}]})),
                422,
                "service: \\\"Web!\\\"",
            ),
        ),
        (
            "admin",
            &s.admin_t,
            c(
                M::POST,
                "/vips",
                Some(json!({"address": "203.0.113.1", "service": "web", "tenant": "red", "host": "h9"})),
                422,
                "no host \\\"h9\\\"",
            ),
        ),
        (
            "admin",
            &s.admin_t,
            c(M::POST, "/vips", Some(json!({"service": "web", "colour": 1})), 400, "colour"),
        ),
        ("admin", &s.admin_t, c(M::DELETE, "/vips/203.0.113.77", None, 404, "no VIP 203.0.113.77")),
        ("admin", &s.admin_t, c(M::GET, "/vips/..%2Fconfig", None, 404, "no VIP")),
    ];
    for (who, token, case) in refused {
        failures.extend(run(&s.url, token, who, std::slice::from_ref(&case)).await);
    }
    // Nothing changed on a refusal.
    let (_, after) = call(&s.url, &s.admin_t, &M::GET, "/vips", None).await;
    assert_eq!(vips(&after), all);
    // Lists are filtered by tenant; agents and controllers see all.
    for (who, token, want) in [
        ("alice", &alice, vec!["198.51.100.10 red/web", "203.0.113.1 red/db"]),
        ("bob", &bob, vec!["198.51.100.9 blue/api"]),
        ("agent-h1", &agent, all.iter().map(String::as_str).collect()),
        ("controller", &controller, all.iter().map(String::as_str).collect()),
    ] {
        let (status, body) = call(&s.url, token, &M::GET, "/vips", None).await;
        let mut got = vips(&body);
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(str::to_owned).collect();
        want.sort();
        if status != 200 || got != want {
            failures.push(format!("{who}: GET /vips answered {status} {got:?}, not {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

async fn endpoint(admin: &Client, agent: &Client, name: &str, host: &str, app: &str) {
    let req = AddressRequest {
        name: name.into(),
        host: host.into(),
        tenant: "red".into(),
        segment: "".into(),
        ip: None,
    };
    let a = admin.allocate(&req, None).await.unwrap();
    let e = EndpointInfo {
        name: name.into(),
        ip: a.ip,
        tenant: "red".into(),
        host: host.into(),
        labels: [("app".to_owned(), app.to_owned())].into(),
        ..EndpointInfo::default()
    };
    agent.put_endpoint(&e).await.unwrap();
}

/// Polls the VIP until `want` holds of it (60 s at most).
async fn wait_for(c: &Client, address: &str, what: &str, want: impl Fn(&VipInfo) -> bool) -> VipInfo {
    let start = Instant::now();
    loop {
        let v = c.vip(address).await.unwrap();
        if want(&v) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: not reached: {v:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_is_served_by_a_live_host_with_endpoints_and_moves_when_it_dies() {
    let s = setup("vips-failover").await;
    let (a1, _) = login(&s.url, "agent-h1").await;
    let (a2, _) = login(&s.url, "agent-h2").await;
    endpoint(&s.admin, &a1, "w1", "h1", "web").await;
    endpoint(&s.admin, &a2, "w2", "h2", "web").await;
    endpoint(&s.admin, &a2, "d2", "h2", "db").await;
    let req = romana_api::vip::VipRequest {
        address: "198.51.100.20".into(),
        service: "web".into(),
        tenant: "red".into(),
        host: "h1".into(),
        ..Default::default()
    };
    s.admin.add_vip(&req).await.unwrap();
    // No host has sent a heartbeat: none is known alive, so none serves it.
    let v = s.admin.vip("198.51.100.20").await.unwrap();
    assert_eq!((v.assigned.as_str(), v.standby.as_str()), ("", ""), "{v:?}");

    // Both agents heartbeat: h1 (preferred) serves, h2 stands by; each DNATs to its own endpoints.
    let beat = |c: Client, host: &'static str| {
        tokio::spawn(async move {
            loop {
                let _ = c.heartbeat(host).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let h1 = beat(a1, "h1");
    let h2 = beat(a2, "h2");
    let v = wait_for(&s.admin, "198.51.100.20", "h1 serves, h2 stands by", |v| {
        v.assigned == "h1" && v.standby == "h2"
    })
    .await;
    let w1 = s.admin.endpoint("w1").await.unwrap().ip;
    let w2 = s.admin.endpoint("w2").await.unwrap().ip;
    assert_eq!(v.backends, [("h1".to_owned(), vec![w1]), ("h2".to_owned(), vec![w2.clone()])].into());
    assert!(v.since_ms > 0);

    // h1 dies (its heartbeats stop): h2 serves, no standby is left.
    h1.abort();
    let v = wait_for(&s.admin, "198.51.100.20", "h2 serves", |v| v.assigned == "h2").await;
    assert_eq!(v.standby, "");
    assert_eq!(v.backends, [("h2".to_owned(), vec![w2])].into());
    h2.abort();
    wait_for(&s.admin, "198.51.100.20", "nobody serves", |v| v.assigned.is_empty()).await;
}
