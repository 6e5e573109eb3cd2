//! OpenStack VM endpoints on the agent, as networking-romana calls them: a host namespace with a
//! "tap" (a veth whose other end is the VM's eth0 in a VM namespace), the agent serving `/vm` on
//! 127.0.0.1, both driver generations' bodies, bad input, and a delete after an agent restart.
//! Nova's order is kept: the port binds (`POST /vm`, answered at once) before the tap exists; the
//! agent routes the VM when the tap appears; a delete works before and after the tap exists.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use romana_api::topology::TopologyRequest;
use romana_test_support::{Netns, TempDir};
use serde_json::json;

const FLAT: &str = r#"{"networks":[{"name":"vms","cidr":"10.30.0.0/16","block_mask":28}],"topologies":[{"networks":["vms"],"map":[{"groups":[]}]}]}"#;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(creds: &Path, netns: &str, listen: &str, dir: &Path, log: &str) -> Agent {
    Agent(
        Command::new(env!("CARGO_BIN_EXE_romana-agent"))
            .args([
                "--host",
                "hv1",
                "--host-ip",
                "192.168.90.1",
                "--netns",
                netns,
                "--listen",
                listen,
                "--vm-wait-ms",
                "300",
            ])
            .arg("--socket")
            .arg(dir.join("agent.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--credentials")
            .arg(creds)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(log)).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn route(ns: &str, ip: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, "route", "show", &format!("{ip}/32")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// romanad's endpoint record of the test VM: (status, body).
async fn endpoint(admin: &romana_client::Client) -> (u16, String) {
    let r = admin.send(reqwest::Method::GET, "/endpoints/port-vm1", None).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
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
async fn openstack_vm_endpoints() {
    let pid = std::process::id();
    let Some(host) = Netns::new(&format!("rmv-{pid}-host")) else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let vm = Netns::new(&format!("rmv-{pid}-vm")).unwrap();
    let dir = TempDir::new("vm");
    let creds = dir.path().join("admin.credentials");
    let _url = romana_services::serve_loopback(
        "vm-test",
        Some(serde_json::from_str::<TopologyRequest>(FLAT).unwrap()),
        Some(creds.clone()),
    )
    .await
    .unwrap();
    // A free port on loopback for the agent's /vm API.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let http = romana_client::Client::new(vec![base.clone()]);
    let call = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let (http, path) = (&http, path.to_owned());
        async move {
            let r = http.send(method, &path, body).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let mut a = agent(&creds, &host.0, &listen, dir.path(), "a.log");
    let start = Instant::now();
    while http.send(reqwest::Method::GET, "/healthz", None).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "agent /vm API did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Neutron's IPAM driver allocated the VM's address in romanad (tenant = project, segment =
    // network, name = port id).
    let creds_doc: romana_api::rest::Credentials =
        serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let admin = romana_client::Client::from_credentials(&creds_doc).await.unwrap();
    for (path, body) in [
        ("/tenants", json!({"name": "proj1", "external_id": "proj1"})),
        ("/tenants/proj1/segments", json!({"name": "net1"})),
        (
            "/addresses",
            json!({"name": "port-vm1", "host": "hv1", "tenant": "proj1", "segment": "net1", "ip": "10.30.0.5"}),
        ),
    ] {
        let r = admin.send(reqwest::Method::POST, path, Some(body)).await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
    }
    assert_eq!(endpoint(&admin).await.0, 404, "not registered before it is plumbed");

    // 2017 driver: POST /vm {interface, mac, ip} while the tap does not exist yet: answered at once.
    let r = call(
        reqwest::Method::POST,
        "/vm",
        Some(json!({"interface": "tapvm1", "mac": "FA:16:3E:00:00:01", "ip": "10.30.0.5"})),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(route(&host.0, "10.30.0.5"), "", "no tap yet, so no route");
    let r = call(reqwest::Method::GET, "/vm", None).await;
    let listed: serde_json::Value = serde_json::from_str(&r.1).unwrap();
    assert_eq!(
        listed,
        json!([{"interface": "tapvm1", "mac": "fa:16:3e:00:00:01", "ip": "10.30.0.5", "plumbed": false}])
    );
    // Nova starts the VM: the tap appears, and the agent routes it.
    host.ip(&format!("link add tapvm1 type veth peer name eth0 netns {}", vm.0));
    vm.ip("link set eth0 up");
    vm.ip("addr add 10.30.0.5/32 dev eth0");
    vm.ip("route add 169.254.1.1 dev eth0");
    vm.ip("route add default via 169.254.1.1 dev eth0");
    let start = Instant::now();
    while route(&host.0, "10.30.0.5").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "the agent never routed the VM's tap");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(route(&host.0, "10.30.0.5"), "10.30.0.5 dev tapvm1 proto 77 scope link");
    let proxy = Command::new("ip")
        .args(["netns", "exec", &host.0, "cat", "/proc/sys/net/ipv4/conf/tapvm1/proxy_arp"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&proxy.stdout).trim(), "1", "proxy ARP on the tap");
    // The host and the VM reach each other (the VM's gateway is the host's romana-gw address).
    let start = Instant::now();
    while !ping(&vm.0, "169.254.1.1") {
        assert!(start.elapsed() < Duration::from_secs(10), "the VM cannot reach its gateway");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ping(&host.0, "10.30.0.5"), "the host reaches the VM");
    let r = call(reqwest::Method::GET, "/vm", None).await;
    assert!(r.1.contains(r#""plumbed":true"#), "{}", r.1);
    // Plumbed, the VM is an endpoint like a pod: its address's tenant, segment and host.
    let start = Instant::now();
    let rec = loop {
        let (st, body) = endpoint(&admin).await;
        if st == 200 {
            break serde_json::from_str::<serde_json::Value>(&body).unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the VM was never registered: {st} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (&rec["ip"], &rec["tenant"], &rec["segment"], &rec["host"], &rec["labels"]["romana.io/kind"]),
        (&json!("10.30.0.5"), &json!("proj1"), &json!("net1"), &json!("hv1"), &json!("vm"))
    );

    // Bad input names the problem.
    for (body, field) in [
        (json!({"interface": "tapvm1", "mac": "nope", "ip": "10.30.0.5"}), "mac"),
        (json!({"interface": "tapvm1", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0"}), "ip"),
        (json!({"interface": "tap/../x", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"}), "interface"),
        (
            json!({"interface": "tap0123456789abc", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"}),
            "interface",
        ),
        // The caller is unauthenticated: never the uplink, never one of our endpoint links.
        (json!({"interface": "eth0", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"}), "not a VM tap"),
        (
            json!({"interface": "romana0a1b2c3d4", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"}),
            "not a VM tap",
        ),
    ] {
        let r = call(reqwest::Method::POST, "/vm", Some(body.clone())).await;
        assert_eq!(r.0, 400, "{body}: {}", r.1);
        assert!(r.1.contains(field), "{body}: {}", r.1);
    }
    // A port bound and deleted before its VM ever started: both answered, nothing left.
    let r = call(
        reqwest::Method::POST,
        "/vm",
        Some(json!({"interface": "tapnever", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"})),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = call(reqwest::Method::DELETE, "/vm/fa:16:3e:00:00:09", None).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = call(reqwest::Method::GET, "/vm", None).await;
    assert!(!r.1.contains("tapnever"), "{}", r.1);
    assert_eq!(route(&host.0, "10.30.0.9"), "");

    // The agent restarts; the delete still finds the VM (state file) and removes only our route.
    drop(a);
    a = agent(&creds, &host.0, &listen, dir.path(), "a2.log");
    let start = Instant::now();
    while http.send(reqwest::Method::GET, "/healthz", None).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "agent /vm API did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (The restarted agent re-plumbs and re-registers what its state file holds.)
    let start = Instant::now();
    while !call(reqwest::Method::GET, "/vm", None).await.1.contains(r#""plumbed":true"#) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the restarted agent did not re-plumb: {}",
            std::fs::read_to_string(dir.path().join("a2.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = call(reqwest::Method::DELETE, "/vm/fa:16:3e:00:00:01", None).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(route(&host.0, "10.30.0.5"), "");
    assert_eq!(endpoint(&admin).await.0, 404, "the endpoint record goes with the VM");
    assert!(host.ip("-br link").contains("tapvm1"), "the tap is nova's: it stays");
    let r = call(reqwest::Method::DELETE, "/vm/fa:16:3e:00:00:01", None).await;
    assert_eq!(r.0, 404, "a second delete finds nothing");

    // 2016 driver: {interface_name, mac_address, ip_address}; DELETE /vm with a body.
    let r = call(reqwest::Method::POST, "/vm", Some(json!({"interface_name": "tapvm1", "mac_address": "fa:16:3e:00:00:02", "ip_address": "10.30.0.5"}))).await;
    assert_eq!(r.0, 200);
    let start = Instant::now();
    while !route(&host.0, "10.30.0.5").contains("proto 77") {
        assert!(start.elapsed() < Duration::from_secs(20), "the 2016 shape's VM was never routed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = call(reqwest::Method::DELETE, "/vm", Some(json!({"mac_address": "fa:16:3e:00:00:02"}))).await;
    assert_eq!(r.0, 200);
    assert_eq!(route(&host.0, "10.30.0.5"), "");
    drop(a);
}
