//! romana-agent end to end: two hosts as network namespaces joined by a veth pair (no link leaves
//! them), romanad's services in this process on 127.0.0.1, one agent process per host. Each host
//! gets routes to the other's blocks (planned from the kernel as the agent knows it; a route
//! deleted behind its back comes back at the recheck); killing one agent withdraws its routes
//! from the other host within the liveness budget, its own kernel keeps forwarding, and a
//! restarted agent changes nothing on its host.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use romana_api::rest::AddressRequest;
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_test_support::{Netns, TempDir};

const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

/// Two namespaces `rma-<pid>-a` and `rma-<pid>-b` joined by a veth pair; each deleted by its
/// guard.
struct Pair(Netns, Netns);

impl Pair {
    fn new() -> Option<Pair> {
        let a = Netns::new(&format!("rma-{}-a", std::process::id()))?;
        let b = Netns::new(&format!("rma-{}-b", std::process::id()))?;
        a.ip(&format!("link add eth0 type veth peer name eth0 netns {}", b.0));
        a.ip("addr add 192.168.88.1/24 dev eth0");
        b.ip("addr add 192.168.88.2/24 dev eth0");
        a.ip("link set eth0 up");
        b.ip("link set eth0 up");
        Some(Pair(a, b))
    }
}

/// An agent process, killed on drop.
struct Agent(Child);

impl Agent {
    fn start(creds: &Path, host: &str, ip: &str, netns: &str, log: &Path) -> Agent {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_romana-agent"))
            .args([
                "--host",
                host,
                "--host-ip",
                ip,
                "--netns",
                netns,
                "--interval-ms",
                "200",
                "--tag",
                "role=worker",
            ])
            .arg("--socket")
            .arg(log.with_extension("sock"))
            .arg("--credentials")
            .arg(creds)
            // The route passes' lines say whether the kernel was read for each.
            .env("RUST_LOG", "info,romana_agent::drive=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("romana-agent starts");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn our_routes(ns: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, "route", "show", "proto", "77"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_route_between_hosts_and_withdraw_dead_ones() {
    let Some(pair) = Pair::new() else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let dir = TempDir::new("agent");
    let creds = dir.path().join("admin.credentials");
    let _url = romana_services::serve_loopback(
        "agent-test",
        Some(serde_json::from_str::<TopologyRequest>(FLAT).unwrap()),
        Some(creds.clone()),
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(&creds).unwrap();
    let admin = Client::from_credentials(&serde_json::from_str(&text).unwrap()).await.unwrap();

    let _a = Agent::start(&creds, "ha", "192.168.88.1", &pair.0.0, &dir.path().join("a.log"));
    let mut b = Agent::start(&creds, "hb", "192.168.88.2", &pair.1.0, &dir.path().join("b.log"));
    // The agents register their hosts; then each gets an endpoint address (a block of its own).
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin.hosts().await.unwrap().hosts.len() < 2 {
        assert!(Instant::now() < deadline, "agents never registered their hosts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The agents registered their hosts with their tags.
    assert_eq!(admin.host("ha").await.unwrap().tags.get("role").map(String::as_str), Some("worker"));
    let mut blocks = Vec::new();
    for h in ["ha", "hb"] {
        let req = AddressRequest {
            name: format!("pod-{h}"),
            host: h.into(),
            tenant: "t".into(),
            segment: String::new(),
            ip: None,
        };
        let a = admin.allocate(&req, None).await.unwrap();
        blocks.push(a.block);
    }
    let (a_ns, b_ns) = (pair.0.0.clone(), pair.1.0.clone());
    let to_b = format!("{} via 192.168.88.2 dev eth0", blocks[1]);
    let to_a = format!("{} via 192.168.88.1 dev eth0", blocks[0]);
    wait_for("routes on both hosts", 20, || {
        our_routes(&a_ns).contains(&to_b) && our_routes(&b_ns).contains(&to_a)
    })
    .await;
    // A block that comes after ha's first converge (another tenant's, on hb): its route is
    // planned from the kernel as the agent knows it, without reading the kernel.
    let req = AddressRequest {
        name: "pod-hb-2".into(),
        host: "hb".into(),
        tenant: "t2".into(),
        segment: String::new(),
        ip: None,
    };
    let a_log = dir.path().join("a.log");
    let before = std::fs::read_to_string(&a_log).unwrap().len();
    let second = admin.allocate(&req, None).await.unwrap().block;
    assert_ne!(second, blocks[1]);
    let to_b2 = format!("{second} via 192.168.88.2 dev eth0");
    wait_for("ha to route to hb's second block", 20, || our_routes(&a_ns).contains(&to_b2)).await;
    // The pass that added it (logged once applied), after the allocation: one with steps.
    wait_for("ha's known-kernel pass in its log", 10, || {
        let log = std::fs::read_to_string(&a_log).unwrap();
        log[before..].lines().any(|l| l.contains("route pass, known kernel") && !l.contains("steps=0"))
    })
    .await;

    // A route of ours deleted behind the agent's back is put back by the recheck, which reads
    // the kernel (every 5 s).
    pair.0.ip(&format!("route del {} proto 77", blocks[1]));
    assert!(!our_routes(&a_ns).contains(&to_b));
    let back =
        wait_for("ha's recheck to put hb's route back", 12, || our_routes(&a_ns).contains(&to_b)).await;
    println!("a deleted route put back after {:.2} s (recheck every 5 s)", back.as_secs_f64());

    // hb's agent dies: ha loses the route to hb within the liveness budget; hb's kernel keeps
    // its routes (nothing flushes them).
    b.0.kill().unwrap();
    b.0.wait().unwrap();
    let withdrawn = wait_for("ha to withdraw hb's block", 10, || !our_routes(&a_ns).contains(&to_b)).await;
    println!("hb's block withdrawn on ha {:.2} s after its agent died (lease 2 s)", withdrawn.as_secs_f64());
    assert!(our_routes(&b_ns).contains(&to_a), "a dead agent's host keeps forwarding");

    // hb's agent comes back: ha routes to it again, and the restart changed nothing on hb.
    let b_log = dir.path().join("b2.log");
    let _b2 = Agent::start(&creds, "hb", "192.168.88.2", &pair.1.0, &b_log);
    wait_for("ha to route to hb again", 20, || our_routes(&a_ns).contains(&to_b)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let log = std::fs::read_to_string(&b_log).unwrap();
    assert!(
        !log.contains("add route") && !log.contains("delete route") && !log.contains("replace route"),
        "a restarted agent converged without changing routes: {log}"
    );
    assert!(our_routes(&b_ns).contains(&to_a));
}
