//! OpenStack VM endpoints on the agent, as networking-romana calls them: a host namespace with a
//! "tap" (a veth whose other end is the VM's eth0 in a VM namespace), the agent serving `/vm` on
//! 127.0.0.1, both driver generations' bodies, bad input, and a delete after an agent restart.
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
    host.ip(&format!("link add tapvm1 type veth peer name eth0 netns {}", vm.0));
    vm.ip("link set eth0 up");
    vm.ip("addr add 10.30.0.5/32 dev eth0");
    vm.ip("route add 169.254.1.1 dev eth0");
    vm.ip("route add default via 169.254.1.1 dev eth0");
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

    // 2017 driver: POST /vm {interface, mac, ip}.
    let r = call(
        reqwest::Method::POST,
        "/vm",
        Some(json!({"interface": "tapvm1", "mac": "FA:16:3E:00:00:01", "ip": "10.30.0.5"})),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
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

    // Bad input names the problem; a tap that never appears is 404.
    let r = call(
        reqwest::Method::POST,
        "/vm",
        Some(json!({"interface": "tapvm1", "mac": "nope", "ip": "10.30.0.5"})),
    )
    .await;
    assert_eq!(r.0, 400);
    assert!(r.1.contains("mac"), "{}", r.1);
    let r = call(
        reqwest::Method::POST,
        "/vm",
        Some(json!({"interface": "tapvm1", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0"})),
    )
    .await;
    assert_eq!(r.0, 400);
    let r = call(
        reqwest::Method::POST,
        "/vm",
        Some(json!({"interface": "tapmissing", "mac": "fa:16:3e:00:00:09", "ip": "10.30.0.9"})),
    )
    .await;
    assert_eq!(r.0, 404);
    assert!(r.1.contains("tapmissing"), "{}", r.1);

    // The agent restarts; the delete still finds the VM (state file) and removes only our route.
    drop(a);
    a = agent(&creds, &host.0, &listen, dir.path(), "a2.log");
    let start = Instant::now();
    while http.send(reqwest::Method::GET, "/healthz", None).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "agent /vm API did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = call(reqwest::Method::DELETE, "/vm/fa:16:3e:00:00:01", None).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(route(&host.0, "10.30.0.5"), "");
    assert!(host.ip("-br link").contains("tapvm1"), "the tap is nova's: it stays");
    let r = call(reqwest::Method::DELETE, "/vm/fa:16:3e:00:00:01", None).await;
    assert_eq!(r.0, 404, "a second delete finds nothing");

    // 2016 driver: {interface_name, mac_address, ip_address}; DELETE /vm with a body.
    let r = call(reqwest::Method::POST, "/vm", Some(json!({"interface_name": "tapvm1", "mac_address": "fa:16:3e:00:00:02", "ip_address": "10.30.0.5"}))).await;
    assert_eq!(r.0, 200);
    assert!(route(&host.0, "10.30.0.5").contains("proto 77"));
    let r = call(reqwest::Method::DELETE, "/vm", Some(json!({"mac_address": "fa:16:3e:00:00:02"}))).await;
    assert_eq!(r.0, 200);
    assert_eq!(route(&host.0, "10.30.0.5"), "");
    drop(a);
}
