//! The dual-stack underlay end to end (root): two hosts as network namespaces `rmu-<pid>-*`
//! joined by a veth pair carrying an IPv4 and an IPv6 underlay address each (no link leaves
//! them; every namespace is deleted by its guard), romanad's services in this process on
//! 127.0.0.1, one `romana-agent` per host registering both addresses (`--host-ipv6`). Each agent
//! programs the other host's IPv6 block via the other's IPv6 address (never an IPv4 next hop),
//! under our route protocol; pods plumbed by hand (as `romana-host`'s `dual_stack.rs` does) with
//! the addresses `POST /address-stacks` gave reach each other over IPv6 and IPv4; when a host
//! is removed its routes of both families leave the other's kernel.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use romana_api::rest::AddressRequest;
use romana_api::topology::TopologyRequest;
use romana_client::Client;
use romana_host::{EndpointSpec, IPV6_GATEWAY, PodAddress, attach, host_link_name};
use romana_test_support::{Netns, TempDir};

const DUAL: &str = r#"{"networks":[
  {"name":"pods4","cidr":"10.21.0.0/16","block_mask":28},
  {"name":"pods6","cidr":"fd00:21::/112","block_mask":124}],
  "topologies":[{"networks":["pods4","pods6"],"map":[{"groups":[]}]}]}"#;

/// An agent process, killed on drop.
struct Agent(Child);

impl Agent {
    fn start(creds: &Path, host: &str, ips: (&str, &str), netns: &str, log: &Path) -> Agent {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_romana-agent"))
            .args(["--host", host, "--host-ip", ips.0, "--host-ipv6", ips.1, "--netns", netns])
            .args(["--interval-ms", "200", "--no-policy", "--metrics-listen", "off"])
            .arg("--socket")
            .arg(log.with_extension("sock"))
            .arg("--credentials")
            .arg(creds)
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

fn our_routes(ns: &str, family: &str) -> String {
    let out = Command::new("ip").args(["-n", ns, family, "route", "show", "proto", "77"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pings(pod: &Netns, dst: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &pod.0, "ping", "-n", "-c", "2", "-W", "2", dst])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ns_path(ns: &Netns) -> PathBuf {
    PathBuf::from(format!("/run/netns/{}", ns.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_route_ipv6_over_the_ipv6_underlay() {
    let pid = std::process::id();
    let Some(a) = Netns::new(&format!("rmu-{pid}-a")) else {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let (b, pa, pb) = (
        Netns::new(&format!("rmu-{pid}-b")).unwrap(),
        Netns::new(&format!("rmu-{pid}-pa")).unwrap(),
        Netns::new(&format!("rmu-{pid}-pb")).unwrap(),
    );
    a.ip(&format!("link add eth0 type veth peer name eth0 netns {}", b.0));
    for (ns, n) in [(&a, 1), (&b, 2)] {
        ns.ip(&format!("addr add 192.168.89.{n}/24 dev eth0"));
        ns.ip(&format!("addr add fd89::{n}/64 dev eth0 nodad"));
        ns.ip("link set eth0 up");
    }

    let dir = TempDir::new("agent-dual");
    let creds = dir.path().join("admin.credentials");
    let _url = romana_services::serve_loopback(
        "agent-dual-test",
        Some(serde_json::from_str::<TopologyRequest>(DUAL).unwrap()),
        Some(creds.clone()),
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(&creds).unwrap();
    let admin = Client::from_credentials(&serde_json::from_str(&text).unwrap()).await.unwrap();
    let _agent_a = Agent::start(&creds, "ua", ("192.168.89.1", "fd89::1"), &a.0, &dir.path().join("a.log"));
    let _agent_b = Agent::start(&creds, "ub", ("192.168.89.2", "fd89::2"), &b.0, &dir.path().join("b.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin.hosts().await.unwrap().hosts.len() < 2 {
        assert!(Instant::now() < deadline, "agents never registered their hosts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(admin.host("ub").await.unwrap().ipv6.as_deref(), Some("fd89::2"));

    // One dual-stack endpoint per host.
    let mut pods = Vec::new();
    for h in ["ua", "ub"] {
        let req = AddressRequest {
            name: format!("pod-{h}"),
            host: h.into(),
            tenant: "t".into(),
            segment: String::new(),
            ip: None,
        };
        let got = admin.allocate_stack(&req).await.unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        pods.push((got[0].clone(), got[1].clone()));
    }
    let (a_ns, b_ns) = (a.0.clone(), b.0.clone());
    let to_b6 = format!("{} via fd89::2 dev eth0", pods[1].1.block);
    let to_a6 = format!("{} via fd89::1 dev eth0", pods[0].1.block);
    let to_b4 = format!("{} via 192.168.89.2 dev eth0", pods[1].0.block);
    wait_for("IPv6 routes on both hosts", 20, || {
        our_routes(&a_ns, "-6").contains(&to_b6) && our_routes(&b_ns, "-6").contains(&to_a6)
    })
    .await;
    wait_for("IPv4 routes", 20, || our_routes(&a_ns, "-4").contains(&to_b4)).await;

    // Pods plumbed by hand with the allocated addresses; the IPv4 gateway is the agent's default.
    let gw4: IpAddr = "169.254.1.1".parse().unwrap();
    for ((v4, v6), (host, pod)) in pods.iter().zip([(&a, &pa), (&b, &pb)]) {
        let spec = EndpointSpec {
            host_link: host_link_name(&v4.name, "eth0"),
            ifname: "eth0".into(),
            netns: ns_path(pod),
            addresses: vec![
                PodAddress { ip: v4.ip.parse().unwrap(), gateway: gw4 },
                PodAddress { ip: v6.ip.parse().unwrap(), gateway: IpAddr::V6(IPV6_GATEWAY) },
            ],
        };
        attach(Some(&ns_path(host)), &spec).unwrap();
    }
    assert!(pings(&pa, &pods[1].1.ip), "IPv6 pod on ua -> pod on ub");
    assert!(pings(&pb, &pods[0].1.ip), "IPv6 pod on ub -> pod on ua");
    assert!(pings(&pa, &pods[1].0.ip), "IPv4 pod on ua -> pod on ub");
    // An address of ub's block that nobody holds does not answer.
    let base: std::net::Ipv6Addr = pods[1].1.block.split('/').next().unwrap().parse().unwrap();
    let unheld = std::net::Ipv6Addr::from(u128::from(base) + 15).to_string();
    assert_ne!(unheld, pods[1].1.ip);
    assert!(!pings(&pa, &unheld), "{unheld} answered");

    // ub leaves: ua's kernel loses its routes of both families.
    admin.remove_host("ub").await.unwrap();
    wait_for("ua to withdraw ub's blocks", 20, || {
        !our_routes(&a_ns, "-6").contains(&to_b6) && !our_routes(&a_ns, "-4").contains(&to_b4)
    })
    .await;
}
