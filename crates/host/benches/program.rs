//! Route programming over netlink: a plan of N routes applied by `Kernel` in a network namespace
//! this benchmark creates (and deletes), against iproute2's `ip -batch` adding the same routes in
//! the same run; then a steady-state reconcile (observe + diff, nothing to do).
//! `cargo bench -p romana-host --bench program` (`-- --quick` for a short run).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::Instant;

use romana_dataplane::{HostState, NextHop, ROUTE_PROTOCOL, diff};
use romana_host::{Kernel, in_netns};
use romana_model::Cidr;
use romana_test_support::Netns;

/// A namespace `rmb-<pid>-<tag>` with one veth pair, its uplink on 192.168.77.1/24; `None`
/// when namespaces cannot be made here.
fn netns(tag: &str) -> Option<Netns> {
    let ns = Netns::new(&format!("rmb-{}-{tag}", std::process::id()))?;
    for cmd in [
        "link add up0 type veth peer name up1",
        "addr add 192.168.77.1/24 dev up0",
        "link set up0 up",
        "link set up1 up",
    ] {
        ns.ip(cmd);
    }
    Some(ns)
}

fn dest(i: usize) -> Cidr {
    Cidr::host(IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32)))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 1_000 } else { 10_000 };
    let via: IpAddr = "192.168.77.2".parse().expect("literal");
    let mut desired = HostState::default();
    for i in 0..n {
        desired.routes.insert(dest(i), NextHop::Via(via));
    }

    // Baseline first: iproute2 in one process, reading a batch.
    let Some(base) = netns("ip") else {
        println!("SKIP: cannot create a network namespace (needs root and iproute2)");
        return;
    };
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!("route add {} via {via} proto {ROUTE_PROTOCOL}\n", dest(i)));
    }
    let t = Instant::now();
    let mut child = Command::new("ip")
        .args(["-n", &base.0, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ip runs");
    child.stdin.take().expect("piped").write_all(batch.as_bytes()).expect("batch written");
    assert!(child.wait().expect("ip exits").success(), "ip -batch failed");
    let ip_secs = t.elapsed().as_secs_f64();
    drop(base);

    let ours = netns("romana").expect("a second namespace, as the first");
    let (apply_secs, steady_secs, observed) = in_netns(&ours.0, move || async move {
        let mut k = Kernel::connect().expect("netlink");
        let observed = k.observe().await.expect("observe");
        let plan = diff(&observed, &desired);
        let t = Instant::now();
        k.apply(&plan).await.expect("apply");
        let apply = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let now = k.observe().await.expect("observe");
        let again = diff(&now, &desired);
        let steady = t.elapsed().as_secs_f64();
        assert!(again.is_empty(), "converged");
        (apply, steady, now.routes.len())
    })
    .expect("namespace");
    assert_eq!(observed, n);

    println!("routes {n}");
    println!("| measure | romana-host | ip -batch | ratio |");
    println!("|---|---|---|---|");
    println!("| add {n} routes (s) | {apply_secs:.3} | {ip_secs:.3} | {:.2} |", apply_secs / ip_secs);
    println!("| routes/s | {:.0} | {:.0} | |", n as f64 / apply_secs, n as f64 / ip_secs);
    println!("| steady-state reconcile, observe + diff (ms) | {:.1} | - | |", steady_secs * 1e3);
}
