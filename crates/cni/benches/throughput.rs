//! Cross-host pod-to-pod TCP throughput (iperf3): Romana's routed path (pod -> host -> underlay
//! -> host -> pod, no encapsulation) against a plain veth pair joining the same two pod
//! namespaces directly, and against a VXLAN overlay between the same hosts (iproute2; underlay MTU
//! raised so the overlay does not fragment). Rounds alternate so machine noise hits all paths.
//! Everything runs in namespaces this benchmark creates and deletes.
//! `cargo build --release -p romana-agent && cargo bench -p romana-cni --bench throughput`
//! (`-- --quick`: 1 s per run, 1 round).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};

use common::{agent, cni, conf, iperf, ping, wait_for};
use romana_tests_support::{HostPair, Netns, TempDir};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (secs, rounds) = if quick { (1, 1) } else { (3, 3) };
    if !Command::new("iperf3").arg("-v").stdout(Stdio::null()).status().is_ok_and(|s| s.success()) {
        println!("SKIP: iperf3 missing (scripts/setup.sh installs it)");
        return;
    }
    let Some(hosts) = HostPair::new("rmb") else {
        println!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let pid = std::process::id();
    let p1 = Netns::new(&format!("rmb-{pid}-tp1")).expect("pod namespace");
    let p2 = Netns::new(&format!("rmb-{pid}-tp2")).expect("pod namespace");
    // Room for VXLAN's 50 bytes, so the overlay runs at full pod MTU (its best case).
    hosts.0.ip("link set eth0 mtu 1600");
    hosts.1.ip("link set eth0 mtu 1600");
    let dir = TempDir::new("throughput");
    let creds = common::romanad(dir.path()).await;
    let sock = [dir.path().join("a.sock"), dir.path().join("b.sock")];
    let _a = agent(&creds, "ha", "192.168.88.1", &hosts.0.0, &sock[0], &dir.path().join("a.log"));
    let _b = agent(&creds, "hb", "192.168.88.2", &hosts.1.0, &sock[1], &dir.path().join("b.log"));
    wait_for("agents ready", 30, || {
        cni("STATUS", "", "", &conf("1.1.0", &sock[0]), "").0 == 0
            && cni("STATUS", "", "", &conf("1.1.0", &sock[1]), "").0 == 0
    })
    .await;
    let add = |cid: &str, ns: &Netns, s: &std::path::Path| {
        let (rc, r) = cni("ADD", cid, &format!("/run/netns/{}", ns.0), &conf("1.0.0", s), "");
        assert_eq!(rc, 0, "ADD {cid}: {r}");
        r["ips"][0]["address"].as_str().expect("address").split('/').next().expect("ip").to_owned()
    };
    let ip1 = add("tp1", &p1, &sock[0]);
    let ip2 = add("tp2", &p2, &sock[1]);
    wait_for("pod1 reaches pod2 across hosts", 30, || ping(&p1.0, &ip2)).await;

    // Plain path: a veth pair straight between the two pod namespaces.
    p1.ip(&format!("link add pv0 type veth peer name pv1 netns {}", p2.0));
    p1.ip("addr add 192.168.99.1/30 dev pv0");
    p2.ip("addr add 192.168.99.2/30 dev pv1");
    p1.ip("link set pv0 up");
    p2.ip("link set pv1 up");

    // Overlay path: VXLAN between the hosts; /32s for the two pods via the tunnel override the
    // routed block routes while it is measured, and are removed after.
    for (h, local, remote, addr) in [
        (&hosts.0, "192.168.88.1", "192.168.88.2", "172.31.0.1/30"),
        (&hosts.1, "192.168.88.2", "192.168.88.1", "172.31.0.2/30"),
    ] {
        h.ip(&format!("link add rmvx0 type vxlan id 42 local {local} remote {remote} dstport 4789 dev eth0"));
        h.ip(&format!("addr add {addr} dev rmvx0"));
        h.ip("link set rmvx0 up");
    }
    let overlay = |on: bool| {
        let verb = if on { "add" } else { "del" };
        hosts.0.ip(&format!("route {verb} {ip2}/32 via 172.31.0.2 dev rmvx0"));
        hosts.1.ip(&format!("route {verb} {ip1}/32 via 172.31.0.1 dev rmvx0"));
    };

    let (mut routed, mut plain, mut vxlan) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        routed.push(iperf(&p2.0, &p1.0, &ip2, secs));
        plain.push(iperf(&p2.0, &p1.0, "192.168.99.2", secs));
        overlay(true);
        vxlan.push(iperf(&p2.0, &p1.0, &ip2, secs));
        overlay(false);
    }
    let (r, p, v) = (median(routed), median(plain), median(vxlan));
    println!(
        "pod-to-pod TCP throughput across two hosts, iperf3 {secs} s x {rounds} rounds (median, Gbit/s)"
    );
    println!("  romana (routed, no overlay)   {r:>7.2}");
    println!("  plain veth between the pods   {p:>7.2}");
    println!("  VXLAN overlay between hosts   {v:>7.2}");
    println!("ratio romana/plain {:.2} (target >= 0.95), romana/vxlan {:.2}", r / p, r / v);
}
