//! romana-agent's resident memory with 1,000 remote hosts: romanad's services in this process,
//! 1,000 hosts with a block each in one rack, and one agent process programming a network
//! namespace this benchmark creates (and deletes). Target: under 30 MiB.
//! `cargo bench -p romana-agent --bench rss` (`-- --quick`: 100 hosts).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use romana_api::rest::{AddressRequest, HostRequest};
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_test_support::{Netns, TempDir};

const TOPOLOGY: &str = r#"{"networks":[{"name":"pods","cidr":"10.0.0.0/8","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn host_ip(i: usize) -> String {
    format!("192.168.{}.{}", i / 250, i % 250 + 2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let hosts = if quick { 100 } else { 1_000 };
    let Some(ns) = Netns::new(&format!("rmb-{}-agent", std::process::id())) else {
        println!("SKIP: cannot create a network namespace (needs root and iproute2)");
        return;
    };
    for cmd in [
        "link add up0 type veth peer name up1",
        "addr add 192.168.200.1/16 dev up0",
        "link set up0 up",
        "link set up1 up",
    ] {
        ns.ip(cmd);
    }

    let dir = TempDir::new("agent-rss");
    let creds = dir.path().join("admin.credentials");
    let _url = romana_services::serve_loopback(
        "agent-bench",
        Some(serde_json::from_str::<TopologyRequest>(TOPOLOGY).expect("topology")),
        Some(creds.clone()),
    )
    .await
    .expect("romanad services start");
    let text = std::fs::read_to_string(&creds).expect("credentials");
    let admin = Client::from_credentials(&serde_json::from_str(&text).expect("json")).await.expect("login");
    for i in 0..hosts {
        let h = HostRequest {
            name: format!("h{i}"),
            ip: host_ip(i),
            ipv6: None,
            agent_port: None,
            tags: Default::default(),
            k8s_info: None,
        };
        admin.add_host(&h).await.expect("host");
        let a = AddressRequest {
            name: format!("pod-{i}"),
            host: format!("h{i}"),
            tenant: "t".into(),
            segment: String::new(),
            ip: None,
        };
        admin.allocate(&a, None).await.expect("address");
    }

    let start = Instant::now();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_romana-agent"))
        .args(["--host", "h0", "--netns", &ns.0])
        .arg("--socket")
        .arg(dir.path().join("agent.sock"))
        .arg("--credentials")
        .arg(&creds)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("romana-agent starts");
    let pid = agent.id();
    let want = hosts - 1;
    let count = || {
        let out =
            Command::new("ip").args(["-n", &ns.0, "route", "show", "proto", "77"]).output().expect("ip");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    while count() < want {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "agent never converged: {} of {want} routes",
            count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converged = start.elapsed();
    // Several more passes at the steady state before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, hwm) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    let _ = agent.kill();
    let _ = agent.wait();
    println!("remote hosts {want}, routes programmed {}", want);
    println!("| measure | romana-agent | target |");
    println!("|---|---|---|");
    println!("| resident memory at steady state (MiB) | {:.1} | < 30 |", rss as f64 / 1024.0);
    println!("| peak resident memory (MiB) | {:.1} | |", hwm as f64 / 1024.0);
    println!("| start to converged (s) | {:.2} | |", converged.as_secs_f64());
}
