//! Cross-host pod-to-pod TCP throughput (iperf3) and CPU per byte: Romana's routed path (pod ->
//! host -> underlay -> host -> pod, no encapsulation; with the agents' fast path, which hands
//! packets to the far end of the veth underlay as if they had crossed it), the same with the
//! underlay transmitting them (as out of a NIC: an empty clsact qdisc on each host's uplink turns
//! the hand-off off), the routed path through the kernel's forwarding only (a second underlay
//! link without the fast path), a plain veth pair joining the same two pod namespaces directly,
//! and a VXLAN overlay between the same hosts (iproute2; underlay MTU raised so the overlay does
//! not fragment). The same pods over IPv6: the CNI ADD makes them dual-stack (romanad with an IPv4
//! and an IPv6 network, hosts with an IPv6 underlay address), so Romana's routed IPv6 path is the
//! agents' own (the pod's /128 through its host link, the link-local gateway `fe80::1`, block
//! routes via the other host's IPv6 underlay address, the fast path's IPv6 map), against the plain
//! veth over IPv6. Rounds alternate their order so machine noise hits all paths; ratios are per
//! round.
//! Everything runs in namespaces this benchmark creates and deletes.
//! `cargo build --release -p romana-agent && cargo bench -p romana-cni --bench throughput`
//! (`-- --quick`: 1 s per run, 2 rounds; `ROMANA_BENCH_NO_FAST_PATH_SEND=1`: agents with
//! `--no-fast-path-send`; `ROMANA_BENCH_HOLD=FILE`: set up, then wait while FILE exists before
//! measuring, for a profile of one path driven by hand).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};

use common::{agent_metric, agent_with, cni, conf, handoffs, iperf, nft_in, ping, wait_for};
use romana_test_support::{HostPair, Netns, TempDir};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (secs, rounds) = if quick { (1, 2) } else { (3, 8) };
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
    let creds = common::romanad_with(dir.path(), common::DUAL).await;
    let sock = [dir.path().join("a.sock"), dir.path().join("b.sock")];
    // `ROMANA_BENCH_NO_FAST_PATH_SEND=1`: the agents leave the pods' outgoing traffic to the
    // kernel's forwarding path (`--no-fast-path-send`; packets to the pods keep the fast path).
    let no_send = std::env::var_os("ROMANA_BENCH_NO_FAST_PATH_SEND").is_some();
    let extra: &[&str] = if no_send { &["--no-fast-path-send"] } else { &[] };
    println!("agents {}", if no_send { "with --no-fast-path-send" } else { "as by default" });
    // Each host's IPv6 underlay address, on the same link as its IPv4 one.
    let (la, lb) = (dir.path().join("a.log"), dir.path().join("b.log"));
    hosts.0.ip("addr add fd88::1/64 dev eth0 nodad");
    hosts.1.ip("addr add fd88::2/64 dev eth0 nodad");
    let extra_a = [extra, &["--host-ipv6", "fd88::1"]].concat();
    let extra_b = [extra, &["--host-ipv6", "fd88::2"]].concat();
    let _a = agent_with(&creds, "ha", "192.168.88.1", &hosts.0.0, &sock[0], &la, &extra_a);
    let _b = agent_with(&creds, "hb", "192.168.88.2", &hosts.1.0, &sock[1], &lb, &extra_b);
    wait_for("agents ready", 30, || {
        cni("STATUS", "", "", &conf("1.1.0", &sock[0]), "").0 == 0
            && cni("STATUS", "", "", &conf("1.1.0", &sock[1]), "").0 == 0
    })
    .await;
    // Dual-stack pods: the IPv4 address first, then the IPv6 one.
    let add = |cid: &str, ns: &Netns, s: &std::path::Path| {
        let (rc, r) = cni("ADD", cid, &format!("/run/netns/{}", ns.0), &conf("1.0.0", s), "");
        assert_eq!(rc, 0, "ADD {cid}: {r}");
        let ips = common::result_ips(&r);
        assert!(
            ips.len() == 2 && ips[0].is_ipv4() && ips[1].is_ipv6(),
            "ADD {cid}: one address per family: {r}"
        );
        (ips[0].to_string(), ips[1].to_string())
    };
    let (ip1, ip1_6) = add("tp1", &p1, &sock[0]);
    let (ip2, ip2_6) = add("tp2", &p2, &sock[1]);
    wait_for("pod1 reaches pod2 across hosts", 30, || ping(&p1.0, &ip2)).await;
    wait_for("pod1 reaches pod2 over IPv6", 30, || ping(&p1.0, &ip2_6)).await;
    if !no_send {
        // Endpoint links get `romana_send` once the CNI path has been quiet for a moment.
        wait_for("romana_send on both pods' links", 30, || {
            common::programs(&hosts.0.0, "romana") == ["romana_send"]
                && common::programs(&hosts.1.0, "romana") == ["romana_send"]
        })
        .await;
    }
    // Two entries each: the pod's IPv4 and IPv6 addresses.
    wait_for("the fast path holds each host's pod, both families", 30, || {
        agent_metric(&sock[0], "romana_agent_fast_path_entries") == 2.0
            && agent_metric(&sock[1], "romana_agent_fast_path_entries") == 2.0
    })
    .await;

    // Plain path: a veth pair straight between the two pod namespaces.
    p1.ip(&format!("link add pv0 type veth peer name pv1 netns {}", p2.0));
    p1.ip("addr add 192.168.99.1/30 dev pv0");
    p2.ip("addr add 192.168.99.2/30 dev pv1");
    p1.ip("link set pv0 up");
    p2.ip("link set pv1 up");
    p1.ip("addr add fd99::1/64 dev pv0 nodad");
    p2.ip("addr add fd99::2/64 dev pv1 nodad");

    wait_for("pod1 reaches pod2 over the plain veth's IPv6", 30, || ping(&p1.0, "fd99::2")).await;

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

    // Kernel path: a second link between the hosts that does not hold their addresses, so the
    // agents' fast path is not on it; /32s for the two pods through it override the
    // block routes while it is measured, so both hosts forward in the kernel as before the fast
    // path (ip_rcv, forward, one more veth crossing into the pod).
    hosts.0.ip(&format!("link add eth1 type veth peer name eth1 netns {}", hosts.1.0));
    hosts.0.ip("addr add 192.168.89.1/24 dev eth1");
    hosts.1.ip("addr add 192.168.89.2/24 dev eth1");
    hosts.0.ip("link set eth1 up");
    hosts.1.ip("link set eth1 up");
    let kernel_path = |on: bool| {
        let verb = if on { "add" } else { "del" };
        hosts.0.ip(&format!("route {verb} {ip2}/32 via 192.168.89.2 dev eth1"));
        hosts.1.ip(&format!("route {verb} {ip1}/32 via 192.168.89.1 dev eth1"));
    };

    // Routed, the uplinks transmitting: anything on an uplink's transmit side turns the hand-off
    // off (`romana_dataplane::fastpath::handoff`); an empty clsact qdisc costs next to nothing.
    let transmit = |on: bool| {
        for h in [&hosts.0, &hosts.1] {
            common::clsact(&h.0, if on { "add" } else { "del" });
        }
    };
    let handing_off =
        |want: bool| sock.iter().all(|s| handoffs(s).iter().all(|(n, h)| n != "eth0" || *h == want));
    wait_for("both agents hand packets to the far end of eth0", 30, || handing_off(true)).await;

    // Seven paths between the same pods. Each round measures all seven, in the order A B C ... G
    // then G ... C B A, so that drift and each swap's after-effects fall on every path alike; ratios are
    // taken within a round, then their median. The agents keep running: on a cluster without
    // isolation their tables have no hooks (docs/policy.md, "Cost"), which the output shows, and
    // each host hands the other's packets to its pod with the fast path.
    for (h, sock) in [(&hosts.0, &sock[0]), (&hosts.1, &sock[1])] {
        let hooks = nft_in(&h.0, "list table inet romana").matches("hook ").count();
        let fast = agent_metric(sock, "romana_agent_fast_path_entries");
        let on = |prefix: &'static str| common::programs(&h.0, prefix).join(",");
        println!(
            "  host {}: {hooks} romana base chains, {fast} fast path entries; programs: uplink [{}], pod link [{}]; hand-off {:?}",
            h.0,
            on("eth0"),
            on("romana"),
            handoffs(sock)
        );
    }
    // `ROMANA_BENCH_HOLD=FILE`: once everything is set up, wait while FILE exists, so that a
    // profiler (docs/benchmarks.md) can drive its own iperf3 between the pods on one path.
    if let Some(hold) = std::env::var_os("ROMANA_BENCH_HOLD") {
        println!(
            "holding while {} exists: pods {} ({ip1}, {ip1_6}) and {} ({ip2}, {ip2_6}), hosts {} and {}",
            hold.to_string_lossy(),
            p1.0,
            p2.0,
            hosts.0.0,
            hosts.1.0
        );
        while std::path::Path::new(&hold).exists() {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    const N: usize = 7;
    let paths = [
        "routed",
        "plain",
        "vxlan",
        "routed, kernel path",
        "routed, uplink transmits",
        "routed IPv6",
        "plain IPv6",
    ];
    let mut gbps: Vec<[f64; N]> = Vec::new();
    let mut cost: Vec<[f64; N]> = Vec::new();
    for round in 0..rounds {
        let (mut row, mut cpu) = ([0.0; N], [0.0; N]);
        let mut order: Vec<usize> = (0..N).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            match i {
                2 => overlay(true),
                3 => kernel_path(true),
                4 => {
                    transmit(true);
                    wait_for("the hand-off off", 30, || handing_off(false)).await;
                }
                _ => {}
            }
            let ip = match i {
                1 => "192.168.99.2",
                5 => &ip2_6,
                6 => "fd99::2",
                _ => &ip2,
            };
            let busy = common::busy_seconds();
            row[i] = iperf(&p2.0, &p1.0, ip, secs);
            // CPU seconds per GB: Gbit/s x seconds / 8 gigabytes moved.
            cpu[i] = (common::busy_seconds() - busy) / (row[i] * f64::from(secs) / 8.0);
            match i {
                2 => overlay(false),
                3 => kernel_path(false),
                4 => {
                    transmit(false);
                    wait_for("the hand-off back on", 30, || handing_off(true)).await;
                }
                _ => {}
            }
        }
        println!(
            "  round {round}: {} Gbit/s; {} CPU s/GB",
            row.map(|v| format!("{v:.2}")).join(" "),
            cpu.map(|v| format!("{v:.3}")).join(" ")
        );
        gbps.push(row);
        cost.push(cpu);
    }

    let col = |i: usize| median(gbps.iter().map(|r| r[i]).collect());
    let ratio = |i: usize, j: usize| median(gbps.iter().map(|r| r[i] / r[j]).collect());
    let cpu_ratio = |i: usize, j: usize| median(cost.iter().map(|r| r[i] / r[j]).collect());
    println!(
        "pod-to-pod TCP throughput across two hosts, iperf3 {secs} s x {rounds} rounds (median, Gbit/s)"
    );
    let cpu = |i: usize| median(cost.iter().map(|r| r[i]).collect());
    println!("  {:<22} {:>7} {:>10}", "path", "Gbit/s", "CPU s/GB");
    for (i, name) in paths.iter().enumerate() {
        println!("  {name:<22} {:>7.2} {:>10.3}", col(i), cpu(i));
    }
    println!(
        "median per-round ratios: routed/plain {:.3} (target >= 0.95), uplink transmits/plain {:.3}, routed/vxlan {:.3}, \
         routed/kernel path {:.3}; CPU per byte routed/plain {:.3}, uplink transmits/plain {:.3}, kernel path/routed {:.3}",
        ratio(0, 1),
        ratio(4, 1),
        ratio(0, 2),
        ratio(0, 3),
        cpu_ratio(0, 1),
        cpu_ratio(4, 1),
        cpu_ratio(3, 0)
    );
    println!(
        "IPv6: routed/plain {:.3} (target >= 0.95), routed IPv6/routed IPv4 {:.3}, IPv4 kernel path/plain {:.3}; \
         CPU per byte routed/plain {:.3}",
        ratio(5, 6),
        ratio(5, 0),
        ratio(3, 1),
        cpu_ratio(5, 6)
    );
}
