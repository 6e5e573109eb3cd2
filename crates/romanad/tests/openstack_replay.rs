//! The networking-romana drivers' calls replayed exactly as their code sends them (no token,
//! `Accept: application/json`), against romanad with authentication on and the `legacy-openstack`
//! allowance for the driver's source:
//! - the 2016 driver (master, b01d9fd): service URLs from `GET {root}`, `urljoin` of relative
//!   finder paths and absolute `/endpoints`, `/hosts/<id>`;
//! - the 2017 driver (feature/romana-stable-ocata-update, 8677e4b, `driver/utils.py`):
//!   `POST {url}/address`, `DELETE {url}/address?addressName=<ip>`, `GET urljoin(url, "/hosts")`.
//!
//! And the attacker's side: the allowance answers nothing else, nothing from other sources, and a
//! token keeps our meanings.
#![allow(clippy::unwrap_used)]

use reqwest::Method as M;
use romana_api::rest::Credentials;
use romana_api::topology::TopologyRequest;
use romana_test_support::TempDir;
use serde_json::{Value, json};

const FLAT: &str = r#"{"networks":[{"name":"vms","cidr":"10.40.0.0/16","block_mask":28}],"topologies":[{"networks":["vms"],"map":[{"groups":[]}]}]}"#;

/// One call as the old driver's `http_call` makes it: no token, JSON in and out.
async fn driver(method: M, url: &str, body: Option<Value>) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut r = http.request(method, url).header("Accept", "application/json");
    if let Some(b) = body {
        r = r.header("Content-Type", "application/json").body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Python's `urljoin` for the two shapes the driver uses: an absolute path replaces the base's
/// path; a relative one is appended to a base ending in '/'.
fn urljoin(base: &str, rel: &str) -> String {
    if let Some(path) = rel.strip_prefix('/') {
        let origin: String = base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        format!("{origin}/{path}")
    } else {
        assert!(base.ends_with('/'), "service href {base} should end with '/'");
        format!("{base}{rel}")
    }
}

/// `find_romana_service_url`: `GET {root}` and the service's `rel=service` link.
async fn service_url(root: &str, name: &str) -> String {
    let (st, idx) = driver(M::GET, root, None).await;
    assert_eq!(st, 200, "{idx}");
    idx["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["links"].as_array().unwrap().iter().find(|l| l["rel"] == "service"))
        .map(|l| l["href"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no service {name} in {idx}"))
}

/// `find_romana_id`: `findExactlyOne/<entity>s?<k=v&...>` under the entity's service; reads `id`.
async fn romana_id(root: &str, entity: &str, lookup: &[(&str, &str)]) -> Value {
    let svc = service_url(root, if entity == "host" { "topology" } else { "tenant" }).await;
    let qs: Vec<String> = lookup.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let (st, r) =
        driver(M::GET, &urljoin(&svc, &format!("findExactlyOne/{entity}s?{}", qs.join("&"))), None).await;
    assert_eq!(st, 200, "{entity} {lookup:?}: {r}");
    r["id"].clone()
}

/// `find_agent_port`: `links[rel=agent-config]` of the root, then `common.api.port`.
async fn agent_port(root: &str) -> Value {
    let (_, idx) = driver(M::GET, root, None).await;
    let href = idx["links"].as_array().unwrap().iter().find(|l| l["rel"] == "agent-config").unwrap()["href"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, cfg) = driver(M::GET, &urljoin(root, &href), None).await;
    assert_eq!(st, 200, "{cfg}");
    cfg["common"]["api"]["port"].clone()
}

struct World {
    url: String,
    admin: romana_client::Client,
}

async fn world(tag: &str) -> (World, TempDir) {
    let dir = TempDir::new(tag);
    let creds = dir.path().join("admin.credentials");
    let url = romana_services::serve_loopback(
        tag,
        Some(serde_json::from_str::<TopologyRequest>(FLAT).unwrap()),
        Some(creds.clone()),
    )
    .await
    .unwrap();
    let c: Credentials = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let admin = romana_client::Client::from_credentials(&c).await.unwrap();
    let w = World { url, admin };
    for (m, p, b) in [
        (M::POST, "/hosts", json!({"name": "hv1", "ip": "192.168.91.1", "agent_port": 9604})),
        (M::POST, "/tenants", json!({"name": "demo", "external_id": "3f2a9c0d1e"})),
        (M::POST, "/tenants/demo/segments", json!({"name": "web"})),
    ] {
        let (st, body) = w.call(m, p, Some(b)).await;
        assert!(st < 300, "{p}: {st} {body}");
    }
    (w, dir)
}

impl World {
    async fn call(&self, m: M, path: &str, body: Option<Value>) -> (u16, String) {
        let r = self.admin.send(m, path, body).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
    async fn allow(&self, sources: &[&str]) {
        let (st, b) = self
            .call(M::PUT, "/config/legacy-openstack", Some(json!({"sources": sources, "agent_port": 9604})))
            .await;
        assert_eq!(st, 200, "{b}");
    }
    /// A tenant as the Kubernetes controller makes them (a namespace's): its number.
    async fn k8s_tenant(&self, name: &str) -> String {
        let body = json!({"name": name, "labels": {"romana.io/managed-by": "romana-k8s"}});
        let (st, b) = self.call(M::POST, "/tenants", Some(body)).await;
        assert_eq!(st, 201, "{b}");
        serde_json::from_str::<Value>(&b).unwrap()["number"].to_string()
    }
    async fn allocated(&self, ip: &str) -> bool {
        self.call(M::GET, "/addresses", None).await.1.contains(&format!("\"{ip}\""))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_2016_allocates_binds_and_releases() {
    let (w, _dir) = world("os-replay").await;
    w.allow(&["127.0.0.1/32"]).await;
    let root = format!("{}/", w.url);

    // ipam_romana.RomanaDbSubnet.allocate: tenant, segment, host ids, then POST ipam /endpoints.
    let tid = romana_id(&root, "tenant", &[("external_id", "3f2a9c0d1e")]).await;
    let sid = romana_id(&root, "segment", &[("name", "web"), ("tenant_id", &tid.to_string())]).await;
    let hid = romana_id(&root, "host", &[("name", "hv1")]).await;
    let ipam = service_url(&root, "ipam").await;
    let body =
        json!({"tenant_id": tid.to_string(), "segment_id": sid.to_string(), "host_id": hid.to_string()});
    let (st, r) = driver(M::POST, &urljoin(&ipam, "/endpoints"), Some(body.clone())).await;
    assert_eq!(st, 200, "{r}");
    let ip = r["ip"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.40."), "{r}");
    assert!(w.allocated(&ip).await, "the address is in romanad's IPAM");
    // A second port gets another address.
    let (_, r2) = driver(M::POST, &urljoin(&ipam, "/endpoints"), Some(body)).await;
    assert_ne!(r2["ip"], r["ip"]);

    // mech_romana.update_port_postcommit: the agent's port from the root's agent-config link.
    assert_eq!(agent_port(&root).await, json!(9604));

    // RomanaDbSubnet.allocate for a DHCP port / delete_port_postcommit: find_host_info.
    let topo = service_url(&root, "topology").await;
    let hid2 = romana_id(&root, "host", &[("name", "hv1")]).await;
    let (st, host) = driver(M::GET, &urljoin(&topo, &format!("/hosts/{hid2}")), None).await;
    assert_eq!(st, 200, "{host}");
    assert_eq!(host["ip"], "192.168.91.1");
    assert_eq!(host["name"], "hv1");

    // delete_port_postcommit: DELETE ipam /endpoints/<ip> releases the address.
    let (st, r) = driver(M::DELETE, &urljoin(&ipam, &format!("/endpoints/{ip}")), None).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["ip"], ip.as_str());
    assert!(!w.allocated(&ip).await, "released in romanad's IPAM");
    let (st, _) = driver(M::DELETE, &urljoin(&ipam, &format!("/endpoints/{ip}")), None).await;
    assert_eq!(st, 404, "a second release finds nothing");

    // Lookups that match nothing are 404, as 1.x's findExactlyOne.
    for path in [
        "findExactlyOne/tenants?external_id=nope",
        "findExactlyOne/segments?name=nope&tenant_id=0",
        "findExactlyOne/hosts?name=nope",
    ] {
        let (st, r) = driver(M::GET, &urljoin(&root, path), None).await;
        assert_eq!(st, 404, "{path}: {r}");
    }
    let (st, _) = driver(M::GET, &urljoin(&root, "/hosts/999"), None).await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowance_opens_nothing_else() {
    let (w, _dir) = world("os-attack").await;
    let root = format!("{}/", w.url);
    let find = urljoin(&root, "findExactlyOne/tenants?external_id=3f2a9c0d1e");
    let post = || json!({"tenant_id": "0", "segment_id": "0", "host_id": "1"});
    // Not configured, or configured for other sources: the legacy calls are not answered.
    for sources in [vec![], vec!["192.0.2.0/24"]] {
        w.allow(&sources).await;
        let (st, _) = driver(M::GET, &find, None).await;
        assert_eq!(st, 404, "{sources:?}: findExactlyOne is not a route of ours");
        let (st, _) = driver(M::POST, &urljoin(&root, "/endpoints"), Some(post())).await;
        assert!(st == 401 || st == 405, "{sources:?}: POST /endpoints is {st}");
        let (st, idx) = driver(M::GET, &root, None).await;
        assert_eq!(st, 200);
        assert!(!idx.to_string().contains("agent-config"), "{sources:?}: {idx}");
    }
    // Allowed: every other call without a token still needs one.
    w.allow(&["127.0.0.1/32"]).await;
    for (m, p) in [
        (M::GET, "/tenants"),
        (M::GET, "/topology"),
        (M::GET, "/addresses"),
        (M::GET, "/config/ipam"),
        (M::GET, "/config/legacy-openstack"),
        (M::GET, "/endpoints"),
        (M::PUT, "/endpoints/10.40.0.1"),
        (M::DELETE, "/hosts/hv1"),
        (M::POST, "/tenants"),
    ] {
        let (st, r) = driver(m.clone(), &urljoin(&root, p), Some(json!({}))).await;
        assert_eq!(st, 401, "{m} {p}: {r}");
    }
    // PUT of the allowance itself needs the admin.
    let (st, _) =
        driver(M::PUT, &urljoin(&root, "/config/legacy-openstack"), Some(json!({"sources": ["0.0.0.0/0"]})))
            .await;
    assert_eq!(st, 401);

    // With a token the paths keep our meanings: a registry delete of an unknown name (or of an
    // allocated address) is 404 and releases nothing.
    let (st, r) = driver(M::GET, &find, None).await;
    assert_eq!(st, 200, "{r}");
    let hid = romana_id(&root, "host", &[("name", "hv1")]).await;
    let (_, a) = driver(
        M::POST,
        &urljoin(&root, "/endpoints"),
        Some(json!({"tenant_id": r["id"].to_string(), "segment_id": "0", "host_id": hid.to_string()})),
    )
    .await;
    let ip = a["ip"].as_str().unwrap_or_else(|| panic!("{a}")).to_owned();
    let (st, b) = w.call(M::DELETE, &format!("/endpoints/{ip}"), None).await;
    assert_eq!(st, 404, "{b}");
    assert!(b.contains("no endpoint named"), "{b}");
    assert!(w.allocated(&ip).await, "a registry delete must not release the 1.x address");
    let (st, _) = w.call(M::DELETE, "/endpoints/never-registered", None).await;
    assert_eq!(st, 404);
    // The allowance releases only what it allocated: an address allocated by an authenticated
    // client (a pod's, say) survives a tokenless release by address.
    let (st, pod) = w
        .call(
            M::POST,
            "/addresses",
            Some(json!({"name": "cni:k8s:c1:eth0", "host": "hv1", "tenant": "demo", "segment": "web"})),
        )
        .await;
    assert_eq!(st, 201, "{pod}");
    let pod_ip = serde_json::from_str::<serde_json::Value>(&pod).unwrap()["ip"].as_str().unwrap().to_owned();
    let (st, r) = driver(M::DELETE, &urljoin(&root, &format!("/endpoints/{pod_ip}")), None).await;
    assert_eq!(st, 404, "{r}");
    assert!(w.allocated(&pod_ip).await, "a pod's address must not be released by the allowance");
    // A Kubernetes namespace's tenant is not the 1.x driver's to allocate in.
    let ns1 = w.k8s_tenant("ns1").await;
    let (st, r) = driver(
        M::POST,
        &urljoin(&root, "/endpoints"),
        Some(json!({"tenant_id": ns1, "segment_id": "0", "host_id": hid.to_string()})),
    )
    .await;
    assert_eq!(st, 403, "{r}");
    // Bad input to the legacy calls names the problem.
    let (st, r) = driver(M::DELETE, &urljoin(&root, "/endpoints/not-an-ip"), None).await;
    assert_eq!(st, 400, "{r}");
    let (st, r) = driver(M::POST, &urljoin(&root, "/endpoints"), Some(json!({"tenant_id": "x"}))).await;
    assert_eq!(st, 400, "{r}");
    assert!(r.to_string().contains("tenant_id"), "{r}");
}

/// The 2017 driver's `http_call`: `Accept: application/json`, a JSON body with its content type,
/// no token (`driver(...)` above sends the same).
async fn call_2017(method: M, url: &str, body: Option<Value>) -> (u16, Value) {
    driver(method, url, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_2017_allocates_finds_hosts_and_releases() {
    let (w, _dir) = world("os-2017").await;
    // [romana] url = romanad's root; the driver appends "/address" and urljoins "/hosts".
    let url = w.url.clone();
    let project = "6d1e0c4b9a8f4e2d8c7b6a5f4e3d2c1b";
    let port = "0f4a8c2e-5b6d-4e7f-9a1b-2c3d4e5f6a7b";
    let alloc = json!({"name": port, "host": "hv1", "tenant": project, "segment": "default"});

    // Without the allowance every call needs the token the driver cannot send.
    for (m, u, b) in [
        (M::POST, format!("{url}/address"), Some(alloc.clone())),
        (M::DELETE, format!("{url}/address?addressName=10.40.0.1"), None),
        (M::GET, urljoin(&format!("{url}/"), "/hosts"), None),
    ] {
        let (st, r) = call_2017(m.clone(), &u, b).await;
        assert_eq!(st, 401, "{m} {u} without the allowance: {r}");
    }
    w.allow(&["127.0.0.1/32"]).await;

    // ipam_romana.RomanaDbSubnet.allocate -> romana_allocate_ip_address: the address as a JSON
    // string, which the driver returns to Neutron as the port's address.
    let (st, ip) = call_2017(M::POST, &format!("{url}/address"), Some(alloc.clone())).await;
    assert_eq!(st, 200, "{ip}");
    let ip = ip.as_str().unwrap_or_else(|| panic!("not a JSON string: {ip}")).to_owned();
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok() && ip.starts_with("10.40."), "{ip}");
    let (st, rec) = w.call(M::GET, &format!("/addresses/os1:{port}"), None).await;
    assert_eq!(st, 200, "{rec}");
    let rec: Value = serde_json::from_str(&rec).unwrap();
    assert_eq!(
        (&rec["ip"], &rec["tenant"], &rec["segment"], &rec["host"]),
        (&json!(ip), &json!(project), &json!("default"), &json!("hv1"))
    );
    // A second port of the project gets another address; the same port again gets its address
    // back (a retried allocation is idempotent here; 2.0 answered an error).
    let other = json!({"name": "port-2", "host": "hv1", "tenant": project, "segment": "default"});
    let (st, ip2) = call_2017(M::POST, &format!("{url}/address"), Some(other)).await;
    assert_eq!(st, 200, "{ip2}");
    assert_ne!(ip2, json!(ip));
    let (st, again) = call_2017(M::POST, &format!("{url}/address"), Some(alloc.clone())).await;
    assert_eq!((st, again), (200, json!(ip)));

    // mech_romana.update_port_postcommit / delete_port_postcommit -> find_host_info: the host's
    // ip and agent_port, which the driver then calls (POST /vm, DELETE /vm/<mac>: vm.rs).
    let (st, hosts) = call_2017(M::GET, &urljoin(&format!("{url}/"), "/hosts"), None).await;
    assert_eq!(st, 200, "{hosts}");
    let hv1 = hosts["hosts"].as_array().unwrap().iter().find(|h| h["name"] == "hv1").cloned();
    let hv1 = hv1.unwrap_or_else(|| panic!("hv1 not in {hosts}"));
    assert_eq!((&hv1["ip"], &hv1["agent_port"]), (&json!("192.168.91.1"), &json!(9604)));

    // RomanaDbSubnet.deallocate -> romana_deallocate_ip_address: by address; errors swallowed.
    let (st, r) = call_2017(M::DELETE, &format!("{url}/address?addressName={ip}"), None).await;
    assert_eq!(st, 200, "{r}");
    assert!(!w.allocated(&ip).await, "released in romanad's IPAM");
    let (st, _) = call_2017(M::DELETE, &format!("{url}/address?addressName={ip}"), None).await;
    assert_eq!(st, 404, "a second release finds nothing (the driver ignores it)");
    let (st, _) = call_2017(M::DELETE, &format!("{url}/address?addressName=port-2"), None).await;
    assert_eq!(st, 200, "a release by the name the driver allocated under");

    // What does not pass, and why:
    // - a port without binding:host_id: the driver sends gethostname(), not a compute host;
    let (st, r) = call_2017(
        M::POST,
        &format!("{url}/address"),
        Some(json!({"name": "p3", "host": "neutron-server", "tenant": project, "segment": "default"})),
    )
    .await;
    assert_eq!(st, 404, "{r}");
    assert!(r.to_string().contains("neutron-server"), "{r}");
    // - a body without a name;
    let (st, r) =
        call_2017(M::POST, &format!("{url}/address"), Some(json!({"host": "hv1", "tenant": project}))).await;
    assert_eq!(st, 400, "{r}");
    assert!(r.to_string().contains("name"), "{r}");
    // - a Kubernetes namespace's tenant;
    w.k8s_tenant("ns2").await;
    let (st, r) = call_2017(
        M::POST,
        &format!("{url}/address"),
        Some(json!({"name": "p4", "host": "hv1", "tenant": "ns2", "segment": "default"})),
    )
    .await;
    assert_eq!(st, 403, "{r}");
    // - an address someone else allocated (with a token): not the driver's to release.
    let (st, b) = w
        .call(
            M::POST,
            "/address",
            Some(json!({"name": "tok1", "host": "hv1", "tenant": project, "segment": "default"})),
        )
        .await;
    assert_eq!(st, 200, "with a token, POST /address is ours: {b}");
    let tok_ip: String = serde_json::from_str(&b).unwrap();
    let (st, rec) = w.call(M::GET, "/addresses/tok1", None).await;
    assert_eq!(st, 200, "a token's allocation keeps its name: {rec}");
    let (st, _) = call_2017(M::DELETE, &format!("{url}/address?addressName={tok_ip}"), None).await;
    assert_eq!(st, 404);
    assert!(w.allocated(&tok_ip).await, "not released by the allowance");
}
