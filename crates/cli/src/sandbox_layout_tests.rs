//! Tests of the sandbox layout (`sandbox_layout.rs`): names, addresses, wiring, topology, fabric routes.

use super::*;

#[test]
fn layout_names_addresses_and_wiring() {
    let l = Layout::new("demo", 2, 2, "10.112.0.0/16", 28).expect("valid");
    assert_eq!(l.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["r1h1", "r1h2", "r2h1", "r2h2"]);
    assert_eq!(l.hosts[3].ip, "192.168.2.12");
    assert_eq!(l.hosts[3].netns, "rms-demo-r2h2");
    assert_eq!(l.namespaces().len(), 1 + 2 + 4);
    assert!(l.namespaces().iter().all(|n| n.starts_with(&prefix("demo"))));
    let w = l.wiring();
    assert!(
        w.contains(
            &"-n rms-demo-rack2 link add h2 type veth peer name eth0 netns rms-demo-r2h1"
                .split(' ')
                .map(String::from)
                .collect()
        )
    );
    assert!(w.iter().all(|c| !c.is_empty()));
    assert_eq!(l.topology()["topologies"][0]["map"][0]["groups"][1]["assignment"]["rack"], "2");
}

/// One rack, static: the spine gets the rack's prefix toward the rack router, the rack
/// router the hosts' routes (with the rack at the root, the hosts' routes went to the spine).
#[test]
fn one_rack_routes_through_its_router() {
    let l = Layout::new("o", 1, 2, "10.112.0.0/16", 28).expect("valid");
    let spec = romana_api::topology::parse(&l.topology().to_string()).expect("a valid topology");
    let mut ipam = romana_ipam::Ipam::new(spec).expect("carves");
    for h in &l.hosts {
        let spec = romana_ipam::spec::HostSpec::new(h.name.parse().expect("name"), h.ip.parse().expect("ip"))
            .with_tag("rack", "1");
        ipam.add_host(spec).expect("fits");
        let req = romana_ipam::AllocRequest {
            name: format!("{}p", h.name).parse().expect("name"),
            host: h.name.parse().expect("name"),
            tenant: "t".parse().expect("tenant"),
            segment: "".parse().expect("segment"),
        };
        ipam.allocate(&req).expect("address");
    }
    let fabric: Vec<FabricGroup> = ipam.fabric_routes().iter().map(FabricGroup::from).collect();
    let routes = l.fabric_routes(&fabric);
    let spine: Vec<_> = routes.iter().filter(|r| r.0 == "rms-o-spine").collect();
    assert!(!spine.is_empty(), "the spine routes the rack: {routes:?}");
    assert!(spine.iter().all(|r| r.2 == Layout::uplink_ip(1)), "{routes:?}");
    let rack: Vec<_> = routes.iter().filter(|r| r.0 == "rms-o-rack1").map(|r| r.2.as_str()).collect();
    assert_eq!(rack, ["192.168.1.11", "192.168.1.12"], "{routes:?}");
}

#[test]
fn reflectors_make_the_rack_ibgp_and_name_its_first_hosts() {
    let l = Layout::new("r", 2, 3, "10.112.0.0/16", 28).expect("valid").with_routing(Routing::Bgp);
    let t = l.clone().with_reflectors(1).expect("bgp").topology();
    let rack = &t["topologies"][0]["map"][0]["groups"][1]["bgp"];
    assert_eq!(rack["reflectors"], json!(["192.168.2.11"]));
    assert!(rack.get("host_asn").is_none(), "iBGP: {rack}");
    romana_api::topology::parse(&t.to_string()).expect("a valid topology");
    assert!(l.clone().with_reflectors(4).expect_err("too many").contains("a rack has 3 hosts"));
    let plain = Layout::new("r", 2, 3, "10.112.0.0/16", 28).expect("valid");
    assert!(plain.with_reflectors(1).expect_err("static").contains("need --routing bgp"));
}

#[test]
fn bgp_layout_has_two_spines_and_no_routes_on_routers() {
    let l = Layout::new("b", 2, 2, "10.112.0.0/16", 28).expect("valid").with_routing(Routing::Bgp);
    assert_eq!(l.spines(), ["rms-b-spine", "rms-b-spine2"]);
    assert_eq!(l.namespaces().len(), 2 + 2 + 4);
    assert_eq!(l.routers().len(), 4);
    let w: Vec<String> = l.wiring().iter().map(|c| c.join(" ")).collect();
    for r in ["rms-b-rack1", "rms-b-rack2", "rms-b-spine", "rms-b-spine2"] {
        assert!(!w.iter().any(|c| c.starts_with(&format!("-n {r} route"))), "no route on router {r}: {w:#?}");
    }
    assert!(w.contains(&"-n rms-b-spine2 link add r1 type veth peer name up1 netns rms-b-rack1".to_owned()));
    assert!(w.contains(&"-n rms-b-rack1 addr add 192.168.253.11/24 dev up1".to_owned()));
    assert!(w.contains(&"-n rms-b-r2h2 route add default via 192.168.2.1".to_owned()), "hosts keep theirs");
    // The topology carries each group's BGP parameters, and parses as a valid topology.
    let t = l.topology();
    let root = &t["topologies"][0]["map"][0];
    assert_eq!(root["bgp"]["routers"], json!(["192.168.254.1", "192.168.253.1"]));
    assert_eq!(root["groups"][1]["bgp"]["uplinks"], json!(["192.168.254.12", "192.168.253.12"]));
    assert_eq!(root["groups"][1]["bgp"]["host_asn"], 65102);
    romana_api::topology::parse(&t.to_string()).expect("a valid topology");
}

#[test]
fn the_internet_sits_behind_the_spines() {
    // (routing, commands that must be there, routers that must hold no default route)
    let cases: &[(Routing, &[&str])] = &[
        (
            Routing::Static,
            &[
                "-n rms-i-inet addr add 198.18.0.1/32 dev lo",
                "-n rms-i-spine link add inet type veth peer name s1 netns rms-i-inet",
                "-n rms-i-spine route add default via 192.168.241.2",
                "-n rms-i-spine route add 192.168.2.0/24 via 192.168.254.10",
                "-n rms-i-inet route add 192.168.0.0/16 via 192.168.241.1",
            ],
        ),
        (
            Routing::Bgp,
            &[
                "-n rms-i-spine2 link add inet type veth peer name s2 netns rms-i-inet",
                "-n rms-i-spine2 route add default via 192.168.242.2",
                "-n rms-i-spine2 route add 192.168.1.0/24 via 192.168.253.11",
                "-n rms-i-rack2 route add default via 192.168.254.1",
            ],
        ),
    ];
    for (routing, want) in cases {
        let l = Layout::new("i", 2, 1, "10.112.0.0/16", 28).expect("valid").with_routing(*routing);
        let plain: Vec<String> = l.wiring().iter().map(|c| c.join(" ")).collect();
        assert!(!plain.iter().any(|c| c.contains("inet")), "no internet unless asked: {plain:#?}");
        let l = l.with_egress(Egress { internet: true, ..Egress::default() });
        assert_eq!(l.namespaces().last().map(String::as_str), Some("rms-i-inet"));
        let w: Vec<String> = l.wiring().iter().map(|c| c.join(" ")).collect();
        for c in *want {
            assert!(w.contains(&(*c).to_owned()), "{routing:?}: {c} missing from {w:#?}");
        }
        // The internet never learns the pod range: it can answer only what was masqueraded.
        assert!(!w.iter().any(|c| c.starts_with("-n rms-i-inet route") && c.contains("10.112")), "{w:#?}");
    }
    let egress = Egress { internet: false, nat_outgoing: false, no_nat: vec!["198.18.0.0/15".into()] };
    let t = Layout::new("i", 2, 1, "10.112.0.0/16", 28).expect("valid").with_egress(egress).topology();
    assert_eq!(t["networks"][0]["nat_outgoing"], false);
    let spec = romana_api::topology::parse(&t.to_string()).expect("a valid topology");
    assert!(!spec.networks[0].nat_outgoing);
    assert_eq!(spec.no_nat, vec!["198.18.0.0/15".parse().expect("cidr")]);
}

#[test]
fn bad_layouts_are_refused_with_the_reason() {
    assert!(Layout::new("Bad!", 2, 2, "10.0.0.0/16", 28).expect_err("bad name").contains("a-z 0-9"));
    assert!(Layout::new("toolongname", 2, 2, "10.0.0.0/16", 28).is_err());
    assert!(Layout::new("ok", 0, 2, "10.0.0.0/16", 28).expect_err("no racks").contains("racks"));
}

#[test]
fn fabric_view_becomes_router_routes() {
    let l = Layout::new("t", 2, 1, "10.112.0.0/16", 28).expect("valid");
    let fabric: Vec<FabricGroup> = serde_json::from_value(json!([
        {"network": "sandbox-t", "group": "/", "cidr": "10.112.0.0/16", "routes": [
            {"dest": "10.112.0.0/17", "kind": "group", "via": "/rack-1"},
            {"dest": "10.112.128.0/17", "kind": "group", "via": "/rack-2"}],
         "vips": [{"dest": "198.51.100.5/32", "kind": "group", "via": "/rack-1"}]},
        {"network": "sandbox-t", "group": "/rack-1", "cidr": "10.112.0.0/17", "routes": [
            {"dest": "10.112.0.0/28", "kind": "host", "via": "r1h1", "via_ip": "192.168.1.11"},
            {"dest": "10.112.0.16/28", "kind": "throw"}],
         "vips": [{"dest": "198.51.100.5/32", "kind": "host", "via": "r1h1", "via_ip": "192.168.1.11"}]},
        {"network": "other", "group": "/", "cidr": "10.9.0.0/16", "routes": [{"dest": "10.9.0.0/16", "kind": "group", "via": "/x"}]}
    ]))
    .expect("GET /fabric's shape");
    assert_eq!(
        l.fabric_routes(&fabric),
        vec![
            ("rms-t-spine".into(), "10.112.0.0/17".into(), "192.168.254.6".into()),
            ("rms-t-spine".into(), "10.112.128.0/17".into(), "192.168.254.10".into()),
            ("rms-t-spine".into(), "198.51.100.5/32".into(), "192.168.254.6".into()),
            ("rms-t-rack1".into(), "10.112.0.0/28".into(), "192.168.1.11".into()),
            ("rms-t-rack1".into(), "198.51.100.5/32".into(), "192.168.1.11".into()),
        ]
    );
}
