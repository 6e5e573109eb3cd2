//! Dual-stack endpoints in a real kernel, in namespaces this test creates (`rmv-<pid>-*`, deleted
//! by their guards even when it fails; no link leaves them): two hosts joined by a veth with an
//! IPv4 and an IPv6 underlay address each, their peer routes (both families) programmed by
//! `Kernel` from a `HostView` as the agent does, a dual-stack pod on each and an IPv6-only pod
//! on the second, an IPv4-only pod on the first, plumbed by `attach` with the link-local IPv6
//! gateway (the host ends carry no link-local of their own). Pings over both families
//! between hosts, and from and to the IPv6-only pod; `check` finds a deleted IPv6 route and
//! gateway; `detach` removes everything.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use romana_dataplane::{HostView, LinkName, PeerRoute, compile, diff};
use romana_host::{
    EndpointSpec, IPV6_GATEWAY, Kernel, PodAddress, attach, check, detach, enable_forwarding, host_link_name,
    in_netns,
};
use romana_test_support::{HostPair, Netns};

fn path(ns: &Netns) -> PathBuf {
    PathBuf::from(format!("/run/netns/{}", ns.0))
}

/// The host's peer routes and gateway link, through the agent's adapter.
fn program(host: &Netns, gateway: &str, routes: &[(&str, &str)]) {
    let view = HostView {
        gateway: LinkName::new("romana-gw").unwrap(),
        gateway_addresses: vec![gateway.parse().unwrap()],
        endpoints: vec![],
        routes: routes
            .iter()
            .map(|(d, v)| PeerRoute { dest: d.parse().unwrap(), via: Some(v.parse().unwrap()) })
            .collect(),
    };
    let desired = compile(&view).unwrap();
    in_netns(&host.0, move || async move {
        let mut k = Kernel::connect().unwrap();
        let observed = k.observe().await.unwrap();
        k.apply(&diff(&observed, &desired)).await.unwrap();
        let after = k.observe().await.unwrap();
        assert!(diff(&after, &desired).steps.is_empty(), "converged");
    })
    .unwrap();
}

fn spec(pod: &Netns, id: &str, addresses: &[(&str, IpAddr)]) -> EndpointSpec {
    EndpointSpec {
        host_link: host_link_name(id, "eth0"),
        ifname: "eth0".into(),
        netns: path(pod),
        addresses: addresses
            .iter()
            .map(|(ip, gateway)| PodAddress { ip: ip.parse().unwrap(), gateway: *gateway })
            .collect(),
    }
}

/// A sysctl's value inside `ns` (`/proc/sys/net` shows the reader's namespace).
fn sysctl(ns: &Netns, key: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "cat", &format!("/proc/sys/{key}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "read {key} in {}: {}", ns.0, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ping` from `pod` to `dst` answers (two tries: the first may wait for neighbour discovery).
fn pings(pod: &Netns, dst: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &pod.0, "ping", "-n", "-c", "2", "-W", "2", dst])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn dual_stack_and_ipv6_only_pods_reach_each_other_across_hosts() {
    let Some(HostPair(a, b)) = HostPair::new("rmv") else {
        eprintln!("skipping: cannot create network namespaces (needs root and iproute2)");
        return;
    };
    let pid = std::process::id();
    let (Some(pa), Some(pb), Some(pc), Some(pd)) = (
        Netns::new(&format!("rmv-{pid}-pa")),
        Netns::new(&format!("rmv-{pid}-pb")),
        Netns::new(&format!("rmv-{pid}-pc")),
        Netns::new(&format!("rmv-{pid}-pd")),
    ) else {
        panic!("pod namespaces");
    };
    a.ip("addr add fd88::1/64 dev eth0 nodad");
    b.ip("addr add fd88::2/64 dev eth0 nodad");
    for h in [&a, &b] {
        enable_forwarding(Some(&path(h))).unwrap();
    }
    program(&a, "10.200.0.1", &[("10.1.1.0/24", "192.168.88.2"), ("fd10:1::/64", "fd88::2")]);
    program(&b, "10.200.1.1", &[("10.1.0.0/24", "192.168.88.1"), ("fd10::/64", "fd88::1")]);

    let v6gw = IpAddr::V6(IPV6_GATEWAY);
    let gw_a: IpAddr = "10.200.0.1".parse().unwrap();
    let gw_b: IpAddr = "10.200.1.1".parse().unwrap();
    let sa = spec(&pa, "pod-a", &[("10.1.0.2", gw_a), ("fd10::2", v6gw)]);
    let sb = spec(&pb, "pod-b", &[("10.1.1.2", gw_b), ("fd10:1::2", v6gw)]);
    let sc = spec(&pc, "pod-c", &[("fd10:1::3", v6gw)]);
    assert!(attach(Some(&path(&a)), &sa).unwrap().created);
    assert!(attach(Some(&path(&b)), &sb).unwrap().created);
    assert!(attach(Some(&path(&b)), &sc).unwrap().created);
    let sd = spec(&pd, "pod-d", &[("10.1.0.3", gw_a)]);
    assert!(attach(Some(&path(&a)), &sd).unwrap().created);
    // The host ends carry only the IPv6 addresses attach gives them (the gateway for a pod with
    // IPv6, none for an IPv4-only pod): no link-local of their own, while the pod's end has one.
    for (h, s, want) in [(&a, &sa, "fe80::1/64"), (&b, &sc, "fe80::1/64"), (&a, &sd, "")] {
        let link = s.host_link.as_str();
        let shown = h.ip(&format!("-6 -o addr show dev {link}"));
        let v6: Vec<&str> = shown.split_whitespace().filter(|w| w.contains(':') && w.contains('/')).collect();
        assert_eq!(v6.join(" "), want, "{link}'s IPv6 addresses: {shown}");
        let mode = sysctl(h, &format!("net/ipv6/conf/{link}/addr_gen_mode"));
        assert_eq!(mode.trim(), "1", "{link}: no address generation");
    }
    let pod_ll = pd.ip("-6 -o addr show dev eth0 scope link");
    assert!(pod_ll.contains("fe80::"), "the pod's end keeps its link-local: {pod_ll}");
    // Idempotent: a complete endpoint is left as is.
    assert!(!attach(Some(&path(&a)), &sa).unwrap().created);
    check(Some(&path(&a)), &sa).unwrap();
    check(Some(&path(&b)), &sc).unwrap();

    // The pod's IPv6 default route leads to the link-local gateway on its veth.
    let r = pa.ip("-6 route show default");
    assert!(r.contains("via fe80::1 dev eth0"), "{r}");

    assert!(pings(&pa, "10.1.1.2"), "IPv4 pod a -> pod b");
    assert!(pings(&pa, "fd10:1::2"), "IPv6 pod a -> pod b");
    assert!(pings(&pb, "fd10::2"), "IPv6 pod b -> pod a");
    assert!(pings(&pd, "10.1.0.2"), "IPv4-only pod d -> pod a, same host");
    assert!(pings(&pd, "10.1.1.2"), "IPv4-only pod d -> pod b");
    assert!(pings(&pa, "fd10:1::3"), "IPv6 pod a -> IPv6-only pod c");
    assert!(pings(&pc, "fd10::2"), "IPv6-only pod c -> pod a");
    assert!(pings(&pc, "fd10:1::2"), "IPv6-only pod c -> pod b, same host");
    // And a negative: an address nobody holds does not answer.
    assert!(!pings(&pa, "fd10:1::99"), "an unallocated address answered");

    // Check names what is missing, in either family.
    let link = sa.host_link.as_str();
    a.ip(&format!("-6 route del fd10::2/128 dev {link}"));
    a.ip(&format!("-6 addr del fe80::1/64 dev {link}"));
    let e = check(Some(&path(&a)), &sa).unwrap_err().to_string();
    assert!(e.contains("route fd10::2/128") && e.contains("gateway fe80::1/64"), "{e}");
    // Attach repairs it (a partial endpoint is rebuilt).
    assert!(attach(Some(&path(&a)), &sa).unwrap().created);
    check(Some(&path(&a)), &sa).unwrap();
    assert!(pings(&pb, "fd10::2"), "IPv6 after the rebuild");

    // Bad specs are refused by name before anything is made.
    let two_v6 = spec(&pa, "pod-x", &[("fd10::7", v6gw), ("fd10::8", v6gw)]);
    let e = attach(Some(&path(&a)), &two_v6).unwrap_err().to_string();
    assert!(e.contains("one address of each family"), "{e}");
    let mixed = spec(&pa, "pod-x", &[("fd10::7", gw_a)]);
    let e = attach(Some(&path(&a)), &mixed).unwrap_err().to_string();
    assert!(e.contains("not the same address family"), "{e}");

    for (h, s) in [(&a, &sa), (&b, &sb), (&b, &sc), (&a, &sd)] {
        assert!(detach(Some(&path(h)), &s.host_link).unwrap());
    }
    let left = b.ip("-6 route show proto 77");
    assert!(!left.contains("fd10:1::"), "{left}");
}
