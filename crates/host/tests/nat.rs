//! Egress NAT's chain against a real kernel, inside network namespaces this test creates
//! (`rmq-*`, deleted by their guards): the kernel accepts the check-only probe; the firewall's
//! table with the `nat-out` chain loads and reads back into exactly what was applied; a host
//! joining rewrites only that chain; NAT switched off deletes it; another table is never
//! touched. Then traffic: a "pod" namespace behind a "host" namespace holding the table reaches
//! an "internet" namespace, which sees the host's address (and answers through conntrack).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use romana_host::{in_netns, nat, nft};
use romana_policy::eval::{Endpoint, World};
use romana_policy::firewall::{FirewallInput, compile};
use romana_policy::nat::{CHAIN, NatConfig, add_to};
use romana_policy::nftjson;
use romana_policy::nftplan::{Observed, PlanSummary, plan};
use romana_policy::ruleset::Ruleset;
use romana_test_support::Netns;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn netns() -> Option<Netns> {
    Netns::new(&format!("rmq-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn observe(ns: &Netns) -> Option<Observed> {
    in_netns(&ns.0, || async { nft::list_table(false).unwrap().map(|j| nftjson::parse(&j).unwrap()) })
        .unwrap()
}

/// Applies the plan to `want` and checks the kernel then holds exactly `want`.
fn apply_plan(ns: &Netns, want: &Ruleset) -> PlanSummary {
    let p = plan(observe(ns).as_ref(), want);
    let script = p.script.clone();
    in_netns(&ns.0, move || async move { nft::apply(&script) }).unwrap().unwrap();
    assert_eq!(Observed::of(want), observe(ns).unwrap(), "the applied table differs from the kernel's");
    assert!(plan(observe(ns).as_ref(), want).is_empty(), "a second plan must be empty");
    p.summary
}

fn config(hosts: &[&str], masquerade: bool) -> NatConfig {
    let pods = "10.112.0.0/16".parse().unwrap();
    NatConfig {
        networks: vec![pods, "10.200.0.0/16".parse().unwrap()],
        masquerade: if masquerade { vec![pods] } else { vec![] },
        no_nat: vec!["172.16.0.0/12".parse().unwrap()],
        hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
        vips: vec!["198.51.100.0/28".parse().unwrap()],
    }
}

/// The firewall's table for host `h0` with one local endpoint, and NAT's chain when it applies.
fn table(nat: &NatConfig) -> Ruleset {
    let eps = vec![Endpoint {
        id: "a".into(),
        tenant: "t".into(),
        ip: Some("10.112.0.9".parse().unwrap()),
        host: "h0".into(),
        ..Endpoint::default()
    }];
    let world = World { tenants: BTreeMap::from([("t".to_owned(), BTreeMap::new())]) };
    let mut rs = compile(FirewallInput { host: "h0", policies: &[], world: &world, endpoints: &eps });
    add_to(&mut rs, nat);
    rs
}

fn nft_in(ns: &Netns, args: &str) -> String {
    let out = Command::new("ip").args(["netns", "exec", &ns.0, "nft"]).args(args.split_whitespace()).output();
    String::from_utf8_lossy(&out.unwrap().stdout).into_owned()
}

#[test]
fn the_nat_chain_loads_reads_back_and_goes() {
    let Some(ns) = netns() else { return eprintln!("skipped: cannot create namespaces") };
    in_netns(&ns.0, || async { nat::probe() }).unwrap().expect("this kernel holds inet nat chains");
    assert!(observe(&ns).is_none(), "the probe commits nothing");
    nft_in(&ns, "add table ip other");
    nft_in(&ns, "add chain ip other post { type nat hook postrouting priority 50 ; }");

    let first = table(&config(&["192.168.1.11"], true));
    assert!(first.chains.contains_key(CHAIN));
    assert!(apply_plan(&ns, &first).replace_table);
    let listing = nft_in(&ns, "list chain inet romana nat-out");
    assert!(listing.contains("type nat hook postrouting priority srcnat"), "{listing}");
    assert!(listing.contains("ip saddr 10.112.0.0/16 ip daddr != {"), "{listing}");
    assert!(listing.contains("ct status dnat accept"), "a VIP's flows are never masqueraded: {listing}");
    assert!(listing.contains("198.51.100.0/28"), "the VIP range is exempt: {listing}");

    // A host joins the cluster: only the NAT chain is rewritten.
    let second = table(&config(&["192.168.1.11", "192.168.2.11"], true));
    let s = apply_plan(&ns, &second);
    assert_eq!(
        (s.replace_table, s.chains_rewritten, s.chains_added, s.chains_deleted),
        (false, 1, 0, 0),
        "{s:?}"
    );

    // NAT off: the chain goes, nothing else changes.
    let off = table(&config(&["192.168.1.11", "192.168.2.11"], false));
    assert!(!off.chains.contains_key(CHAIN));
    let s = apply_plan(&ns, &off);
    assert_eq!((s.replace_table, s.chains_deleted, s.rules_added), (false, 1, 0), "{s:?}");
    assert!(nft_in(&ns, "list tables").contains("table ip other"), "the other table stays");
}

#[test]
fn masqueraded_traffic_is_seen_from_the_host_and_answered() {
    // pod (10.112.0.9) --veth-- host (gateway 169.254.1.1; uplink 192.168.1.11) --veth--
    // internet (192.168.1.1 and 198.18.0.1, no route to the pods).
    let (Some(pod), Some(host), Some(inet)) = (netns(), netns(), netns()) else {
        return eprintln!("skipped: cannot create namespaces");
    };
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let (p, u) = (format!("rmqp{id}"), format!("rmqu{id}"));
    host.ip(&format!("link add {p} type veth peer name eth0 netns {}", pod.0));
    host.ip(&format!("link add {u} type veth peer name eth1 netns {}", inet.0));
    for cmd in [
        format!("addr add 169.254.1.1/32 dev {p}"),
        format!("link set {p} up"),
        "route add 10.112.0.9/32 dev PORT".replace("PORT", &p),
        format!("addr add 192.168.1.11/24 dev {u}"),
        format!("link set {u} up"),
        "route add default via 192.168.1.1".to_owned(),
    ] {
        host.ip(&cmd);
    }
    for cmd in [
        "addr add 10.112.0.9/32 dev eth0",
        "link set eth0 up",
        "route add 169.254.1.1 dev eth0",
        "route add default via 169.254.1.1 dev eth0",
    ] {
        pod.ip(cmd);
    }
    for cmd in [
        "addr add 192.168.1.1/24 dev eth1",
        "addr add 198.18.0.1/32 dev lo",
        "link set eth1 up",
        "link set lo up",
    ] {
        inet.ip(cmd);
    }
    let fwd = Command::new("ip")
        .args(["netns", "exec", &host.0, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .status();
    assert!(fwd.unwrap().success());
    apply_plan(&host, &table(&config(&["192.168.1.11"], true)));

    let server = in_netns(&inet.0, || async { TcpListener::bind("198.18.0.1:7") }).unwrap().unwrap();
    let serve = std::thread::spawn(move || {
        let (mut s, peer) = server.accept().unwrap();
        s.write_all(peer.ip().to_string().as_bytes()).unwrap();
        peer.ip()
    });
    let answer = in_netns(&pod.0, || async {
        let mut s = std::net::TcpStream::connect("198.18.0.1:7")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok::<_, std::io::Error>(text)
    })
    .unwrap()
    .expect("the internet answers the masqueraded connection");
    let seen = serve.join().unwrap();
    assert_eq!(seen, "192.168.1.11".parse::<IpAddr>().unwrap(), "the internet sees the host's address");
    assert_eq!(answer, "192.168.1.11");
}
