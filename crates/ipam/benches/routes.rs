//! Route table sizes: 1,000 hosts x 100 endpoints in 8 racks (4 tenants), each host's route set
//! and each group's fabric routes, against one route per block (Calico-style, /26 blocks) and one
//! route per endpoint, all computed in the same run. `cargo bench -p romana-ipam --bench routes`.
//! `-- --ipv6`: the same over an IPv6 /104 in /123 blocks (as many addresses per block);
//! `-- --dual`: both networks over the same racks, each pod dual-stack (`allocate_stack`), with
//! the routes per host counted per family.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use romana_ipam::spec::{
    GroupOrHostSpec, GroupSpec, HostSpec, LayoutSpec, MapSpec, NetworkSpec, TopologySpec,
};
use romana_ipam::{AllocRequest, Ipam};
use romana_model::{AddressName, Family, HostName};

const RACKS: usize = 8;
const TENANTS: usize = 4;
/// Calico's default IPAM block: 64 addresses.
const CALICO_BLOCK: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stack {
    V4,
    V6,
    Dual,
}

fn network(name: &str, cidr: &str, block_mask: u8) -> NetworkSpec {
    NetworkSpec {
        name: name.parse().expect("name"),
        cidr: cidr.parse().expect("cidr"),
        block_mask: Some(block_mask),
        tenants: vec![],
        layout: LayoutSpec::Blocks,
        nat_outgoing: true,
    }
}

fn topology(stack: Stack) -> TopologySpec {
    let racks = (0..RACKS)
        .map(|r| {
            GroupOrHostSpec::Group(GroupSpec {
                name: format!("rack-{r}").parse().expect("name"),
                ..GroupSpec::default()
            })
        })
        .collect();
    let networks = match stack {
        Stack::V4 => vec![network("pods", "10.0.0.0/8", 27)],
        Stack::V6 => vec![network("pods6", "fd00::/104", 123)],
        Stack::Dual => vec![network("pods", "10.0.0.0/8", 27), network("pods6", "fd00::/104", 123)],
    };
    let names = networks.iter().map(|n| n.name.clone()).collect();
    TopologySpec { networks, topologies: vec![MapSpec { networks: names, map: racks }], no_nat: vec![] }
}

/// Owned blocks on all hosts but one (every host has the same number here).
fn ipam_blocks_elsewhere(ipam: &Ipam, hosts: usize) -> usize {
    let owned = ipam.blocks().iter().filter(|b| b.owner.is_some()).count();
    owned - owned / hosts
}

fn stats(mut xs: Vec<usize>) -> (usize, usize, usize) {
    xs.sort_unstable();
    (xs[0], xs[xs.len() / 2], xs[xs.len() - 1])
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let stack = if std::env::args().any(|a| a == "--dual") {
        Stack::Dual
    } else if std::env::args().any(|a| a == "--ipv6") {
        Stack::V6
    } else {
        Stack::V4
    };
    let (hosts, per_host) = if quick { (100, 20) } else { (1_000, 100) };
    let mut ipam = Ipam::new(topology(stack)).expect("valid topology");
    let names: Vec<HostName> = (0..hosts).map(|h| format!("node-{h:04}").parse().expect("host")).collect();
    for (h, n) in names.iter().enumerate() {
        let ip = IpAddr::V4(Ipv4Addr::from(0xc0a8_0000u32 + h as u32));
        // A dual-stack underlay: IPv6 routes lead to the host's IPv6 address (without one they
        // would all be throws).
        let ipv6 = std::net::Ipv6Addr::from(0xfd00_0192_0168_0000_0000_0000_0000_0000u128 + h as u128);
        ipam.add_host(HostSpec::new(n.clone(), ip).with_ipv6(ipv6)).expect("host fits");
    }
    for (h, n) in names.iter().enumerate() {
        for e in 0..per_host {
            let req = AllocRequest {
                name: AddressName::new(format!("pod-{h}-{e}")).expect("name"),
                host: n.clone(),
                tenant: format!("tenant-{}", e % TENANTS).parse().expect("tenant"),
                segment: "default".parse().expect("segment"),
            };
            ipam.allocate_stack(&req).expect("space");
        }
    }

    let t = Instant::now();
    let sets: Vec<_> = names.iter().map(|n| ipam.host_routes(n).expect("known host")).collect();
    let host_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let fabric = ipam.fabric_routes();
    let fabric_secs = t.elapsed().as_secs_f64();

    let ours = stats(sets.iter().map(|s| s.routes.len()).collect());
    let of_family = |f: Family| {
        stats(sets.iter().map(|s| s.routes.iter().filter(|r| r.dest.family() == f).count()).collect())
    };
    println!(
        "stack {}: routes per host by family min/median/max: IPv4 {:?}, IPv6 {:?}",
        match stack {
            Stack::V4 => "IPv4",
            Stack::V6 => "IPv6",
            Stack::Dual => "dual",
        },
        of_family(Family::V4),
        of_family(Family::V6)
    );
    let per_block = stats(sets.iter().map(|s| s.per_block).collect());
    let per_endpoint = stats(sets.iter().map(|s| s.per_endpoint).collect());
    // Calico-style: every other host's endpoints in 64-address blocks, one route per block.
    let calico_per_host = (hosts - 1) * per_host.div_ceil(CALICO_BLOCK);
    let announce: usize = fabric.iter().filter(|g| g.announce.is_some()).count();
    let leaf_routes = stats(fabric.iter().filter(|g| !g.hosts.is_empty()).map(|g| g.routes.len()).collect());
    let top_routes: usize = fabric.iter().filter(|g| g.hosts.is_empty()).map(|g| g.routes.len()).sum();

    println!(
        "hosts {hosts}, endpoints per host {per_host}, racks {RACKS}, tenants {TENANTS}, Romana blocks /27"
    );
    println!("| routes per host | min | median | max | median vs Romana |");
    println!("|---|---|---|---|---|");
    let row = |label: &str, (a, b, c): (usize, usize, usize)| {
        println!("| {label} | {a} | {b} | {c} | {:.1}x |", b as f64 / ours.1.max(1) as f64);
    };
    row("Romana (aggregated by rack and host)", ours);
    row("one route per Romana block, same rack", per_block);
    row("one route per endpoint, same rack", per_endpoint);
    // Flat schemes route every other host's blocks or endpoints, not only the rack's.
    let elsewhere = ipam_blocks_elsewhere(&ipam, hosts);
    let all_blocks = (elsewhere, elsewhere, elsewhere);
    row("one route per Romana block, every host", all_blocks);
    row(
        "one route per /26 block, every host (Calico-style)",
        (calico_per_host, calico_per_host, calico_per_host),
    );
    let all_endpoints = (hosts - 1) * per_host;
    row("one route per endpoint, every host", (all_endpoints, all_endpoints, all_endpoints));
    println!(
        "fabric: {} groups, {announce} announcing; routes per leaf router min/median/max {:?}; routes at routers above the racks {top_routes}",
        fabric.len(),
        leaf_routes
    );
    println!(
        "compute: all {hosts} host route sets {:.1} ms ({:.0} us per host), fabric {:.1} ms",
        host_secs * 1e3,
        host_secs * 1e6 / hosts as f64,
        fabric_secs * 1e3
    );
}
