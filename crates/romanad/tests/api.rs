//! Black-box REST tests of every service, on the embedded store and on etcd.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use romana_api::rest::{AddressRequest, HostRequest, SegmentRequest, TagsRequest, TenantRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_test_support::TempDir;

async fn raw_as(
    token: Option<&str>,
    url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = romana_client::http().request(method, format!("{url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_owned());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

fn host(name: &str, ip: &str, tags: &[(&str, &str)]) -> HostRequest {
    HostRequest {
        name: name.into(),
        ip: ip.into(),
        ipv6: None,
        agent_port: None,
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        k8s_info: None,
    }
}

fn addr(name: &str, host: &str, tenant: &str) -> AddressRequest {
    AddressRequest {
        name: name.into(),
        host: host.into(),
        tenant: tenant.into(),
        segment: "default".into(),
        ip: None,
    }
}

/// One walk through every service, as the admin `c`.
async fn exercise(url: &str, c: &Client) {
    let token = c.token();
    let raw = |method: reqwest::Method, path: &'static str, body: Option<&'static str>| {
        let token = token.clone();
        async move { raw_as(token.as_deref(), url, method, path, body).await }
    };

    // Root: this instance registered every service.
    let idx = c.index().await.expect("index");
    let names: Vec<_> = idx.services.iter().map(|s| s.name.as_str()).collect();
    for s in ["ipam", "policy", "root", "tenant", "topology", "watch"] {
        assert!(names.contains(&s), "{s} registered: {names:?}");
    }
    assert_eq!(c.discover("ipam").await.expect("discover"), vec![url.to_owned()]);
    assert_eq!(raw(reqwest::Method::PUT, "/config/ipam", Some(r#"{"x":1}"#)).await.0, 200);
    assert_eq!(raw(reqwest::Method::GET, "/config/ipam", None).await.1["x"], 1);

    // Tenants and segments, numbered.
    let t = c
        .create_tenant(&TenantRequest {
            name: "red".into(),
            external_id: "proj-1".into(),
            labels: BTreeMap::new(),
            isolation: Default::default(),
        })
        .await
        .expect("tenant");
    let blue = c
        .create_tenant(&TenantRequest {
            name: "blue".into(),
            external_id: String::new(),
            labels: BTreeMap::new(),
            isolation: Default::default(),
        })
        .await
        .expect("tenant");
    assert_eq!((t.number, blue.number), (0, 1));
    let dup = c
        .create_tenant(&TenantRequest {
            name: "red".into(),
            external_id: String::new(),
            labels: BTreeMap::new(),
            isolation: Default::default(),
        })
        .await;
    assert_eq!(dup.unwrap_err().status(), Some(409));
    assert_eq!(c.tenant("proj-1").await.expect("by external id").name, "red");
    let bad = c
        .create_tenant(&TenantRequest {
            name: "a b".into(),
            external_id: String::new(),
            labels: BTreeMap::new(),
            isolation: Default::default(),
        })
        .await;
    assert_eq!(bad.unwrap_err().status(), Some(422));
    let s1 = c
        .add_segment(
            "red",
            &SegmentRequest { name: "web".into(), external_id: String::new(), labels: BTreeMap::new() },
        )
        .await
        .expect("seg");
    let s2 = c
        .add_segment(
            "red",
            &SegmentRequest { name: "db".into(), external_id: String::new(), labels: BTreeMap::new() },
        )
        .await
        .expect("seg");
    assert_eq!((s1.number, s2.number), (0, 1));
    assert_eq!(c.segments("red").await.expect("segments").len(), 2);
    assert_eq!(c.tenant("nope").await.unwrap_err().status(), Some(404));

    // Topology and hosts.
    let topo: TopologyRequest = serde_json::from_str(
        &std::fs::read_to_string(common::topology_file("multi-zone.json")).expect("file"),
    )
    .expect("json");
    c.apply_topology(&topo).await.expect("topology");
    assert_eq!(c.networks().await.expect("networks")[0].cidr, "10.111.0.0/16");
    let h1 = c
        .add_host(&host("h1", "192.168.1.1", &[("zone", "zone-a"), ("rack", "zone-a-rack-1")]))
        .await
        .expect("h1");
    assert_eq!(h1.placements[0].group, "/zone-a/zone-a-rack-1");
    c.add_host(&host("h2", "192.168.1.2", &[("zone", "zone-a"), ("rack", "zone-a-rack-1")]))
        .await
        .expect("h2");
    assert_eq!(
        c.add_host(&host("h3", "192.168.1.1", &[("zone", "zone-a")])).await.unwrap_err().status(),
        Some(409)
    );
    assert_eq!(
        c.add_host(&host("h4", "192.168.1.4", &[])).await.unwrap_err().status(),
        Some(422),
        "fits no group"
    );
    assert_eq!(c.add_host(&host("h5", "not-an-ip", &[])).await.unwrap_err().status(), Some(422));
    let rendered = c.topology().await.expect("topology");
    assert_eq!(rendered.topologies[0].map[0].cidr.as_deref(), Some("10.111.0.0/17"));
    let tags = TagsRequest {
        tags: [("zone", "zone-b"), ("rack", "zone-a-rack-1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    assert_eq!(c.set_tags("h2", &tags).await.unwrap_err().status(), Some(422), "tags may not move a host");

    // Addresses: idempotent by name, lowest free, release by name or address.
    let a1 = c.allocate(&addr("p1", "h1", "red"), None).await.expect("p1");
    assert_eq!(a1.ip, "10.111.0.0");
    assert_eq!(c.allocate(&addr("p1", "h1", "red"), None).await.expect("again").ip, "10.111.0.0");
    assert_eq!(c.allocate(&addr("p1", "h2", "red"), None).await.unwrap_err().status(), Some(409));
    let a2 = c.allocate(&addr("p2", "h2", "red"), Some("tok-1")).await.expect("p2");
    assert_eq!(a2.ip, "10.111.0.8");
    // A retried POST with the same token returns the first answer.
    assert_eq!(c.allocate(&addr("p2-retry", "h2", "red"), Some("tok-1")).await.expect("retry").name, "p2");
    assert_eq!(
        raw(
            reqwest::Method::POST,
            "/address",
            Some(r#"{"name":"p3","host":"h1","tenant":"red","segment":"default"}"#)
        )
        .await,
        (200, serde_json::json!("10.111.0.1"))
    );
    assert_eq!(c.address("10.111.0.1").await.expect("by ip").name, "p3");
    assert_eq!(c.blocks().await.expect("blocks").blocks.len(), 2);
    assert_eq!(raw(reqwest::Method::DELETE, "/address?addressName=p3", None).await.0, 200);
    assert_eq!(raw(reqwest::Method::DELETE, "/address?addressName=p3", None).await.0, 404);
    assert_eq!(c.addresses("?host=h2").await.expect("list").len(), 1);
    let routes = c.routes("h1").await.expect("routes");
    assert_eq!(routes.routes[0].dest, "10.111.0.8/29");
    assert_eq!(routes.routes[0].kind.via(), "h2");

    // Blackouts.
    c.add_blackout("10.111.0.0/30").await.unwrap_err();
    c.add_blackout("10.111.1.0/24").await.expect("blackout");
    assert_eq!(c.blackouts().await.expect("list").len(), 1);
    c.remove_blackout("10.111.1.0/24").await.expect("remove");
    assert_eq!(c.remove_blackout("10.111.1.0/24").await.unwrap_err().status(), Some(404));

    // Policies: validated on write.
    let good = serde_json::json!({"id": "web-in", "applied_to": [{"tenant": "red", "segment": "web"}],
        "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "TCP", "ports": [80, 443]}]}]});
    assert_eq!(c.add_policy(&good).await.expect("policy").ingress[0].rules[0].protocol, "tcp");
    c.add_policy(&good).await.expect("same policy again is a no-op");
    let bad = serde_json::json!({"id": "bad", "applied_to": [], "ingress": [{"peers": [], "rules": [{"protocol": "gre"}]}]});
    let err = c.add_policy(&bad).await.unwrap_err();
    assert_eq!(err.status(), Some(422));
    assert!(err.to_string().contains("applied_to") && err.to_string().contains("gre"), "{err}");
    assert_eq!(c.policy("bad").await.unwrap_err().status(), Some(404), "a bad policy is not stored");
    assert_eq!(c.policies().await.expect("list").len(), 1);
    assert_eq!(raw(reqwest::Method::DELETE, "/policies", Some(r#"{"id":"web-in"}"#)).await.0, 200);
    assert_eq!(c.delete_policy("web-in").await.unwrap_err().status(), Some(404));

    // Watch: current state, then live changes, resumable by revision.
    let mut w = c.watch("ipam/names/", 0).await.expect("watch");
    let mut synced_at = 0;
    while let Some(ev) = w.recv().await {
        let ev = ev.expect("event");
        if ev.kind == "synced" {
            synced_at = ev.revision;
            break;
        }
    }
    c.allocate(&addr("p9", "h1", "blue"), None).await.expect("p9");
    let ev = tokio::time::timeout(std::time::Duration::from_secs(5), w.recv())
        .await
        .expect("in time")
        .expect("open")
        .expect("ok");
    assert_eq!((ev.kind.as_str(), ev.key.as_str()), ("put", "ipam/names/p9"));
    let mut again = c.watch("ipam/names/", synced_at).await.expect("resume");
    let ev = again.recv().await.expect("open").expect("ok");
    assert_eq!(ev.key, "ipam/names/p9", "resuming from the synced revision replays the change");

    // Hosts go away with their addresses.
    let released = c.remove_host("h2").await.expect("remove");
    assert_eq!(released.len(), 1);
    assert_eq!(c.address("p2").await.unwrap_err().status(), Some(404));
    assert_eq!(c.remove_host("h2").await.unwrap_err().status(), Some(404));

    // Errors: our JSON body everywhere.
    let (s, b) = raw(reqwest::Method::GET, "/nope", None).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")));
    assert_eq!(raw(reqwest::Method::PATCH, "/hosts", None).await.0, 405);
    let (s, b) = raw(reqwest::Method::POST, "/hosts", Some("{\"name\":1}")).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("bad_request")));
    assert_eq!(
        raw(reqwest::Method::POST, "/hosts", Some("{\"name\":\"x\",\"ip\":\"1.2.3.4\",\"color\":1}")).await.0,
        400
    );
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(5 << 20));
    assert_eq!(raw_as(token.as_deref(), url, reqwest::Method::POST, "/tenants", Some(&huge)).await.0, 413);
    let (s, body) = raw(reqwest::Method::GET, "/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(body["paths"]["/addresses"]["post"].is_object());
    assert_eq!(raw(reqwest::Method::GET, "/readyz", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_on_the_embedded_store() {
    let dir = TempDir::new("api-embedded");
    let d = common::embedded(&dir, &[]);
    exercise(&d.url, &common::admin(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_on_etcd() {
    let etcd = common::etcd("api");
    let dir = TempDir::new("api-etcd");
    let d = common::on_etcd(&etcd, "/romana-api/", &["--data-dir", &dir.path().display().to_string()]);
    exercise(&d.url, &common::admin(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subset_of_services() {
    let dir = TempDir::new("api-subset");
    let d = common::embedded(&dir, &["--services", "ipam,topology"]);
    // Unserved routes are not found; served ones want a token.
    assert_eq!(raw_as(None, &d.url, reqwest::Method::GET, "/policies", None).await.0, 404);
    assert_eq!(raw_as(None, &d.url, reqwest::Method::GET, "/blocks", None).await.0, 401);
    assert_eq!(raw_as(None, &d.url, reqwest::Method::GET, "/hosts", None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_the_table_is_served() {
    let dir = TempDir::new("api-table");
    let d = common::embedded(&dir, &[]);
    for r in romana_services::rest_routes::ROUTES {
        let path = r
            .path
            .replace("{service}", "ipam")
            .replace("{tenant}", "t")
            .replace("{segment}", "s")
            .replace("{network}", "n")
            .replace("{host}", "h")
            .replace("{name}", "x")
            .replace("{id}", "i");
        let method = reqwest::Method::from_bytes(r.method.as_bytes()).expect("method");
        let resp = romana_client::http()
            .request(method, format!("{}{path}", d.url))
            .timeout(std::time::Duration::from_secs(2))
            .send()
            .await;
        let Ok(resp) = resp else { continue }; // the watch stream stays open: served
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_ne!(status, 405, "{} {path}", r.method);
        assert!(body["details"][0] != "no_route", "{} {path} is in the table but not served", r.method);
    }
}
