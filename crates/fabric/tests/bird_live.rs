//! IPv6 over the IPv4 sessions in real BIRD (root): a dual-stack host and its rack router, each
//! BIRD in a network namespace of its own (`rmy-<pid>-*`, deleted by a guard even when the test
//! fails; one veth joins them, no link leaves them), configured only from the rendered files.
//! The host announces its IPv6 aggregates in the `ipv6` channel of its IPv4 session; the router
//! learns them with the host's IPv6 underlay address as next hop and its kernel protocol puts
//! them in its kernel: IPv6 forwarded over IPv6, never via an IPv4 next hop. Skips without
//! root, iproute2 or bird.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use romana_api::rest::FabricGroup;
use romana_fabric::{Fabric, Options, render_host, render_router};
use romana_ipam::spec::HostSpec;
use romana_ipam::{AllocRequest, Ipam};

/// Namespaces and BIRD daemons of this test, removed on drop.
struct Guard {
    namespaces: Vec<String>,
    pids: Vec<std::path::PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for p in &self.pids {
            if let Ok(pid) = std::fs::read_to_string(p) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &str) -> bool {
    Command::new("ip").args(args.split_whitespace()).status().is_ok_and(|s| s.success())
}

/// One rack (router 192.168.1.1) with one host, r1h1, dual-stack underlay, 20 dual-stack pods.
fn fabric() -> Fabric {
    let topology = r#"{"networks":[{"name":"pods","cidr":"10.112.0.0/16","block_mask":28},
        {"name":"pods6","cidr":"fd00:112::/112","block_mask":124}],
        "topologies":[{"networks":["pods","pods6"],"map":[{"name":"spines","routing":"bgp",
        "bgp":{"asn":65000,"routers":["192.168.254.1"]},"groups":[{"name":"rack-1",
        "assignment":{"rack":"1"},"routing":"bgp","bgp":{"asn":65001,"routers":["192.168.1.1"],
        "uplinks":["192.168.254.11"],"host_asn":65101},"groups":[]}]}]}]}"#;
    let mut ipam = Ipam::new(romana_api::topology::parse(topology).unwrap()).unwrap();
    let spec = HostSpec::new("r1h1".parse().unwrap(), "192.168.1.11".parse::<IpAddr>().unwrap())
        .with_ipv6("fd00:192:168:1::11".parse().unwrap())
        .with_tag("rack", "1");
    ipam.add_host(spec).unwrap();
    for p in 0..20 {
        let req = AllocRequest {
            name: format!("p{p}").parse().unwrap(),
            host: "r1h1".parse().unwrap(),
            tenant: "t".parse().unwrap(),
            segment: "".parse().unwrap(),
        };
        ipam.allocate_stack(&req).unwrap();
    }
    let view: Vec<FabricGroup> = ipam.fabric_routes().iter().map(FabricGroup::from).collect();
    Fabric::new(&romana_api::topology::render(&ipam), &view).unwrap()
}

fn birdc(sock: &Path, cmd: &str) -> String {
    let out = Command::new("birdc").arg("-s").arg(sock).args(cmd.split_whitespace()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_rack_router_learns_ipv6_aggregates_with_the_hosts_ipv6_next_hop() {
    if Command::new("bird").arg("--version").output().is_err() {
        eprintln!("SKIP: bird (Debian's bird2) is not installed; scripts/setup.sh installs it");
        return;
    }
    let pid = std::process::id();
    let (host, router) = (format!("rmy-{pid}-h"), format!("rmy-{pid}-r"));
    let dir = std::env::temp_dir().join(format!("romana-bird-live-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut guard = Guard { namespaces: Vec::new(), pids: Vec::new() };
    for ns in [&host, &router] {
        if !ip(&format!("netns add {ns}")) {
            eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
            return;
        }
        guard.namespaces.push(ns.clone());
        assert!(ip(&format!("-n {ns} link set lo up")));
    }
    for cmd in [
        format!("-n {router} link add eth0 type veth peer name eth0 netns {host}"),
        format!("-n {router} addr add 192.168.1.1/24 dev eth0"),
        format!("-n {router} addr add fd00:192:168:1::1/64 dev eth0 nodad"),
        format!("-n {host} addr add 192.168.1.11/24 dev eth0"),
        format!("-n {host} addr add fd00:192:168:1::11/64 dev eth0 nodad"),
        format!("-n {router} link set eth0 up"),
        format!("-n {host} link set eth0 up"),
    ] {
        assert!(ip(&cmd), "ip {cmd}");
    }

    let f = fabric();
    let host_conf = dir.join("host.conf");
    let include = render_host(&f, "r1h1", Options::default()).unwrap();
    assert!(include.contains("next hop address fd00:192:168:1::11;"), "{include}");
    std::fs::write(dir.join("host-include.conf"), include).unwrap();
    std::fs::write(
        &host_conf,
        format!(
            "router id 192.168.1.11;\nprotocol device {{ }}\ninclude \"{}\";\n",
            dir.join("host-include.conf").display()
        ),
    )
    .unwrap();
    let router_conf = dir.join("router.conf");
    std::fs::write(&router_conf, render_router(&f, "/rack-1", None, Options::default()).unwrap()).unwrap();
    for (ns, conf, name) in [(&host, &host_conf, "h"), (&router, &router_conf, "r")] {
        let (sock, pidfile) = (dir.join(format!("{name}.sock")), dir.join(format!("{name}.pid")));
        guard.pids.push(pidfile.clone());
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "bird", "-c"])
            .arg(conf)
            .arg("-s")
            .arg(&sock)
            .arg("-P")
            .arg(&pidfile)
            .status()
            .unwrap()
            .success();
        assert!(ok, "bird starts in {ns}");
    }

    // The host's IPv6 aggregates, from its static protocol.
    // One group per network at that path: the IPv6 network's holds the IPv6 aggregates.
    let mine: Vec<String> = f
        .groups_at("/rack-1")
        .into_iter()
        .flat_map(|g| f.from_member(g, "r1h1"))
        .filter(|c| c.family() == romana_model::Family::V6)
        .map(|c| c.to_string())
        .collect();
    assert!(!mine.is_empty());
    let start = Instant::now();
    let kernel = loop {
        let out = Command::new("ip")
            .args(["-n", &router, "-6", "route", "show", "proto", "bird"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v4 = Command::new("ip")
            .args(["-n", &router, "-4", "route", "show", "proto", "bird"])
            .output()
            .unwrap();
        let v4 = String::from_utf8_lossy(&v4.stdout).into_owned();
        // The IPv4 aggregates come on the same session, via the IPv4 address.
        if mine.iter().all(|m| text.contains(&format!("{m} via fd00:192:168:1::11 dev eth0")))
            && v4.contains("via 192.168.1.11 dev eth0")
        {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "router kernel: {text}\nrouter bird: {}\nhost bird: {}",
            birdc(&dir.join("r.sock"), "show route all table master6"),
            birdc(&dir.join("h.sock"), "show protocols all")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Only IPv6 next hops for IPv6 destinations.
    assert!(!kernel.contains("192.168."), "{kernel}");
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}
