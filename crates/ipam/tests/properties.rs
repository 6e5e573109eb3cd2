//! Property tests of the IPAM core: uniqueness, lowest-free reuse, exact carving, determinism and
//! route aggregation that sends every allocated address to its host.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;
use romana_ipam::spec::{
    GroupOrHostSpec, GroupSpec, HostSpec, LayoutSpec, MapSpec, NetworkSpec, TopologySpec,
};
use romana_ipam::{AllocRequest, Ipam, RouteTarget, route_lookup};
use romana_model::{Cidr, Family, addr_value};

/// A random operation on a fixed topology.
#[derive(Debug, Clone)]
enum Op {
    Alloc { name: u16, host: u8, owner: u8 },
    Release { name: u16 },
    ReleaseIp { index: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u16..400, 0u8..6, 0u8..3).prop_map(|(name, host, owner)| Op::Alloc { name, host, owner }),
        2 => (0u16..400).prop_map(|name| Op::Release { name }),
        1 => (0u16..400).prop_map(|index| Op::ReleaseIp { index }),
    ]
}

/// Two racks of a /22 with /29 blocks (small, so exhaustion happens too), six hosts.
fn world() -> Ipam {
    let group = |name: &str| {
        GroupOrHostSpec::Group(GroupSpec { name: name.parse().expect("name"), ..GroupSpec::default() })
    };
    let spec = TopologySpec {
        networks: vec![NetworkSpec {
            name: "net".parse().expect("name"),
            cidr: "10.0.0.0/22".parse().expect("cidr"),
            block_mask: Some(29),
            tenants: vec![],
            layout: LayoutSpec::Blocks,
            nat_outgoing: true,
        }],
        topologies: vec![MapSpec {
            networks: vec!["net".parse().expect("name")],
            map: vec![group("r1"), group("r2")],
        }],
        no_nat: vec![],
    };
    let mut ipam = Ipam::new(spec).expect("valid topology");
    for h in 0..6 {
        let spec = HostSpec::new(
            format!("h{h}").parse().expect("name"),
            format!("192.168.0.{}", h + 1).parse().expect("ip"),
        );
        ipam.add_host(spec).expect("host fits");
    }
    ipam
}

fn request(name: u16, host: u8, owner: u8) -> AllocRequest {
    AllocRequest {
        name: format!("n{name}").parse().expect("name"),
        host: format!("h{host}").parse().expect("host"),
        tenant: format!("t{}", owner % 2).parse().expect("tenant"),
        segment: format!("s{}", owner / 2).parse().expect("segment"),
    }
}

fn apply(ipam: &mut Ipam, op: &Op) -> Result<Option<IpAddr>, String> {
    match op {
        Op::Alloc { name, host, owner } => {
            ipam.allocate(&request(*name, *host, *owner)).map(|a| Some(a.ip)).map_err(|e| e.to_string())
        }
        Op::Release { name } => ipam.release(&format!("n{name}")).map(|_| None).map_err(|e| e.to_string()),
        Op::ReleaseIp { index } => {
            let ip = format!("10.0.{}.{}", index / 256 % 4, index % 256);
            ipam.release(&ip).map(|_| None).map_err(|e| e.to_string())
        }
    }
}

/// The address the allocation rule should pick for `owner` on `host`: the lowest free address of
/// its own blocks; else the lowest address of the lowest emptied block; else of the lowest uncarved block.
fn expected_next(ipam: &Ipam, req: &AllocRequest) -> Option<u128> {
    let group = ipam.host_placement(&req.host)?.networks[0].2;
    let used: BTreeSet<u128> = ipam.allocations().iter().map(|a| addr_value(a.ip)).collect();
    let blocks = ipam.blocks();
    let in_group = |c: &Cidr| group.contains(c);
    let own = blocks.iter().filter(|b| in_group(&b.cidr)).filter(|b| {
        b.owner.as_ref().is_some_and(|(t, s, h)| *t == req.tenant && *s == req.segment && *h == req.host)
    });
    if let Some(v) = own.flat_map(|b| b.cidr.first()..=b.cidr.last()).find(|v| !used.contains(v)) {
        return Some(v);
    }
    if let Some(b) = blocks.iter().filter(|b| in_group(&b.cidr) && b.owner.is_none()).min_by_key(|b| b.cidr) {
        return Some(b.cidr.first());
    }
    let carved: BTreeSet<Cidr> = blocks.iter().map(|b| b.cidr).collect();
    (0..(1u128 << (29 - group.prefix_len())))
        .map(|i| group.subnet(i, 29).expect("inside"))
        .find(|c| !carved.contains(c))
        .map(|c| c.first())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_address_twice_and_lowest_free(ops in proptest::collection::vec(op(), 1..400)) {
        let mut ipam = world();
        let mut names: BTreeMap<String, IpAddr> = BTreeMap::new();
        for op in &ops {
            if let Op::Alloc { name, host, owner } = op {
                let req = request(*name, *host, *owner);
                let fresh = ipam.lookup(req.name.as_str()).is_none();
                let want = expected_next(&ipam, &req);
                let got = apply(&mut ipam, op);
                if fresh {
                    match (got, want) {
                        (Ok(Some(ip)), Some(w)) => prop_assert_eq!(addr_value(ip), w, "{:?}", op),
                        (Err(e), None) => prop_assert!(e.contains("no available IP"), "{}", e),
                        (got, want) => prop_assert!(false, "{:?}: got {:?}, want {:?}", op, got, want),
                    }
                }
            } else {
                let _ = apply(&mut ipam, op);
            }
            let all = ipam.allocations();
            let ips: BTreeSet<IpAddr> = all.iter().map(|a| a.ip).collect();
            prop_assert_eq!(ips.len(), all.len(), "an address was handed out twice");
            prop_assert_eq!(all.len(), ipam.address_count());
            names = all.iter().map(|a| (a.name.to_string(), a.ip)).collect();
        }
        // Every allocation sits in its host's group.
        for (name, ip) in &names {
            let a = ipam.lookup(name).expect("listed allocations resolve");
            let group = ipam.host_placement(&a.host).expect("known host").networks[0].2;
            prop_assert!(group.contains_addr(*ip));
            prop_assert_eq!(ipam.lookup_ip(*ip).map(|x| x.name.to_string()), Some(name.clone()));
        }
    }

    /// The listing a page at a time is the listing whole, whatever the page's size.
    #[test]
    fn pages_of_allocations_are_the_allocations(ops in proptest::collection::vec(op(), 1..200), size in 1usize..9) {
        let mut ipam = world();
        for op in &ops {
            let _ = apply(&mut ipam, op);
        }
        let (mut paged, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            let (page, next) = ipam.allocations_page(cursor, size);
            prop_assert!(!page.is_empty() || paged.is_empty(), "an empty page after {pages}");
            paged.extend(page);
            pages += 1;
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        prop_assert_eq!(paged, ipam.allocations());
    }

    #[test]
    fn deterministic(ops in proptest::collection::vec(op(), 1..200)) {
        let (mut a, mut b) = (world(), world());
        for op in &ops {
            prop_assert_eq!(apply(&mut a, op), apply(&mut b, op));
        }
        prop_assert_eq!(a.allocations(), b.allocations());
        prop_assert_eq!(a.blocks(), b.blocks());
    }

    #[test]
    fn routes_send_every_address_to_its_host(ops in proptest::collection::vec(op(), 1..300)) {
        let mut ipam = world();
        for op in &ops {
            let _ = apply(&mut ipam, op);
        }
        let all = ipam.allocations();
        for h in ipam.hosts() {
            let routes = ipam.host_routes(&h.name).expect("known host");
            let table: Vec<(Cidr, Option<RouteTarget>)> =
                routes.routes.iter().map(|r| (r.dest, Some(r.target.clone()).filter(|t| *t != RouteTarget::Throw))).collect();
            prop_assert!(routes.routes.len() <= routes.per_block + 1);
            let group = h.placement.networks[0].2;
            for a in all.iter().filter(|a| group.contains_addr(a.ip)) {
                let got = route_lookup(&table, Family::of(a.ip), addr_value(a.ip)).flatten();
                if a.host == h.name {
                    prop_assert_eq!(got, None, "own address {} must not be routed away", a.ip);
                } else {
                    prop_assert_eq!(got, Some(RouteTarget::Host { name: a.host.clone(), ip: ipam.hosts().iter().find(|x| x.name == a.host).expect("owner").ip }));
                }
            }
        }
        for g in ipam.fabric_routes() {
            let table: Vec<(Cidr, Option<RouteTarget>)> = g.routes.iter().map(|r| (r.dest, Some(r.target.clone()))).collect();
            if !g.hosts.is_empty() || g.routes.iter().any(|r| matches!(r.target, RouteTarget::Host { .. })) {
                for a in all.iter().filter(|a| g.cidr.contains_addr(a.ip)) {
                    let got = route_lookup(&table, Family::of(a.ip), addr_value(a.ip)).flatten();
                    let right = matches!(got, Some(RouteTarget::Host { ref name, .. }) if *name == a.host);
                    prop_assert!(right, "{} routed to {:?}", a.ip, got);
                }
            }
        }
    }

    /// The route manager skips its pass while `routes_revision` stands still: it must move
    /// whenever any host's route stamp does (and never go back), through allocations, releases
    /// and hosts leaving and joining; and most allocations leave it where it was.
    #[test]
    fn the_routes_revision_moves_whenever_a_route_stamp_does(
        ops in proptest::collection::vec((op(), 0u8..16, 0u8..6), 1..300),
    ) {
        let mut ipam = world();
        let alive = |_: &romana_model::HostName| false;
        let mut unmoved = 0;
        for (op, kind, h) in &ops {
            let (rev, stamps) = (ipam.routes_revision(), ipam.route_stamps(&alive));
            let name: romana_model::HostName = format!("h{h}").parse().expect("name");
            match kind {
                0 => drop(ipam.remove_host(&name)),
                1 => drop(ipam.add_host(HostSpec::new(name, format!("192.168.0.{}", h + 1).parse().expect("ip")))),
                _ => drop(apply(&mut ipam, op)),
            }
            let now = ipam.routes_revision();
            prop_assert!(now >= rev, "the revision went back from {rev} to {now}");
            if ipam.route_stamps(&alive) != stamps {
                prop_assert!(now != rev, "a stamp moved after {op:?} (kind {kind}, host {h}), the revision did not");
            } else if now == rev {
                unmoved += 1;
            }
        }
        let allocs = ops.iter().filter(|(op, kind, _)| *kind > 1 && matches!(op, Op::Alloc { .. })).count();
        prop_assert!(allocs < 20 || unmoved > 0, "no operation of {} left the revision where it was", ops.len());
    }

    #[test]
    fn carving_partitions_the_parent(widths in proptest::collection::vec(1usize..7, 1..4), prefix in 8u8..14) {
        // A nested map: level i has widths[i] groups under each group of level i-1.
        fn level(widths: &[usize]) -> Vec<GroupOrHostSpec> {
            match widths {
                [] => vec![],
                [w, rest @ ..] => (0..*w)
                    .map(|i| GroupOrHostSpec::Group(GroupSpec { name: format!("g{i}").parse().expect("name"), groups: level(rest), ..GroupSpec::default() }))
                    .collect(),
            }
        }
        let cidr = Cidr::containing("10.0.0.0".parse().expect("ip"), prefix);
        let spec = TopologySpec {
            networks: vec![NetworkSpec { name: "n".parse().expect("n"), cidr, block_mask: Some(32), tenants: vec![], layout: LayoutSpec::Blocks, nat_outgoing: true }],
            topologies: vec![MapSpec { networks: vec!["n".parse().expect("n")], map: vec![GroupOrHostSpec::Group(GroupSpec { groups: level(&widths), ..GroupSpec::default() })] }],
            no_nat: vec![],
        };
        let ipam = Ipam::new(spec).expect("fits");
        let groups = ipam.groups();
        for (i, g) in groups.iter().enumerate() {
            let children: Vec<_> = groups[i + 1..].iter().take_while(|c| c.depth > g.depth).filter(|c| c.depth == g.depth + 1).collect();
            if children.is_empty() {
                continue;
            }
            prop_assert!(children.len().is_power_of_two());
            prop_assert_eq!(children[0].cidr.first(), g.cidr.first());
            prop_assert_eq!(children[children.len() - 1].cidr.last(), g.cidr.last());
            for pair in children.windows(2) {
                prop_assert_eq!(pair[0].cidr.last() + 1, pair[1].cidr.first());
                prop_assert_eq!(pair[0].cidr.prefix_len(), pair[1].cidr.prefix_len());
            }
        }
    }
}

/// Arbitrary (mostly invalid) topologies: building, placing hosts and allocating must never panic.
mod no_panics {
    use super::*;
    use romana_ipam::spec::ClassicBits;
    use romana_model::{GroupName, HostName, NetworkName};

    fn cidr() -> impl Strategy<Value = Cidr> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(v, l)| Cidr::containing(IpAddr::from(v.to_be_bytes()), l)),
            (any::<u128>(), 0u8..=128).prop_map(|(v, l)| Cidr::containing(IpAddr::from(v.to_be_bytes()), l)),
            Just("10.0.0.0/24".parse().expect("cidr")),
        ]
    }

    fn element(depth: u32) -> BoxedStrategy<GroupOrHostSpec> {
        let host = (0u8..8, 0u8..4).prop_map(|(h, ip)| {
            GroupOrHostSpec::Host(HostSpec::new(
                HostName::new(format!("h{h}")).expect("name"),
                IpAddr::from([192, 168, 0, ip]),
            ))
        });
        if depth == 0 {
            return host.boxed();
        }
        let group = (proptest::collection::vec(element(depth - 1), 0..5), proptest::option::of(0u8..3))
            .prop_map(|(groups, tag)| {
                let mut g =
                    GroupSpec { name: GroupName::new("g").expect("name"), groups, ..GroupSpec::default() };
                if let Some(t) = tag {
                    g.assignment.insert("rack".into(), t.to_string());
                }
                GroupOrHostSpec::Group(g)
            });
        prop_oneof![1 => host, 3 => group].boxed()
    }

    fn spec() -> impl Strategy<Value = TopologySpec> {
        let network = (cidr(), proptest::option::of(0u8..=130), any::<bool>(), 0u8..30).prop_map(
            |(cidr, mask, classic, n)| NetworkSpec {
                name: NetworkName::new(format!("n{n}")).expect("name"),
                cidr,
                block_mask: mask,
                tenants: vec![],
                layout: if classic {
                    LayoutSpec::Classic(ClassicBits {
                        host_bits: 8,
                        tenant_bits: 4,
                        segment_bits: 4,
                        endpoint_bits: 32u8.saturating_sub(cidr.prefix_len() + 16),
                        endpoint_space_bits: 0,
                    })
                } else {
                    LayoutSpec::Blocks
                },
                nat_outgoing: true,
            },
        );
        (proptest::collection::vec(network, 1..4), proptest::collection::vec(element(3), 0..4), 0usize..4)
            .prop_map(|(networks, map, share)| {
                let names: Vec<_> = networks.iter().map(|n| n.name.clone()).take(share.max(1)).collect();
                TopologySpec { networks, topologies: vec![MapSpec { networks: names, map }], no_nat: vec![] }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_topologies_never_panic(spec in spec(), tags in proptest::collection::vec(0u8..3, 1..6)) {
            let Ok(mut ipam) = Ipam::new(spec) else { return Ok(()) };
            for (i, t) in tags.iter().enumerate() {
                let host = HostSpec::new(format!("x{i}").parse().expect("name"), IpAddr::from([10, 9, 9, i as u8])).with_tag("rack", &t.to_string());
                let _ = ipam.add_host(host);
            }
            for h in ipam.hosts() {
                for k in 0..20 {
                    let req = AllocRequest { name: format!("{}-{k}", h.name).parse().expect("name"), host: h.name.clone(), tenant: "t".parse().expect("t"), segment: "".parse().expect("s") };
                    let _ = ipam.allocate(&req);
                }
                let _ = ipam.host_routes(&h.name);
            }
            let _ = ipam.fabric_routes();
            if let Some(a) = ipam.allocations().first().cloned() {
                let _ = ipam.blackout(Cidr::containing(a.ip, a.block.prefix_len()));
                prop_assert!(ipam.release(&a.ip.to_string()).is_ok());
            }
        }
    }
}
