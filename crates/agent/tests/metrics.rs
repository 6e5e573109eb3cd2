//! The agent's scrape port (`--metrics-listen`) against docs/metrics.md: an agent process
//! programs a test namespace (two hosts as namespaces joined by a veth pair, romanad's services
//! in this process on 127.0.0.1); its `/metrics` on 127.0.0.1 must parse, serve exactly the
//! documented families, and each must move when its event happens (CNI ADD, DEL, CHECK and GC on
//! the socket, a policy write, a route change on the watch, a foreign change of the table, an
//! unreachable next hop, a removed host). Needs root; skips without.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use romana_api::rest::{AddressRequest, HostRequest, TenantRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_test_support::prom::{self, Scrape};
use romana_test_support::{HostPair, Netns, TempDir};
use serde_json::json;

/// No egress NAT: a masqueraded endpoint stays off the fast path (its packets need the nat hook),
/// and this test wants to see the fast path take one.
const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28,"nat_outgoing":false}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

/// Families this test cannot make move, and why; each is still checked to be served.
const NOT_DRIVEN: &[(&str, &str)] =
    &[("romana_agent_firewall_errors_total", "needs nftables to refuse a transaction the agent built")];

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port nobody listens on now (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP request on the agent's Unix socket (GET for a null body): (status, body).
async fn on_socket(socket: PathBuf, path: &'static str, body: serde_json::Value) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let method = if body.is_null() { "GET" } else { "POST" };
        let body = if body.is_null() { String::new() } else { body.to_string() };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let status = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
    })
    .await
    .unwrap()
}

async fn scrape(url: &str) -> Option<Scrape> {
    let text = romana_client::http().get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
    Some(prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// Waits until every family in `moves` is above its value in `before`.
async fn expect_moved(
    url: &str,
    event: &str,
    before: &Scrape,
    moves: &[&'static str],
    moved: &mut Vec<&'static str>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = scrape(url).await.unwrap();
        let stuck: Vec<String> = moves
            .iter()
            .filter(|f| now.value(f).unwrap_or(0.0) <= before.value(f).unwrap_or(0.0))
            .map(|f| format!("{f} (still {:?})", now.value(f)))
            .collect();
        if stuck.is_empty() {
            moved.extend(moves);
            return;
        }
        assert!(Instant::now() < deadline, "after {event}, these did not move: {stuck:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attach(netns: &Path, cid: &str, ip: Option<&str>) -> serde_json::Value {
    // One pod namespace holds every attachment: each container gets its own interface name.
    let ifname = if cid == "c1" { "eth0" } else { "eth1" };
    json!({"network": "rmm", "container_id": cid, "ifname": ifname, "netns": netns, "tenant": "t",
           "runtime_labels": true, "labels": {"app": "web"}, "ip": ip})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_every_documented_family_and_each_moves() {
    let Some(pair) = HostPair::new("rmm") else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let Some(pod) = Netns::new(&format!("rmm-{}-p", std::process::id())) else { return };
    let pod_path = PathBuf::from("/run/netns").join(&pod.0);
    let dir = TempDir::new("agent-metrics");
    let creds = dir.path().join("admin.credentials");
    romana_services::serve_loopback(
        "agent-metrics",
        Some(serde_json::from_str::<TopologyRequest>(FLAT).unwrap()),
        Some(creds.clone()),
    )
    .await
    .unwrap();
    let admin =
        Client::from_credentials(&serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap())
            .await
            .unwrap();
    let tenant = TenantRequest {
        name: "t".into(),
        external_id: "".into(),
        labels: Default::default(),
        isolation: "".into(),
    };
    admin.create_tenant(&tenant).await.unwrap();

    let socket = dir.path().join("agent.sock");
    let url = format!("http://127.0.0.1:{}", free_port());
    let listen = url.trim_start_matches("http://").to_owned();
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_romana-agent"))
            .args(["--host", "ha", "--host-ip", "192.168.88.1", "--netns", &pair.0.0, "--interval-ms", "200"])
            .args(["--policy-repair-ms", "200", "--metrics-listen", &listen])
            .arg("--socket")
            .arg(&socket)
            .arg("--credentials")
            .arg(&creds)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(s) = scrape(&url).await
            && s.value("romana_agent_reconciles_total").unwrap_or(0.0) > 0.0
            && socket.exists()
        {
            break s;
        }
        let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the agent never served {url}/metrics:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let health = romana_client::http().get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let documented = prom::documented_families(&prom::metrics_doc(), "romana-agent");
    assert!(documented.len() >= 20, "docs/metrics.md lists the agent's families: {documented:?}");
    assert_eq!(prom::compare(&first, &documented), Vec::<String>::new());

    let mut moved = vec!["romana_agent_reconciles_total"];
    let before = scrape(&url).await.unwrap();
    expect_moved(&url, "running", &before, &["romana_agent_route_convergence_seconds"], &mut moved).await;

    let before = scrape(&url).await.unwrap();
    let (status, body) = on_socket(socket.clone(), "/v1/cni/add", attach(&pod_path, "c1", None)).await;
    assert_eq!(status, 200, "ADD: {body}");
    // The endpoint count moves with the compile that confirms the ADD's endpoint pass.
    let m = [
        "romana_agent_cni_add_total",
        "romana_agent_cni_add_seconds",
        "romana_agent_firewall_elements",
        "romana_agent_firewall_endpoints",
    ];
    expect_moved(&url, "CNI ADD", &before, &m, &mut moved).await;
    // The fast path hands packets to c1 directly, where the kernel runs it (CNI STATUS says).
    let (_, status) = on_socket(socket.clone(), "/v1/status", serde_json::Value::Null).await;
    let fast: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    let blockers = &fast["fast_path"]["off_because"];
    if fast["fast_path"].is_object()
        && blockers.as_array().is_none_or(Vec::is_empty)
        && blockers.as_str().is_none()
    {
        expect_moved(&url, "CNI ADD", &before, &["romana_agent_fast_path_entries"], &mut moved).await;
    } else {
        eprintln!("fast path off here ({status}); romana_agent_fast_path_entries not driven");
        moved.push("romana_agent_fast_path_entries");
    }

    let before = scrape(&url).await.unwrap();
    let gone = dir.path().join("no-such-netns");
    let (status, _) = on_socket(socket.clone(), "/v1/cni/add", attach(&gone, "c9", None)).await;
    assert_ne!(status, 200);
    expect_moved(&url, "a failed CNI ADD", &before, &["romana_agent_cni_add_errors_total"], &mut moved).await;

    let before = scrape(&url).await.unwrap();
    let (status, _) =
        on_socket(socket.clone(), "/v1/cni/check", attach(&pod_path, "c1", Some("10.99.99.99"))).await;
    assert_ne!(status, 204);
    expect_moved(
        &url,
        "a CNI CHECK that differs",
        &before,
        &["romana_agent_cni_check_failures_total"],
        &mut moved,
    )
    .await;

    // A policy write: tenant isolation puts c1 under an ingress policy.
    let before = scrape(&url).await.unwrap();
    admin.update_tenant(&TenantRequest { isolation: "tenant".into(), ..tenant.clone() }).await.unwrap();
    let m = [
        "romana_agent_firewall_syncs_total",
        "romana_agent_firewall_sync_seconds",
        "romana_agent_firewall_rules",
        "romana_agent_firewall_policies",
        "romana_agent_firewall_policies_active",
    ];
    expect_moved(&url, "a policy write", &before, &m, &mut moved).await;

    // Someone deletes our table: the repair check reads the kernel's table and puts it back.
    let before = scrape(&url).await.unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &pair.0.0, "nft", "delete", "table", "inet", "romana"])
        .output()
        .unwrap();
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    let m = ["romana_agent_firewall_repairs_total", "romana_agent_firewall_reads_total"];
    expect_moved(&url, "a foreign change of the table", &before, &m, &mut moved).await;

    // Another host gets a block: ha's route set changes on the watch and the route is applied.
    let before = scrape(&url).await.unwrap();
    let peer = HostRequest {
        name: "hb".into(),
        ip: "192.168.88.2".into(),
        ipv6: None,
        agent_port: None,
        tags: Default::default(),
        k8s_info: None,
    };
    admin.add_host(&peer).await.unwrap();
    let req = AddressRequest {
        name: "pb".into(),
        host: "hb".into(),
        tenant: "t".into(),
        segment: "".into(),
        ip: None,
    };
    admin.allocate(&req, None).await.unwrap();
    let m = [
        "romana_agent_watch_events_total",
        "romana_agent_watch_lag_seconds",
        "romana_agent_routes",
        "romana_agent_plan_steps_total",
    ];
    expect_moved(&url, "a route change on the watch", &before, &m, &mut moved).await;

    let before = scrape(&url).await.unwrap();
    let (status, body) = on_socket(socket.clone(), "/v1/cni/add", attach(&pod_path, "c2", None)).await;
    assert_eq!(status, 200, "ADD c2: {body}");
    let (status, body) = on_socket(
        socket.clone(),
        "/v1/cni/gc",
        json!({"network": "rmm", "valid": [{"container_id": "c1", "ifname": "eth0"}]}),
    )
    .await;
    assert_eq!(status, 200, "GC: {body}");
    expect_moved(&url, "CNI GC of c2", &before, &["romana_agent_gc_removed_total"], &mut moved).await;

    let before = scrape(&url).await.unwrap();
    let (status, body) = on_socket(
        socket.clone(),
        "/v1/cni/del",
        json!({"network": "rmm", "container_id": "c1", "ifname": "eth0", "netns": pod_path}),
    )
    .await;
    assert!(status < 300, "DEL: {status} {body}");
    expect_moved(
        &url,
        "CNI DEL",
        &before,
        &["romana_agent_cni_del_total", "romana_agent_cni_del_seconds"],
        &mut moved,
    )
    .await;

    // A host whose address is not on any link of ha: the kernel refuses the route through it.
    let before = scrape(&url).await.unwrap();
    let far = HostRequest {
        name: "hc".into(),
        ip: "192.168.99.9".into(),
        ipv6: None,
        agent_port: None,
        tags: Default::default(),
        k8s_info: None,
    };
    admin.add_host(&far).await.unwrap();
    let req = AddressRequest {
        name: "pc".into(),
        host: "hc".into(),
        tenant: "t".into(),
        segment: "".into(),
        ip: None,
    };
    admin.allocate(&req, None).await.unwrap();
    expect_moved(
        &url,
        "a route the kernel refuses",
        &before,
        &["romana_agent_reconcile_errors_total"],
        &mut moved,
    )
    .await;

    // romanad forgets ha: its heartbeats are refused.
    let before = scrape(&url).await.unwrap();
    admin.remove_host("ha").await.unwrap();
    expect_moved(
        &url,
        "removing the agent's host",
        &before,
        &["romana_agent_heartbeat_errors_total"],
        &mut moved,
    )
    .await;

    let untested: Vec<&String> = documented
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !moved.contains(&n.as_str()) && !NOT_DRIVEN.iter().any(|(x, _)| x == n))
        .collect();
    assert!(untested.is_empty(), "documented families no event of this test moves: {untested:?}");
    drop(pod);
}

/// An address given with `--metrics-listen` must bind: the agent exits naming it (the default
/// address only warns, so several agents can share a machine).
#[test]
fn a_taken_explicit_address_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new("agent-metrics-taken");
    // Credentials are read before anything binds: a romanad is needed for the agent to get there.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let creds = dir.path().join("admin.credentials");
    let _g = rt.enter();
    rt.block_on(romana_services::serve_loopback(
        "agent-metrics-taken",
        Some(serde_json::from_str::<TopologyRequest>(FLAT).unwrap()),
        Some(creds.clone()),
    ))
    .unwrap();
    let out = rt.block_on(async {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_romana-agent"))
            .args([
                "--host",
                "hx",
                "--host-ip",
                "192.168.66.1",
                "--no-policy",
                "--no-fast-path",
                "--metrics-listen",
                &addr,
            ])
            .arg("--socket")
            .arg(dir.path().join("a.sock"))
            .arg("--credentials")
            .arg(&creds)
            .arg("--netns")
            .arg("rmm-none-such")
            .output()
            .await
            .unwrap()
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("binding --metrics-listen {addr}")), "{err}");
}
