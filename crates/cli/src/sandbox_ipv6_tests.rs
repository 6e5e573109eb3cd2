//! Tests of the dual-stack sandbox's IPv6 side (`sandbox_ipv6.rs`): ranges refused, underlay
//! wiring, the topology romanad carves, the routers' IPv6 routes, a CNI result's addresses.

use romana_api::rest::FabricGroup;
use serde_json::json;

use super::*;

fn layout(routing: Routing) -> Layout {
    Layout::new("s", 2, 2, "10.112.0.0/16", 28)
        .expect("valid")
        .with_routing(routing)
        .with_ipv6(Some("fd00:10::/64".into()))
        .expect("a ULA outside the underlay")
}

fn check_cidr_case(cidr: &str, expect: Result<(), &str>) {
    match (check_cidr(cidr), expect) {
        (Ok(()), Ok(())) => {}
        (Err(e), Err(want)) => assert!(e.contains(want), "{cidr}: {e}"),
        (got, want) => panic!("{cidr}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn ranges_that_are_not_ipv6_or_overlap_the_underlay_are_refused() {
    check_cidr_case("fd00:10::/64", Ok(()));
    check_cidr_case("2001:db8::/48", Ok(()));
    check_cidr_case("10.0.0.0/16", Err("not an IPv6 network"));
    check_cidr_case("fd00:10::", Err("not an IPv6 network"));
    check_cidr_case("fd00:10::/129", Err("not an IPv6 network"));
    check_cidr_case("fd72:6d73:9::/64", Err("overlaps the sandbox's IPv6 underlay fd72:6d73::/32"));
    check_cidr_case("fd72::/16", Err("overlaps"));
    let l = Layout::new("s", 1, 1, "10.112.0.0/16", 28).expect("valid");
    assert!(l.with_ipv6(Some("x".into())).is_err());
}

#[test]
fn every_link_gets_an_ipv6_address_and_the_ipv4_default_routes_an_ipv6_twin() {
    // (routing, commands that must be there)
    let cases: &[(Routing, &[&str])] = &[
        (
            Routing::Static,
            &[
                "-n rms-s-spine addr add fd72:6d73:fe02::1/64 dev r2 nodad",
                "-n rms-s-rack2 addr add fd72:6d73:fe02::2/64 dev up0 nodad",
                "-n rms-s-rack2 -6 route add default via fd72:6d73:fe02::1",
                "-n rms-s-rack1 addr add fd72:6d73:1::1/64 dev rack0 nodad",
                "-n rms-s-r2h2 addr add fd72:6d73:2::12/64 dev eth0 nodad",
                "-n rms-s-r2h2 -6 route add default via fd72:6d73:2::1",
            ],
        ),
        (
            Routing::Bgp,
            &[
                "-n rms-s-spine2 addr add fd72:6d73:ff02::1/64 dev fab0 nodad",
                "-n rms-s-rack1 addr add fd72:6d73:ff02::11/64 dev up1 nodad",
                "-n rms-s-rack2 addr add fd72:6d73:ff01::12/64 dev up0 nodad",
                "-n rms-s-r1h1 addr add fd72:6d73:1::11/64 dev eth0 nodad",
            ],
        ),
    ];
    for (routing, want) in cases {
        let l = layout(*routing);
        let w: Vec<String> = wiring(&l).iter().map(|c| c.join(" ")).collect();
        for c in *want {
            assert!(w.contains(&(*c).to_owned()), "{routing:?}: {c} missing from {w:#?}");
        }
        // Every command is in a sandbox namespace: nothing in the root namespace.
        assert!(w.iter().all(|c| c.starts_with("-n rms-s-")), "{w:#?}");
        if *routing == Routing::Bgp {
            assert!(!w.iter().any(|c| c.contains("rack") && c.contains("route")), "BGP routers: {w:#?}");
        }
        let plain = Layout::new("s", 2, 2, "10.112.0.0/16", 28).expect("valid").with_routing(*routing);
        assert!(wiring(&plain).is_empty(), "IPv4 only: no IPv6 wiring");
    }
    let l = layout(Routing::Static);
    let back: Vec<String> = revive(&l, &l.hosts[2]).iter().map(|c| c.join(" ")).collect();
    assert_eq!(
        back,
        [
            "-n rms-s-r2h1 addr replace fd72:6d73:2::11/64 dev eth0 nodad",
            "-n rms-s-r2h1 -6 route replace default via fd72:6d73:2::1"
        ]
    );
    assert!(revive(&Layout::new("s", 1, 1, "10.112.0.0/16", 28).expect("valid"), &l.hosts[0]).is_empty());
    assert_eq!(
        agent_args(&l, &l.hosts[1]),
        ["--host-ip", "192.168.1.12", "--host-ipv6", "fd72:6d73:1::12", "--tag", "rack=1"]
    );
}

#[test]
fn the_topology_holds_both_networks_for_the_same_groups() {
    for routing in [Routing::Static, Routing::Bgp] {
        let l = layout(routing);
        let t = topology(&l, l.topology());
        assert_eq!(t["networks"][1], json!({"name": "sandbox-s-v6", "cidr": "fd00:10::/64"}));
        assert_eq!(t["topologies"][0]["networks"], json!(["sandbox-s", "sandbox-s-v6"]));
        romana_api::topology::parse(&t.to_string()).expect("a valid topology");
        let plain = Layout::new("s", 2, 2, "10.112.0.0/16", 28).expect("valid");
        assert_eq!(topology(&plain, plain.topology()), plain.topology());
    }
}

#[test]
fn the_ipv6_fabric_view_becomes_router_routes_via_ipv6_next_hops() {
    let l = layout(Routing::Static);
    let fabric: Vec<FabricGroup> = serde_json::from_value(json!([
        {"network": "sandbox-s-v6", "group": "/", "cidr": "fd00:10::/64", "routes": [
            {"dest": "fd00:10::/65", "kind": "group", "via": "/rack-1"},
            {"dest": "fd00:10:0:0:8000::/65", "kind": "group", "via": "/rack-2"}]},
        {"network": "sandbox-s-v6", "group": "/rack-2", "cidr": "fd00:10:0:0:8000::/65", "routes": [
            {"dest": "fd00:10:0:0:8000::/122", "kind": "host", "via": "r2h1", "via_ip": "fd72:6d73:2::11"}]},
        {"network": "sandbox-s", "group": "/", "cidr": "10.112.0.0/16", "routes": [
            {"dest": "10.112.0.0/17", "kind": "group", "via": "/rack-1"}]}
    ]))
    .expect("GET /fabric's shape");
    let r = |ns: &str, d: &str, v: &str| (ns.to_owned(), d.to_owned(), v.to_owned());
    assert_eq!(
        fabric_routes(&l, &fabric),
        vec![
            r("rms-s-spine", "fd00:10::/65", "fd72:6d73:fe01::2"),
            r("rms-s-spine", "fd00:10:0:0:8000::/65", "fd72:6d73:fe02::2"),
            r("rms-s-rack2", "fd00:10:0:0:8000::/122", "fd72:6d73:2::11"),
        ]
    );
    let plain = Layout::new("s", 2, 2, "10.112.0.0/16", 28).expect("valid");
    assert!(fabric_routes(&plain, &fabric).is_empty());
}

#[test]
fn a_cni_result_gives_one_address_of_each_family() {
    let check = |r: serde_json::Value, v4: &str, v6: Option<&str>| {
        assert_eq!(addresses(&r), (v4.to_owned(), v6.map(str::to_owned)), "{r}");
    };
    check(
        json!({"ips": [{"address": "10.112.0.2/32"}, {"address": "fd00:10::2/128"}]}),
        "10.112.0.2",
        Some("fd00:10::2"),
    );
    check(
        json!({"ips": [{"address": "fd00:10::2/128"}, {"address": "10.112.0.2/32"}]}),
        "10.112.0.2",
        Some("fd00:10::2"),
    );
    check(json!({"ips": [{"address": "10.112.0.2/32"}]}), "10.112.0.2", None);
    check(json!({}), "", None);
}
