//! Dual-stack properties of the IPAM core: on a topology with an IPv4 and an IPv6 network over the
//! same groups, an endpoint holds one address of each family or none (the IPv6 network is the
//! smaller, so it runs out first and the IPv4 half must be given back), no address is handed out
//! twice, and the route computation sends every address of both families to its host, with host
//! routes no more than a per-block scheme needs. IPv6 aggregation is exact and, on small tries,
//! minimal against brute force, as the IPv4 tests hold it. An IPv6-only topology works alone. IPv6
//! routes lead to the host's IPv6 underlay address, never an IPv4 one; a host without one gets a
//! throw for its IPv6 blocks (unreachable, never captured by another host's aggregate).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;
use romana_ipam::spec::{
    GroupOrHostSpec, GroupSpec, HostSpec, LayoutSpec, MapSpec, NetworkSpec, TopologySpec,
};
use romana_ipam::{AllocRequest, Ipam, IpamError, RouteTarget, V6_SUFFIX, aggregate, route_lookup};
use romana_model::{Cidr, Family, addr_value};

fn network(name: &str, cidr: &str, block_mask: u8) -> NetworkSpec {
    NetworkSpec {
        name: name.parse().unwrap(),
        cidr: cidr.parse().unwrap(),
        block_mask: Some(block_mask),
        tenants: vec![],
        layout: LayoutSpec::Blocks,
        nat_outgoing: true,
    }
}

/// Two racks, six hosts; `networks` over the same groups.
fn world(networks: Vec<NetworkSpec>) -> Ipam {
    let group = |name: &str| {
        GroupOrHostSpec::Group(GroupSpec { name: name.parse().unwrap(), ..GroupSpec::default() })
    };
    let names = networks.iter().map(|n| n.name.clone()).collect();
    let spec = TopologySpec {
        networks,
        topologies: vec![MapSpec { networks: names, map: vec![group("r1"), group("r2")] }],
        no_nat: vec![],
    };
    let mut ipam = Ipam::new(spec).unwrap();
    for h in 0..6 {
        let mut spec =
            HostSpec::new(format!("h{h}").parse().unwrap(), format!("192.168.0.{}", h + 1).parse().unwrap());
        // A dual-stack underlay on every host but the last, which keeps an IPv4 one only.
        if h < 5 {
            spec = spec.with_ipv6(format!("fd00:ffff::{}", h + 1).parse().unwrap());
        }
        ipam.add_host(spec).unwrap();
    }
    ipam
}

/// IPv4 /22 in /29 blocks; IPv6 /120 (a quarter of the addresses) in /126 blocks.
fn dual() -> Ipam {
    world(vec![network("net4", "10.0.0.0/22", 29), network("net6", "fd00::/120", 126)])
}

fn request(name: u16, host: u8, owner: u8) -> AllocRequest {
    AllocRequest {
        name: format!("n{name}").parse().unwrap(),
        host: format!("h{host}").parse().unwrap(),
        tenant: format!("t{}", owner % 2).parse().unwrap(),
        segment: format!("s{}", owner / 2).parse().unwrap(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Alloc { name: u16, host: u8, owner: u8 },
    Release { name: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u16..400, 0u8..6, 0u8..3).prop_map(|(name, host, owner)| Op::Alloc { name, host, owner }),
        2 => (0u16..400).prop_map(|name| Op::Release { name }),
    ]
}

/// Each endpoint's addresses by family, from the allocations.
fn endpoints(ipam: &Ipam) -> BTreeMap<String, BTreeMap<Family, IpAddr>> {
    let mut out: BTreeMap<String, BTreeMap<Family, IpAddr>> = BTreeMap::new();
    for a in ipam.allocations() {
        let name = a.name.as_str();
        let endpoint = name.strip_suffix(V6_SUFFIX).unwrap_or(name);
        let previous = out.entry(endpoint.to_owned()).or_default().insert(Family::of(a.ip), a.ip);
        assert!(previous.is_none(), "{endpoint} holds two addresses of one family");
    }
    out
}

/// Where another host's route must send `a`: to its host's underlay address of `a`'s family
/// (never an IPv4 next hop for an IPv6 address); nowhere (a throw) when the host has none.
fn expected_target(ipam: &Ipam, a: &romana_ipam::Allocation) -> Option<RouteTarget> {
    let host = ipam.hosts().into_iter().find(|x| x.name == a.host).unwrap();
    let ip = match Family::of(a.ip) {
        Family::V4 => Some(host.ip),
        Family::V6 => host.ipv6.map(IpAddr::V6),
    };
    ip.map(|ip| RouteTarget::Host { name: a.host.clone(), ip })
}

fn check_routes(ipam: &Ipam) -> Result<(), TestCaseError> {
    let all = ipam.allocations();
    for h in ipam.hosts() {
        let routes = ipam.host_routes(&h.name).unwrap();
        let table: Vec<(Cidr, Option<RouteTarget>)> = routes
            .routes
            .iter()
            .map(|r| (r.dest, Some(r.target.clone()).filter(|t| *t != RouteTarget::Throw)))
            .collect();
        // One throw per network at most beyond the per-block count: aggregation never adds routes.
        prop_assert!(routes.routes.len() <= routes.per_block + 2, "{routes:?}");
        for (_, _, group) in &h.placement.networks {
            for a in all.iter().filter(|a| group.contains_addr(a.ip)) {
                let got = route_lookup(&table, Family::of(a.ip), addr_value(a.ip)).flatten();
                if a.host == h.name {
                    prop_assert_eq!(got, None, "own address {} must not be routed away", a.ip);
                } else {
                    prop_assert_eq!(got, expected_target(ipam, a), "{}", a.ip);
                }
            }
        }
    }
    for g in ipam.fabric_routes() {
        let table: Vec<(Cidr, Option<RouteTarget>)> =
            g.routes.iter().map(|r| (r.dest, Some(r.target.clone()))).collect();
        if g.routes.iter().any(|r| matches!(r.target, RouteTarget::Host { .. })) {
            for a in all.iter().filter(|a| g.cidr.contains_addr(a.ip)) {
                let got = route_lookup(&table, Family::of(a.ip), addr_value(a.ip))
                    .flatten()
                    .filter(|t| *t != RouteTarget::Throw);
                prop_assert_eq!(got.clone(), expected_target(ipam, a), "{} in {}", a.ip, g.path);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn both_families_or_neither(ops in proptest::collection::vec(op(), 1..400)) {
        let mut ipam = dual();
        for op in &ops {
            match op {
                Op::Alloc { name, host, owner } => {
                    let req = request(*name, *host, *owner);
                    let before = ipam.allocations().len();
                    match ipam.allocate_stack(&req) {
                        Ok(got) => {
                            let families: Vec<Family> = got.iter().map(|a| Family::of(a.ip)).collect();
                            prop_assert_eq!(families, vec![Family::V4, Family::V6]);
                            prop_assert_eq!(got[0].name.as_str(), req.name.as_str());
                            prop_assert_eq!(got[1].name.to_string(), format!("{}{V6_SUFFIX}", req.name));
                            // A retry gives the same addresses and takes nothing more.
                            let again = ipam.allocate_stack(&req).unwrap();
                            prop_assert_eq!(again.iter().map(|a| a.ip).collect::<Vec<_>>(), got.iter().map(|a| a.ip).collect::<Vec<_>>());
                            prop_assert!(again.iter().all(|a| !a.fresh));
                        }
                        Err(IpamError::Exhausted { networks, .. }) => {
                            prop_assert!(networks.contains("net6") || networks.contains("net4"), "{networks}");
                            prop_assert_eq!(ipam.allocations().len(), before, "a failed ADD left an address");
                        }
                        // The name is held by another host, tenant or segment.
                        Err(IpamError::NameExists { .. }) => {}
                        Err(e) => prop_assert!(false, "{op:?}: {e}"),
                    }
                }
                Op::Release { name } => {
                    match ipam.release_stack(&format!("n{name}")) {
                        Ok(released) => prop_assert_eq!(released.len(), 2),
                        Err(e) => prop_assert!(matches!(e, IpamError::NotFound(_)), "{e}"),
                    }
                }
            }
            let eps = endpoints(&ipam);
            for (name, by_family) in &eps {
                prop_assert_eq!(by_family.len(), 2, "{} holds {:?}", name, by_family);
                let (a4, a6) = (ipam.lookup(name).unwrap(), ipam.lookup(&format!("{name}{V6_SUFFIX}")).unwrap());
                prop_assert_eq!((&a4.host, &a4.tenant, &a4.segment), (&a6.host, &a6.tenant, &a6.segment));
            }
            let all = ipam.allocations();
            let ips: std::collections::BTreeSet<IpAddr> = all.iter().map(|a| a.ip).collect();
            prop_assert_eq!(ips.len(), all.len(), "an address was handed out twice");
        }
        // The rollback path is taken by most long cases (IPv6 runs out first);
        // `exhausting_ipv6_gives_back_ipv4` holds it on its own.
        check_routes(&ipam)?;
    }
}

#[test]
fn exhausting_ipv6_gives_back_ipv4() {
    // IPv6 has 4 addresses per rack (one /126 block each); IPv4 plenty.
    let mut ipam = world(vec![network("net4", "10.0.0.0/22", 29), network("net6", "fd00::/125", 126)]);
    let h0 = |n: u16| request(n, 0, 0);
    for n in 0..4 {
        assert_eq!(ipam.allocate_stack(&h0(n)).unwrap().len(), 2);
    }
    let before = ipam.allocations();
    match ipam.allocate_stack(&h0(4)) {
        Err(IpamError::Exhausted { networks, host, .. }) => {
            assert_eq!(host.as_str(), "h0");
            assert!(networks.contains("net6"), "{networks}");
        }
        other => panic!("want Exhausted, got {other:?}"),
    }
    assert_eq!(ipam.allocations(), before, "the IPv4 half was not given back");
    assert!(ipam.lookup("n4").is_none());
    // Releasing one endpoint frees both halves, and the next takes them.
    assert_eq!(ipam.release_stack("n0").unwrap().len(), 2);
    let got = ipam.allocate_stack(&h0(4)).unwrap();
    assert_eq!(got.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>(), ["10.0.0.0", "fd00::"]);
}

#[test]
fn ipv6_only_endpoints_keep_their_plain_name() {
    let mut ipam = world(vec![network("net6", "fd00::/112", 124)]);
    let got = ipam.allocate_stack(&request(1, 3, 0)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].name.as_str(), got[0].prefix_len), ("n1", 128));
    assert!(got[0].ip.is_ipv6());
    assert_eq!(ipam.release_stack("n1").unwrap().len(), 1);
    // An address releases only itself, in either family.
    let mut ipam = dual();
    let got = ipam.allocate_stack(&request(2, 1, 0)).unwrap();
    assert_eq!(ipam.release_stack(&got[1].ip.to_string()).unwrap().len(), 1);
    assert!(ipam.lookup("n2").is_some() && ipam.lookup(&format!("n2{V6_SUFFIX}")).is_none());
}

#[test]
fn ipv6_routes_at_scale_aggregate_per_host() {
    // Every host of a rack takes blocks; routes stay within the per-block count and reach hosts.
    let mut ipam = dual();
    for n in 0..120 {
        ipam.allocate_stack(&request(n, (n % 6) as u8, (n % 3) as u8)).unwrap();
    }
    check_routes(&ipam).unwrap();
    let h0 = ipam.host_routes(&"h0".parse().unwrap()).unwrap();
    assert!(h0.routes.iter().any(|r| r.dest.family() == Family::V6), "{h0:?}");
}

/// Brute force over every labelling of every trie node of a tiny IPv6 trie.
fn brute_force(within: Cidr, items: &[(Cidr, Option<u8>)], labels: &[Option<u8>]) -> usize {
    let mut nodes = vec![within];
    let mut i = 0;
    while i < nodes.len() {
        if let Some((a, b)) = nodes[i].halves().filter(|_| nodes[i].host_bits() > 2) {
            nodes.push(a);
            nodes.push(b);
        }
        i += 1;
    }
    let choices = labels.len() + 1;
    let mut best = usize::MAX;
    for mut code in 0..choices.pow(nodes.len() as u32) {
        let mut routes = Vec::new();
        for n in &nodes {
            let pick = code % choices;
            code /= choices;
            if pick > 0 {
                routes.push((*n, labels[pick - 1]));
            }
        }
        let ok = items.iter().all(|(cidr, want)| {
            (cidr.first()..=cidr.last())
                .all(|v| route_lookup(&routes, Family::V6, v).unwrap_or(None) == *want)
        });
        if ok {
            best = best.min(routes.len());
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ipv6_aggregation_exact_and_minimal(blocks in proptest::collection::vec(proptest::option::of(proptest::option::of(1u8..=2)), 4)) {
        let within: Cidr = "fd00::/124".parse().unwrap();
        let items: Vec<(Cidr, Option<u8>)> = blocks
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.map(|l| (within.subnet(i as u128, 126).unwrap(), l)))
            .collect();
        let routes = aggregate(within, &items);
        for (cidr, want) in &items {
            for v in cidr.first()..=cidr.last() {
                prop_assert_eq!(route_lookup(&routes, Family::V6, v).unwrap_or(None), *want);
            }
        }
        prop_assert_eq!(routes.len(), brute_force(within, &items, &[None, Some(1), Some(2)]));
    }
}

/// A host's IPv6 underlay address: unique among hosts, only beside an IPv4 address, and part of
/// what makes a repeated registration the same host.
#[test]
fn ipv6_underlay_addresses_are_checked() {
    let mut ipam = dual();
    let host = |name: &str, ip: &str| HostSpec::new(name.parse().unwrap(), ip.parse().unwrap());
    let check = |ipam: &mut Ipam, spec: HostSpec, expect: Result<(), &str>| {
        let got = ipam.add_host(spec).map(|_| ()).map_err(|e| e.to_string());
        match expect {
            Ok(()) => assert_eq!(got, Ok(())),
            Err(text) => {
                assert!(got.as_ref().is_err_and(|e| e.contains(text)), "{got:?} should say {text:?}")
            }
        }
    };
    check(
        &mut ipam,
        host("h9", "192.168.0.9").with_ipv6("fd00:ffff::1".parse().unwrap()),
        Err("fd00:ffff::1 is already used by host h0"),
    );
    check(
        &mut ipam,
        host("h9", "fd00:ffff::9").with_ipv6("fd00:ffff::10".parse().unwrap()),
        Err("the host's address fd00:ffff::9 is IPv6"),
    );
    check(&mut ipam, host("h9", "192.168.0.9").with_ipv6("fd00:ffff::9".parse().unwrap()), Ok(()));
    // Registering again with the same addresses is the same host; another IPv6 address is not.
    check(&mut ipam, host("h9", "192.168.0.9").with_ipv6("fd00:ffff::9".parse().unwrap()), Ok(()));
    check(
        &mut ipam,
        host("h9", "192.168.0.9").with_ipv6("fd00:ffff::99".parse().unwrap()),
        Err("host h9 already exists"),
    );
    // Removed, its IPv6 address is free again.
    ipam.remove_host(&"h9".parse().unwrap()).unwrap();
    check(&mut ipam, host("h10", "192.168.0.10").with_ipv6("fd00:ffff::9".parse().unwrap()), Ok(()));
    let v = ipam.hosts().into_iter().find(|h| h.name.as_str() == "h10").unwrap();
    assert_eq!(v.ipv6, Some("fd00:ffff::9".parse().unwrap()));
}

/// One family at a time (OpenStack allocates a port's subnets separately): the names a stack
/// would give, a pinned address of the family, and clear errors for a family the host lacks.
#[test]
fn one_family_at_a_time_names_as_a_stack() {
    let mut ipam = dual();
    let v6 = ipam.allocate_family(&request(1, 0, 0), Family::V6, None).unwrap();
    assert_eq!((v6.name.as_str(), v6.ip.is_ipv6(), v6.prefix_len), ("n1#v6", true, 128));
    let v4 = ipam.allocate_family(&request(1, 0, 0), Family::V4, None).unwrap();
    assert_eq!((v4.name.as_str(), v4.ip.is_ipv4()), ("n1", true));
    // The same endpoint as a stack: the same two, not fresh.
    let again = ipam.allocate_stack(&request(1, 0, 0)).unwrap();
    assert_eq!(
        again.iter().map(|a| (a.name.as_str(), a.ip, a.fresh)).collect::<Vec<_>>(),
        [("n1", v4.ip, false), ("n1#v6", v6.ip, false)]
    );
    // Pinned: an address of the family, named the same way; another family's address is refused.
    let pinned =
        ipam.allocate_family(&request(2, 0, 0), Family::V6, Some("fd00::7".parse().unwrap())).unwrap();
    assert_eq!((pinned.name.as_str(), pinned.ip.to_string().as_str()), ("n2#v6", "fd00::7"));
    let e =
        ipam.allocate_family(&request(3, 0, 0), Family::V6, Some("10.0.0.9".parse().unwrap())).unwrap_err();
    assert_eq!(e.to_string(), "10.0.0.9 is not an IPv6 address");
    // Releasing the name releases both.
    assert_eq!(ipam.release_stack("n1").unwrap().len(), 2);
    // IPv4 only: IPv6 is refused naming the family, host, tenant and the tenant's networks.
    let mut ipam = world(vec![network("net4", "10.0.0.0/22", 29)]);
    match ipam.allocate_family(&request(1, 2, 0), Family::V6, None) {
        Err(e @ IpamError::NoFamily { .. }) => assert_eq!(
            e.to_string(),
            "host h2 has no IPv6 network for tenant \"t0\" (the topology's networks of the tenant: net4 (10.0.0.0/22))"
        ),
        other => panic!("want NoFamily, got {other:?}"),
    }
    assert!(ipam.allocations().is_empty());
    // IPv6 only: the plain name holds the IPv6 address, as a stack's would.
    let mut ipam = world(vec![network("net6", "fd00::/112", 124)]);
    let a = ipam.allocate_family(&request(1, 2, 0), Family::V6, None).unwrap();
    assert_eq!(a.name.as_str(), "n1");
    assert!(matches!(
        ipam.allocate_family(&request(5, 9, 0), Family::V6, None),
        Err(IpamError::UnknownHost(_))
    ));
}
