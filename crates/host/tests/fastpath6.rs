//! The fast path over IPv6 against a real kernel, in namespaces this test creates and deletes
//! even when it fails (`rm6-<pid>-*`: a remote host, a host, two pods; no link leaves them): the
//! host's uplink and pods' veths carry only IPv6 (the pods' /128s with the link-local gateway
//! `fe80::1`, as Romana plumbs them). Packets from the remote host reach a pod in the map past the
//! host's forwarding path with hop limit 63; the pod's packets to the remote host and to the other
//! pod on the host skip it too; a pod not in the map, fragments (an extension header) and hop
//! limit 1 (answered with time exceeded) take the kernel's path; neighbour discovery works with
//! the programs attached.

use std::process::Command;

use romana_dataplane::fastpath::{deliveries, diff_map};
use romana_host::{FastPath, Kernel, Program, detach_marked, in_netns};
use romana_test_support::Netns;

struct Lab {
    remote: Netns,
    host: Netns,
    pod: Netns,
    pod2: Netns,
}

const POD: &str = "fd77:1::5";
const POD2: &str = "fd77:1::6";
const REMOTE: &str = "fd77::2";

fn lab() -> Option<Lab> {
    let pid = std::process::id();
    let remote = Netns::new(&format!("rm6-{pid}-remote"))?;
    let host = Netns::new(&format!("rm6-{pid}-host"))?;
    let pod = Netns::new(&format!("rm6-{pid}-pod"))?;
    let pod2 = Netns::new(&format!("rm6-{pid}-pod2"))?;
    host.ip(&format!("link add eth0 type veth peer name eth0 netns {}", remote.0));
    host.ip("addr add fd77::1/64 dev eth0 nodad");
    remote.ip(&format!("addr add {REMOTE}/64 dev eth0 nodad"));
    for (p, ip, link) in [(&pod, POD, "romanat0"), (&pod2, POD2, "romanat1")] {
        host.ip(&format!("link add {link} type veth peer name eth0 netns {}", p.0));
        host.ip(&format!("addr add fe80::1/64 dev {link} nodad"));
        p.ip(&format!("addr add {ip}/128 dev eth0 nodad"));
        p.ip("link set eth0 up");
        p.ip("link set lo up");
        host.ip(&format!("link set {link} up"));
        host.ip(&format!("-6 route add {ip}/128 dev {link} proto 77"));
        p.ip("-6 route add default via fe80::1 dev eth0");
    }
    host.ip("link set eth0 up");
    remote.ip("link set eth0 up");
    remote.ip("-6 route add fd77:1::/64 via fd77::1");
    sh(&host.0, "sysctl -qw net.ipv6.conf.all.forwarding=1");
    Some(Lab { remote, host, pod, pod2 })
}

fn sh(ns: &str, cmd: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd.split_whitespace())
        .output()
        .expect("ip netns exec runs");
    assert!(out.status.success(), "{ns}: {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(from: &Netns, to: &str, count: u32) {
    sh(&from.0, &format!("ping -6 -q -n -c {count} -i 0.01 -W 2 {to}"));
}

fn link_tx(l: &Lab, link: &str) -> u64 {
    let out = l.host.ip(&format!("-s -j link show {link}"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    v[0]["stats64"]["tx"]["packets"].as_u64().expect("tx packets")
}

/// IPv6 datagrams the host forwarded (its kernel path).
fn forwarded(l: &Lab) -> u64 {
    let snmp = sh(&l.host.0, "cat /proc/net/snmp6");
    snmp.lines()
        .find_map(|x| x.strip_prefix("Ip6OutForwDatagrams"))
        .expect("Ip6OutForwDatagrams")
        .trim()
        .parse()
        .expect("number")
}

/// Packets `pod` received with hop limit 63 (sent with 64, one router on the way).
fn hop63(pod: &Netns) -> u64 {
    let out = sh(&pod.0, "nft -j list chain inet rm6 in");
    let v: serde_json::Value = serde_json::from_str(&out).expect("nft -j");
    v["nftables"]
        .as_array()
        .expect("list")
        .iter()
        .find_map(|o| o["rule"]["expr"].as_array()?.iter().find_map(|e| e["counter"]["packets"].as_u64()))
        .expect("counter")
}

fn ifindex(l: &Lab, link: &str) -> u32 {
    let v: serde_json::Value =
        serde_json::from_str(&l.host.ip(&format!("-j link show {link}"))).expect("ip -j");
    v[0]["ifindex"].as_u64().expect("ifindex") as u32
}

#[test]
fn ipv6_packets_take_the_fast_path_and_the_links_own_traffic_the_kernels() {
    let Some(l) = lab() else {
        println!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let mut fp = match FastPath::load() {
        Ok(fp) => fp,
        Err(e) => panic!("this kernel (6.6+, BPF) must load the fast path: {e}"),
    };
    for p in [&l.pod, &l.pod2] {
        sh(&p.0, "nft add table inet rm6");
        sh(&p.0, "nft add chain inet rm6 in { type filter hook input priority 0 ; }");
        sh(&p.0, "nft add rule inet rm6 in ip6 hoplimit 63 meta l4proto ipv6-icmp counter");
    }
    // The kernel's path first (and every neighbour resolved).
    ping(&l.remote, POD, 3);
    ping(&l.remote, POD2, 3);

    let view = in_netns(&l.host.0, || async {
        let k = Kernel::connect().expect("netlink");
        k.fast_path_view(&["fd77::1".parse().expect("literal")]).await.expect("observe")
    })
    .expect("namespace thread");
    assert_eq!(view.uplinks.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["eth0"]);
    let routes: Vec<String> = view.routes.iter().map(|r| format!("{} {}", r.ip, r.link)).collect();
    assert_eq!(routes, [format!("{POD} romanat0"), format!("{POD2} romanat1")], "the /128s of ours");
    // pod2 is not eligible (as an isolated pod would not be): the kernel's path keeps it.
    let eligible = [POD.parse().expect("literal")].into();
    let want = deliveries(&view.routes, Some(&eligible));
    fp.apply(&diff_map(fp.entries(), &want)).expect("map");
    assert_eq!(fp.entries().len(), 1);
    let (uplink, endpoint, endpoint2) =
        (ifindex(&l, "eth0"), ifindex(&l, "romanat0"), ifindex(&l, "romanat1"));
    fp.set_uplinks(&[(uplink, None)].into()).expect("uplinks");
    let fp = in_netns(&l.host.0, move || async move {
        let p = fp.programs();
        assert!(p.attach(Program::Deliver, uplink).expect("attach deliver"));
        assert!(p.attach(Program::Send, endpoint).expect("attach send"));
        assert!(p.attach(Program::Send, endpoint2).expect("attach send"));
        fp
    })
    .expect("namespace thread");

    // From the remote host into the pod: the host neither forwards nor transmits to the pod,
    // and the hop limit is decremented.
    let (f, tx, hops) = (forwarded(&l), link_tx(&l, "romanat0"), hop63(&l.pod));
    ping(&l.remote, POD, 20);
    let (f, tx, hops) = (forwarded(&l) - f, link_tx(&l, "romanat0") - tx, hop63(&l.pod) - hops);
    // The link's own traffic (neighbour discovery, MLD) may still go out; the requests do not.
    assert!(tx < 10 && f < 10, "to the pod: {tx} transmitted by its veth, {f} forwarded");
    assert!(hops >= 20, "the pod got {hops} requests with hop limit 63 (decremented once)");

    // From the pod: its requests to the remote host and its replies leave through the uplink
    // past the forwarding path.
    let (f, tx) = (forwarded(&l), link_tx(&l, "eth0"));
    ping(&l.pod, REMOTE, 20);
    let (f, tx) = (forwarded(&l) - f, link_tx(&l, "eth0") - tx);
    assert!(f < 5, "the host forwarded {f} datagrams of the pod's");
    assert!(tx >= 20, "the uplink transmitted {tx} packets: the pod's requests go out of it");

    // Pod to pod on the host: pod2 is not in the map, so toward it the kernel forwards (its
    // firewall would see the packet) and pod2's replies are forwarded too.
    let f = forwarded(&l);
    ping(&l.pod, POD2, 20);
    assert!(forwarded(&l) - f >= 40, "to and from a pod not in the map: the kernel's path");
    // ... and from the remote host to it as well.
    let tx = link_tx(&l, "romanat1");
    ping(&l.remote, POD2, 20);
    assert!(link_tx(&l, "romanat1") - tx >= 20, "a pod not in the map: its veth transmits");

    // Both in the map: straight from one veth into the other pod.
    let mut fp = fp;
    let want = deliveries(&view.routes, None);
    fp.apply(&diff_map(fp.entries(), &want)).expect("map");
    let (f, tx, hops) = (forwarded(&l), link_tx(&l, "romanat1"), hop63(&l.pod2));
    ping(&l.pod, POD2, 20);
    let (f, tx, hops) = (forwarded(&l) - f, link_tx(&l, "romanat1") - tx, hop63(&l.pod2) - hops);
    assert!(f < 5 && tx < 10, "pod to pod on one host: {f} forwarded, {tx} sent by the host to pod2");
    assert!(hops >= 20, "pod2 got {hops} requests with hop limit 63");

    // Fragments carry an extension header: the kernel's path.
    let tx = link_tx(&l, "romanat0");
    sh(&l.remote.0, &format!("ping -6 -q -n -c 5 -i 0.05 -W 2 -s 3000 {POD}"));
    assert!(link_tx(&l, "romanat0") - tx >= 10, "fragmented requests: the pod's veth transmits them");

    // Neighbour discovery with the programs attached: forgotten neighbours are found again (the
    // host's of the remote host, the pod's of its gateway, the remote host's of the host).
    sh(&l.host.0, "ip -6 neigh flush all");
    sh(&l.pod.0, "ip -6 neigh flush all");
    sh(&l.remote.0, "ip -6 neigh flush all");
    ping(&l.pod, REMOTE, 3);
    ping(&l.remote, POD, 3);
    let neigh = sh(&l.pod.0, "ip -6 neigh show dev eth0");
    assert!(neigh.contains("fe80::1 lladdr"), "the pod resolved its gateway again: {neigh}");
    let neigh = sh(&l.host.0, "ip -6 neigh show dev eth0");
    assert!(neigh.contains(&format!("{REMOTE} lladdr")), "the host resolved the remote host again: {neigh}");

    // Hop limit 1 is left to the kernel, which answers time exceeded instead of delivering.
    let out = Command::new("ip")
        .args(["netns", "exec", &l.remote.0, "ping", "-6", "-n", "-c", "1", "-t", "1", "-W", "2", POD])
        .output()
        .expect("ping");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("Time exceeded"), "{shown}");

    let removed = in_netns(&l.host.0, move || async move {
        detach_marked(uplink).expect("detach")
            + detach_marked(endpoint).expect("detach")
            + detach_marked(endpoint2).expect("detach")
    })
    .expect("namespace thread");
    assert_eq!(removed, 3);
    drop(fp);
    ping(&l.remote, POD, 3);
}
