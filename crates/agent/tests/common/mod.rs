//! Shared by the agent's OpenStack VM tests (`vm.rs`, `vm_policy.rs`): romanad's services in the
//! test process on 127.0.0.1, a host namespace whose romana-agent serves `/vm` on a free loopback
//! port, "VMs" as namespaces behind tap-like veths, and the probes. Every namespace is named with
//! the test's prefix and pid and deleted by its guard, even when the test fails.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use romana_api::topology::TopologyRequest;
use romana_test_support::{Netns, TempDir};

/// An agent process, killed on drop.
pub struct Agent(pub Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One compute host: its namespace, romanad (in this process) with an admin client, and the
/// address the agent's `/vm` API listens on.
pub struct VmHost {
    pub host: Netns,
    pub dir: TempDir,
    pub creds: PathBuf,
    pub admin: romana_client::Client,
    /// The agent's `/vm` API (no token, as the drivers call it).
    pub vm_api: romana_client::Client,
    pub listen: String,
    host_ip: String,
}

/// A flat topology of one network `vms` with `cidr`.
fn flat(cidr: &str) -> TopologyRequest {
    let doc = format!(
        r#"{{"networks":[{{"name":"vms","cidr":"{cidr}","block_mask":28}}],"topologies":[{{"networks":["vms"],"map":[{{"groups":[]}}]}}]}}"#
    );
    serde_json::from_str(&doc).unwrap()
}

impl VmHost {
    /// Namespace `<prefix>-<pid>-host` and romanad with network `cidr`; `None` (the caller skips)
    /// without root or iproute2.
    pub async fn new(prefix: &str, cidr: &str, host_ip: &str) -> Option<VmHost> {
        let Some(host) = Netns::new(&format!("{prefix}-{}-host", std::process::id())) else {
            eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
            return None;
        };
        let dir = TempDir::new(prefix);
        let creds = dir.path().join("admin.credentials");
        let _url =
            romana_services::serve_loopback(prefix, Some(flat(cidr)), Some(creds.clone())).await.unwrap();
        let doc: romana_api::rest::Credentials =
            serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
        let admin = romana_client::Client::from_credentials(&doc).await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let vm_api = romana_client::Client::new(vec![format!("http://{listen}")]);
        Some(VmHost { host, dir, creds, admin, vm_api, listen, host_ip: host_ip.to_owned() })
    }

    /// romana-agent for host `hv1` in the host namespace, its log in `log` (in the test's
    /// directory), with `extra` flags; waits until its `/vm` API answers.
    pub async fn agent(&self, log: &str, extra: &[&str]) -> Agent {
        let dir = self.dir.path();
        let a = Agent(
            Command::new(env!("CARGO_BIN_EXE_romana-agent"))
                .args(["--host", "hv1", "--host-ip", &self.host_ip, "--netns", &self.host.0])
                .args(["--listen", &self.listen])
                .args(extra)
                .arg("--socket")
                .arg(dir.join("agent.sock"))
                .arg("--state-dir")
                .arg(dir.join("state"))
                .arg("--credentials")
                .arg(&self.creds)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(log)).unwrap())
                .spawn()
                .unwrap(),
        );
        let start = Instant::now();
        while self.vm_api.send(reqwest::Method::GET, "/healthz", None).await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "agent /vm API did not come up: {}",
                self.log(log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a
    }

    /// An agent log of this test, for failure messages.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// An admin call: (status, body).
    pub async fn call(
        &self,
        m: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        let r = self.admin.send(m, path, body).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// An admin POST that must succeed (what Neutron's drivers set up before a VM binds).
    pub async fn post(&self, path: &str, body: serde_json::Value) {
        let (st, b) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&st), "{path}: {st} {b}");
    }

    /// A call to the agent's `/vm` API: (status, body).
    pub async fn vm(&self, m: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> (u16, String) {
        let r = self.vm_api.send(m, path, body).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Nova starts a VM: its tap `tap` in the host namespace, the other end the VM's `eth0` with
    /// `ip`/32 and a default route through the link-local gateway answered by proxy ARP.
    pub fn start_vm(&self, vm: &Netns, tap: &str, ip: &str) {
        self.host.ip(&format!("link add {tap} type veth peer name eth0 netns {}", vm.0));
        vm.ip("link set eth0 up");
        vm.ip(&format!("addr add {ip}/32 dev eth0"));
        vm.ip("route add 169.254.1.1 dev eth0");
        vm.ip("route add default via 169.254.1.1 dev eth0");
    }

    /// romanad's endpoint record `name`: (status, body).
    pub async fn endpoint(&self, name: &str) -> (u16, String) {
        self.call(reqwest::Method::GET, &format!("/endpoints/{name}"), None).await
    }

    /// Waits until endpoint `name` is registered and returns its record.
    pub async fn registered(&self, name: &str, log: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let (st, body) = self.endpoint(name).await;
            if st == 200 {
                return serde_json::from_str(&body).unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} never registered: {st} {body}\n{}",
                self.log(log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Our /32 route to `ip` in namespace `ns` (empty when there is none).
pub fn route(ns: &str, ip: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, "route", "show", &format!("{ip}/32")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One ping from namespace `ns` to `ip` (one second at most).
pub fn ping(ns: &str, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W1", ip])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Polls `f` until it holds, failing with `what` after `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
