//! The fast path against a real kernel, in namespaces this test creates and deletes even when it
//! fails (`rmf-<pid>-*`: a remote host, a host, a pod; no link leaves them): packets from the
//! remote host reach the pod past the host's forwarding path (the host side of the pod's veth
//! never transmits them, the host forwards none), with TTL decremented and a valid checksum; the
//! pod's packets to the remote host leave through the uplink past it too, or, handed to the far
//! end of the veth uplink, are not even transmitted by it; an address not in the
//! map takes the kernel's path; a second program replaces the first in place; detach leaves
//! nothing.

use std::process::Command;

use romana_dataplane::fastpath::{deliveries, diff_map};
use romana_host::{DELIVER, FastPath, Kernel, Program, SEND, detach_marked, in_netns};
use romana_test_support::Netns;

struct Lab {
    remote: Netns,
    host: Netns,
    pod: Netns,
    /// Only pinged, by address; held for its guard.
    _pod2: Netns,
}

fn lab() -> Option<Lab> {
    let pid = std::process::id();
    let remote = Netns::new(&format!("rmf-{pid}-remote"))?;
    let host = Netns::new(&format!("rmf-{pid}-host"))?;
    let pod = Netns::new(&format!("rmf-{pid}-pod"))?;
    let pod2 = Netns::new(&format!("rmf-{pid}-pod2"))?;
    host.ip(&format!("link add eth0 type veth peer name eth0 netns {}", remote.0));
    host.ip("addr add 192.168.77.1/24 dev eth0");
    remote.ip("addr add 192.168.77.2/24 dev eth0");
    host.ip(&format!("link add romanat0 type veth peer name eth0 netns {}", pod.0));
    host.ip("addr add 169.254.1.1/32 dev romanat0");
    host.ip(&format!("link add romanat1 type veth peer name eth0 netns {}", pod2.0));
    host.ip("addr add 169.254.1.1/32 dev romanat1");
    for (p, ip, link) in [(&pod, "10.77.0.5", "romanat0"), (&pod2, "10.77.0.6", "romanat1")] {
        p.ip(&format!("addr add {ip}/32 dev eth0"));
        p.ip("link set eth0 up");
        p.ip("link set lo up");
        host.ip(&format!("link set {link} up"));
        host.ip(&format!("route add {ip}/32 dev {link} proto 77"));
        p.ip("route add 169.254.1.1/32 dev eth0");
        p.ip("route add default via 169.254.1.1 dev eth0");
    }
    host.ip("link set eth0 up");
    remote.ip("link set eth0 up");
    remote.ip("route add 10.77.0.0/16 via 192.168.77.1");
    sh(&host.0, "sysctl -qw net.ipv4.ip_forward=1");
    Some(Lab { remote, host, pod, _pod2: pod2 })
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
    sh(&from.0, &format!("ping -q -n -c {count} -i 0.01 -W 1 {to}"));
}

/// A link's MAC in a namespace.
fn mac_of(ns: &Netns, link: &str) -> [u8; 6] {
    let v: serde_json::Value = serde_json::from_str(&ns.ip(&format!("-j link show {link}"))).expect("ip -j");
    let hex = v[0]["address"].as_str().expect("address");
    let bytes: Vec<u8> = hex.split(':').map(|b| u8::from_str_radix(b, 16).expect("hex")).collect();
    bytes.try_into().expect("six bytes")
}

/// Packets the host side of the pod's veth transmitted (toward the pod).
fn veth_tx(l: &Lab) -> u64 {
    link_tx(l, "romanat0")
}

fn link_tx(l: &Lab, link: &str) -> u64 {
    let out = l.host.ip(&format!("-s -j link show {link}"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    v[0]["stats64"]["tx"]["packets"].as_u64().expect("tx packets")
}

/// Datagrams the host forwarded (its kernel path).
fn forwarded(l: &Lab) -> u64 {
    let snmp = sh(&l.host.0, "cat /proc/net/snmp");
    let mut ip = snmp.lines().filter(|x| x.starts_with("Ip:"));
    let (names, values) = (ip.next().expect("Ip header"), ip.next().expect("Ip values"));
    let at = names.split_whitespace().position(|n| n == "ForwDatagrams").expect("ForwDatagrams");
    values.split_whitespace().nth(at).expect("value").parse().expect("number")
}

/// Packets the pod received with TTL 63 (sent with 64, one router on the way).
fn ttl63(l: &Lab) -> u64 {
    let out = sh(&l.pod.0, "nft -j list chain inet rmf in");
    let v: serde_json::Value = serde_json::from_str(&out).expect("nft -j");
    v["nftables"]
        .as_array()
        .expect("list")
        .iter()
        .find_map(|o| o["rule"]["expr"].as_array()?.iter().find_map(|e| e["counter"]["packets"].as_u64()))
        .expect("counter")
}

fn ours(l: &Lab, ifname: &'static str) -> Vec<String> {
    in_netns(&l.host.0, move || async move {
        let out = Command::new("ip").args(["-j", "link", "show", ifname]).output().expect("ip");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        let ifindex = v[0]["ifindex"].as_u64().expect("ifindex") as u32;
        romana_host::tcx_program_names(ifindex).expect("query")
    })
    .expect("namespace thread")
}

#[test]
fn packets_from_another_host_enter_the_pod_past_the_forwarding_path() {
    let Some(l) = lab() else {
        println!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let mut fp = match FastPath::load() {
        Ok(fp) => fp,
        Err(e) => panic!("this kernel (6.6+, BPF) must load the fast path: {e}"),
    };
    // The kernel's path first: the host forwards and its veth transmits every request.
    ping(&l.remote, "10.77.0.5", 5);
    let before = veth_tx(&l);
    ping(&l.remote, "10.77.0.5", 20);
    assert!(veth_tx(&l) - before >= 20, "without the fast path the host transmits to the pod");

    let view = in_netns(&l.host.0, || async {
        let k = Kernel::connect().expect("netlink");
        k.fast_path_view(&["192.168.77.1".parse().expect("literal")]).await.expect("observe")
    })
    .expect("namespace thread");
    assert_eq!(view.uplinks.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["eth0"]);
    // The uplink is a veth: its far end is the remote host's eth0, nothing on its egress.
    let far = view.uplinks[0].far_end.clone().expect("the far end of a veth uplink");
    assert_eq!(far.mac, mac_of(&l.remote, "eth0"));
    assert!(!far.xdp);
    assert_eq!(view.uplinks[0].qdiscs, ["noqueue"]);
    assert_eq!(view.uplinks[0].egress_programs, Some(0));
    let links: Vec<&str> = view.routes.iter().map(|r| r.link.as_str()).collect();
    assert_eq!(links, ["romanat0", "romanat1"], "{view:?}");
    let want = deliveries(&view.routes, None);
    fp.apply(&diff_map(fp.entries(), &want)).expect("map");
    let uplink = view.uplinks[0].ifindex;
    let (endpoint, endpoint2) = (view.routes[0].ifindex, view.routes[1].ifindex);
    // First as a NIC would be: the uplink transmits.
    fp.set_uplinks(&[(uplink, None)].into()).expect("uplinks");
    let (fp, changed) = in_netns(&l.host.0, move || async move {
        let changed = fp.programs().attach(Program::Deliver, uplink).expect("attach");
        (fp, changed)
    })
    .expect("namespace thread");
    assert!(changed);
    assert_eq!(ours(&l, "eth0"), [DELIVER]);

    sh(&l.pod.0, "nft add table inet rmf");
    sh(&l.pod.0, "nft add chain inet rmf in { type filter hook input priority 0 ; }");
    sh(&l.pod.0, "nft add rule inet rmf in ip ttl 63 counter");
    let before = veth_tx(&l);
    ping(&l.remote, "10.77.0.5", 20);
    let bypassed = veth_tx(&l) - before;
    // The link's own traffic (ARP, IPv6 neighbour discovery and MLD of links just made) may
    // still go out; the requests, 20 of them, do not.
    assert!(bypassed < 10, "the host transmitted {bypassed} packets to the pod: the fast path was not taken");
    assert!(ttl63(&l) >= 20, "the pod got every request with TTL 63 (decremented, checksum valid)");

    // The pod's side: until `romana_send` is on its veth the host forwards its packets (the
    // replies above); then none, they leave through the uplink with the FIB's MACs.
    let before = forwarded(&l);
    ping(&l.pod, "192.168.77.2", 10);
    assert!(forwarded(&l) - before >= 10, "the kernel forwarded the pod's requests");
    let fp = in_netns(&l.host.0, move || async move {
        assert!(fp.programs().attach(Program::Send, endpoint).expect("attach send"));
        assert!(fp.programs().attach(Program::Send, endpoint2).expect("attach send"));
        fp
    })
    .expect("namespace thread");
    assert_eq!(ours(&l, "romanat0"), [SEND]);
    let (before, tx) = (forwarded(&l), link_tx(&l, "eth0"));
    ping(&l.pod, "192.168.77.2", 20);
    ping(&l.remote, "10.77.0.5", 20);
    let (f, t) = (forwarded(&l) - before, link_tx(&l, "eth0") - tx);
    assert!(f <= 2, "the host forwarded {f} datagrams: both directions should have skipped it");
    assert!(t >= 40, "the uplink transmitted {t} packets: the pod's requests and replies go out of it");
    // Handed to the far end of the wire: the uplink transmits none of them, and they arrive.
    let mut fp = fp;
    fp.set_uplinks(&[(uplink, Some(far.mac))].into()).expect("uplinks");
    let (before, tx) = (forwarded(&l), link_tx(&l, "eth0"));
    ping(&l.pod, "192.168.77.2", 20);
    ping(&l.remote, "10.77.0.5", 20);
    let (f, t) = (forwarded(&l) - before, link_tx(&l, "eth0") - tx);
    assert!(f <= 2 && t < 10, "handed to the far end: {f} forwarded, {t} transmitted by the uplink");
    // A next hop other than the far end (here: a far end the map says has another MAC) is
    // transmitted as before.
    fp.set_uplinks(&[(uplink, Some([2, 0, 0, 0, 0, 1]))].into()).expect("uplinks");
    let tx = link_tx(&l, "eth0");
    ping(&l.pod, "192.168.77.2", 20);
    assert!(link_tx(&l, "eth0") - tx >= 20, "a next hop that is not the far end: transmitted");
    // Between two pods of the host: from one veth straight into the other pod.
    ping(&l.pod, "10.77.0.6", 10);
    let (before, tx) = (forwarded(&l), link_tx(&l, "romanat1"));
    ping(&l.pod, "10.77.0.6", 20);
    let (f, t) = (forwarded(&l) - before, link_tx(&l, "romanat1") - tx);
    assert!(f <= 2 && t < 10, "pod to pod on one host: {f} forwarded, {t} sent by the host to pod2");

    // A restarted agent: a new program replaces the old in place; still one of ours.
    let fp2 = FastPath::load().expect("load again");
    let mut fp2 = in_netns(&l.host.0, move || async move {
        assert!(fp2.programs().attach(Program::Deliver, uplink).expect("replace"));
        assert!(
            !fp2.programs().attach(Program::Deliver, uplink).expect("again"),
            "attaching twice changes nothing"
        );
        fp2
    })
    .expect("namespace thread");
    drop(fp);
    assert_eq!(ours(&l, "eth0"), [DELIVER]);
    // Its map is empty until written: the kernel's path, which still works.
    let before = veth_tx(&l);
    ping(&l.remote, "10.77.0.5", 10);
    assert!(veth_tx(&l) - before >= 10);
    fp2.apply(&diff_map(fp2.entries(), &want)).expect("map");
    let before = veth_tx(&l);
    ping(&l.remote, "10.77.0.5", 10);
    assert!(veth_tx(&l) - before < 5);

    // TTL 1 is left to the kernel, which answers time exceeded instead of delivering.
    let out = Command::new("ip")
        .args(["netns", "exec", &l.remote.0, "ping", "-n", "-c", "1", "-t", "1", "-W", "1", "10.77.0.5"])
        .output()
        .expect("ping");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Time to live exceeded"), "{out:?}");

    let removed = in_netns(&l.host.0, move || async move { detach_marked(uplink).expect("detach") })
        .expect("namespace thread");
    assert_eq!(removed, 1);
    assert!(ours(&l, "eth0").is_empty());
    let removed = in_netns(&l.host.0, move || async move {
        detach_marked(endpoint).expect("detach") + detach_marked(endpoint2).expect("detach")
    })
    .expect("namespace thread");
    assert_eq!(removed, 2);
    assert!(ours(&l, "romanat0").is_empty());
    drop(fp2);
    ping(&l.remote, "10.77.0.5", 3);
}
