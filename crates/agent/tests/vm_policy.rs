//! OpenStack VMs under tenant isolation: three VMs (namespaces behind tap-like veths) on one
//! agent's host namespace, two of project A (no isolation) and one of project B (isolated per
//! tenant). Once the agent has registered them as endpoints, A's VMs reach each other and B's
//! VM refuses A's traffic, as it would a pod's.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use romana_api::topology::TopologyRequest;
use romana_test_support::{Netns, TempDir};
use serde_json::json;

const FLAT: &str = r#"{"networks":[{"name":"vms","cidr":"10.31.0.0/16","block_mask":28}],"topologies":[{"networks":["vms"],"map":[{"groups":[]}]}]}"#;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(creds: &Path, netns: &str, listen: &str, dir: &Path) -> Agent {
    Agent(
        Command::new(env!("CARGO_BIN_EXE_romana-agent"))
            .args(["--host", "hv1", "--host-ip", "192.168.92.1", "--netns", netns, "--listen", listen])
            .arg("--socket")
            .arg(dir.join("agent.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--credentials")
            .arg(creds)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn ping(ns: &str, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W1", ip])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_under_tenant_isolation() {
    let pid = std::process::id();
    let Some(host) = Netns::new(&format!("rmp-{pid}-host")) else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("SKIP: nft is not installed");
        return;
    }
    let dir = TempDir::new("vmpol");
    let creds = dir.path().join("admin.credentials");
    let _url = romana_services::serve_loopback(
        "vm-policy",
        Some(serde_json::from_str::<TopologyRequest>(FLAT).unwrap()),
        Some(creds.clone()),
    )
    .await
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let vm_api = romana_client::Client::new(vec![format!("http://{listen}")]);
    let _a = agent(&creds, &host.0, &listen, dir.path());
    let start = Instant::now();
    while vm_api.send(reqwest::Method::GET, "/healthz", None).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "agent /vm API did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let doc: romana_api::rest::Credentials = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let admin = romana_client::Client::from_credentials(&doc).await.unwrap();
    let post = |path: &'static str, body: serde_json::Value| {
        let admin = &admin;
        async move {
            let r = admin.send(reqwest::Method::POST, path, Some(body)).await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
        }
    };
    post("/tenants", json!({"name": "proja", "external_id": "proja"})).await;
    post("/tenants/proja/segments", json!({"name": "net1"})).await;
    post("/tenants", json!({"name": "projb", "external_id": "projb", "isolation": "tenant"})).await;
    post("/tenants/projb/segments", json!({"name": "net1"})).await;

    // (namespace, tap, mac, address, tenant): allocated as the IPAM driver does, bound, started.
    let vms = [
        (Netns::new(&format!("rmp-{pid}-a1")).unwrap(), "tapa1", "fa:16:3e:00:01:01", "10.31.0.11", "proja"),
        (Netns::new(&format!("rmp-{pid}-a2")).unwrap(), "tapa2", "fa:16:3e:00:01:02", "10.31.0.12", "proja"),
        (Netns::new(&format!("rmp-{pid}-b1")).unwrap(), "tapb1", "fa:16:3e:00:02:01", "10.31.0.21", "projb"),
    ];
    for (ns, tap, mac, ip, tenant) in &vms {
        post(
            "/addresses",
            json!({"name": format!("port-{tap}"), "host": "hv1", "tenant": tenant, "segment": "net1", "ip": ip}),
        )
        .await;
        let r = vm_api
            .send(reqwest::Method::POST, "/vm", Some(json!({"interface": tap, "mac": mac, "ip": ip})))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        host.ip(&format!("link add {tap} type veth peer name eth0 netns {}", ns.0));
        ns.ip("link set eth0 up");
        ns.ip(&format!("addr add {ip}/32 dev eth0"));
        ns.ip("route add 169.254.1.1 dev eth0");
        ns.ip("route add default via 169.254.1.1 dev eth0");
    }
    // Every VM registered as an endpoint of its tenant.
    for (_, tap, _, ip, tenant) in &vms {
        let start = Instant::now();
        loop {
            let r = admin.send(reqwest::Method::GET, &format!("/endpoints/port-{tap}"), None).await.unwrap();
            if r.status().as_u16() == 200 {
                let e: serde_json::Value = r.json().await.unwrap();
                assert_eq!((&e["ip"], &e["tenant"]), (&json!(ip), &json!(tenant)));
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{tap} never registered: {}",
                std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (a1, a2, b1) = (&vms[0].0.0, &vms[1].0.0, &vms[2].0.0);
    // Same tenant, no isolation: reachable (once routed).
    let start = Instant::now();
    while !ping(a1, "10.31.0.12") {
        assert!(start.elapsed() < Duration::from_secs(30), "a1 cannot reach a2");
    }
    // B isolates per tenant: A's VM is refused once the firewall holds B's VM (and stays refused),
    // while A's VMs still reach each other and B's VM reaches its host.
    let start = Instant::now();
    while ping(a1, "10.31.0.21") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "another tenant's isolated VM stays reachable: {}",
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!ping(a1, "10.31.0.21"), "refused for good");
    assert!(!ping(a2, "10.31.0.21"), "refused from A's other VM too");
    assert!(ping(a2, "10.31.0.11"), "A's VMs still reach each other");
    assert!(ping(b1, "169.254.1.1"), "B's VM still reaches its gateway");
    // The control: with B's isolation off, A's VM reaches it again, so the refusal was policy.
    let r = admin
        .send(
            reqwest::Method::PUT,
            "/tenants/projb",
            Some(json!({"name": "projb", "external_id": "projb", "isolation": "none"})),
        )
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let start = Instant::now();
    while !ping(a1, "10.31.0.21") {
        assert!(start.elapsed() < Duration::from_secs(30), "B's VM stays refused without isolation");
    }

    // The VMs go: their records go with them.
    for (_, tap, mac, _, _) in &vms {
        let r = vm_api.send(reqwest::Method::DELETE, &format!("/vm/{mac}"), None).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let r = admin.send(reqwest::Method::GET, &format!("/endpoints/port-{tap}"), None).await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{tap}'s endpoint record stays");
    }
}
