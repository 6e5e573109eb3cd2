//! Building an IPAM from a topology spec: network validation and carving prefix groups out of CIDRs.
//!
//! Carving follows Romana 2.0 (§6.4 of the spec): a list of n > 1 elements is padded to 2^k and
//! element i gets the i-th subnet k bits longer. Unlike 2.0, padding groups take no hosts, a group
//! smaller than a block is refused instead of letting blocks spill into a sibling, and duplicate
//! hosts are reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use romana_model::{Cidr, Family, GroupName, HostName, NetworkName};

use crate::classic::ClassicNet;
use crate::error::{IpamError, TopologyProblem};
use crate::host_registry::{HostOrigin, HostRecord, Hosts, Placement};
use crate::names::NameIndex;
use crate::spec::{GroupOrHostSpec, GroupSpec, HostSpec, LayoutSpec, NetworkSpec, TopologySpec};
use crate::state::{Group, Ipam, Leaf, Network, NetworkKind, Owners, Tree};

/// Deepest nesting accepted; real topologies use three or four levels.
pub const MAX_DEPTH: usize = 32;

/// Default block prefix length for a network prefix of `prefix` bits.
pub fn default_block_mask(family: Family, prefix: u8) -> u8 {
    let base = match family {
        Family::V4 => 29,
        Family::V6 => 122,
    };
    base.max(prefix)
}

fn bits_for(n: usize) -> u8 {
    // Bits needed to number n elements: bitlen(n - 1).
    (usize::BITS - n.saturating_sub(1).leading_zeros()) as u8
}

fn check_network(spec: &NetworkSpec, problems: &mut Vec<TopologyProblem>) -> u8 {
    let family = spec.cidr.family();
    let width = family.width();
    let prefix = spec.cidr.prefix_len();
    let mask = spec.block_mask.unwrap_or_else(|| default_block_mask(family, prefix));
    match spec.layout {
        LayoutSpec::Blocks => {
            if mask < prefix || mask > width {
                problems.push(TopologyProblem::BlockMaskOutOfRange {
                    network: spec.name.clone(),
                    mask,
                    prefix,
                    width,
                });
            } else if width - mask > 16 {
                problems.push(TopologyProblem::BlockTooLarge {
                    network: spec.name.clone(),
                    mask,
                    size: 1u128 << (width - mask),
                });
            }
        }
        LayoutSpec::Classic(b) => {
            let sum = u32::from(prefix)
                + u32::from(b.host_bits)
                + u32::from(b.tenant_bits)
                + u32::from(b.segment_bits)
                + u32::from(b.endpoint_bits)
                + u32::from(b.endpoint_space_bits);
            if sum != u32::from(width) {
                problems.push(TopologyProblem::ClassicBitsMismatch {
                    network: spec.name.clone(),
                    detail: format!(
                        "prefix {prefix} + host {} + tenant {} + segment {} + endpoint {} + space {} = {sum}",
                        b.host_bits, b.tenant_bits, b.segment_bits, b.endpoint_bits, b.endpoint_space_bits
                    ),
                    width,
                });
            }
            if b.endpoint_bits < 2
                || b.endpoint_bits + b.endpoint_space_bits > 16
                || b.host_bits > 24
                || b.tenant_bits > 24
                || b.segment_bits > 24
            {
                problems.push(TopologyProblem::ClassicEndpointBits { network: spec.name.clone() });
            }
        }
    }
    mask
}

/// Builds groups for one network's copy of a map.
struct Carver<'a> {
    network: &'a NetworkName,
    block_len: u8,
    groups: Vec<Group>,
    /// Hosts listed in this network's tree, with their leaf.
    hosts: Vec<(HostSpec, u32)>,
    problems: &'a mut Vec<TopologyProblem>,
}

impl Carver<'_> {
    fn push(
        &mut self,
        name: GroupName,
        path: String,
        cidr: Cidr,
        parent: Option<u32>,
        spec: Option<&GroupSpec>,
    ) -> u32 {
        let id = self.groups.len() as u32;
        self.groups.push(Group {
            name,
            path,
            cidr,
            parent,
            children: Vec::new(),
            assignment: spec.map(|s| s.assignment.clone()).unwrap_or_default(),
            routing: spec.map(|s| s.routing.clone()).unwrap_or_default(),
            bgp: spec.and_then(|s| s.bgp.clone()),
            padding: spec.is_none(),
            leaf: None,
        });
        if let Some(p) = parent {
            self.groups[p as usize].children.push(id);
        }
        id
    }

    fn child_path(parent: &str, name: &GroupName, index: usize) -> String {
        let base = if parent == "/" { "" } else { parent };
        if name.as_str().is_empty() { format!("{base}/#{index}") } else { format!("{base}/{name}") }
    }

    /// Fills group `g` from its element list.
    fn fill(&mut self, g: u32, elements: &[GroupOrHostSpec], depth: usize) {
        let path = self.groups[g as usize].path.clone();
        if depth > MAX_DEPTH {
            self.problems.push(TopologyProblem::TooDeep { path, max: MAX_DEPTH });
            return;
        }
        let hosts = elements.iter().filter(|e| matches!(e, GroupOrHostSpec::Host(_))).count();
        if hosts > 0 && hosts < elements.len() {
            self.problems.push(TopologyProblem::MixedHostsAndGroups { path });
            return;
        }
        if elements.is_empty() || hosts > 0 {
            self.make_leaf(g);
            for e in elements {
                if let GroupOrHostSpec::Host(h) = e {
                    self.hosts.push((h.clone(), g));
                }
            }
            return;
        }
        let groups: Vec<&GroupSpec> = elements
            .iter()
            .filter_map(|e| if let GroupOrHostSpec::Group(s) = e { Some(s) } else { None })
            .collect();
        self.carve_children(g, &groups, depth);
    }

    fn carve_children(&mut self, g: u32, groups: &[&GroupSpec], depth: usize) {
        let path = self.groups[g as usize].path.clone();
        let cidr = self.groups[g as usize].cidr;
        let k = bits_for(groups.len());
        if k > cidr.host_bits() {
            self.problems.push(TopologyProblem::TooManyChildren { path, count: groups.len(), cidr });
            return;
        }
        let len = cidr.prefix_len() + k;
        for i in 0..(1usize << k) {
            let spec = groups.get(i).copied();
            let name =
                spec.map(|s| s.name.clone()).unwrap_or_else(|| GroupName::new("").expect("empty is valid"));
            let child_cidr = cidr.subnet(i as u128, len).expect("k bits fit, checked above");
            let child = self.push(name.clone(), Self::child_path(&path, &name, i), child_cidr, Some(g), spec);
            match spec {
                Some(s) => self.fill(child, &s.groups, depth + 1),
                None => self.groups[child as usize].leaf = Some(Leaf::default()),
            }
        }
    }

    fn make_leaf(&mut self, g: u32) {
        let group = &mut self.groups[g as usize];
        if group.cidr.prefix_len() > self.block_len {
            self.problems.push(TopologyProblem::GroupSmallerThanBlock {
                path: group.path.clone(),
                cidr: group.cidr,
                mask: self.block_len,
            });
        }
        group.leaf = Some(Leaf::default());
    }

    /// The whole map for one network.
    fn carve_map(&mut self, cidr: Cidr, map: &[GroupOrHostSpec]) {
        match map {
            [GroupOrHostSpec::Group(only)] => {
                let root = self.push(only.name.clone(), "/".into(), cidr, None, Some(only));
                self.fill(root, &only.groups, 1);
            }
            [GroupOrHostSpec::Host(_)] | [] => {
                let root =
                    self.push(GroupName::new("").expect("empty is valid"), "/".into(), cidr, None, None);
                self.groups[root as usize].padding = false;
                self.fill(root, map, 1);
            }
            many => {
                let root = self.push(
                    GroupName::new("").expect("empty is valid"),
                    "/".into(),
                    cidr,
                    None,
                    Some(&GroupSpec::default()),
                );
                let mut groups = Vec::new();
                for e in many {
                    match e {
                        GroupOrHostSpec::Group(s) => groups.push(s),
                        GroupOrHostSpec::Host(h) => self.problems.push(TopologyProblem::HostAtTopLevel {
                            path: format!("network {}", self.network),
                            host: h.name.clone(),
                        }),
                    }
                }
                if groups.len() == many.len() {
                    self.carve_children(root, &groups, 1);
                }
            }
        }
    }
}

impl Ipam {
    /// Validates a topology and builds a fresh IPAM from it; every problem found is reported at once.
    pub fn new(spec: TopologySpec) -> Result<Ipam, IpamError> {
        let mut problems = Vec::new();
        let mut masks = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, n) in spec.networks.iter().enumerate() {
            if !seen.insert(n.name.clone()) {
                problems.push(TopologyProblem::DuplicateNetwork(n.name.clone()));
            }
            masks.push(check_network(n, &mut problems));
            for m in &spec.networks[..i] {
                if m.cidr.overlaps(&n.cidr) {
                    problems.push(TopologyProblem::OverlappingNetworks {
                        a: m.name.clone(),
                        a_cidr: m.cidr,
                        b: n.name.clone(),
                        b_cidr: n.cidr,
                    });
                }
            }
        }
        let mut map_of: HashMap<&NetworkName, usize> = HashMap::new();
        for (i, t) in spec.topologies.iter().enumerate() {
            if t.networks.is_empty() {
                problems.push(TopologyProblem::MapWithoutNetworks { index: i });
            }
            for name in &t.networks {
                match spec.networks.iter().find(|n| &n.name == name) {
                    None => {
                        problems.push(TopologyProblem::UnknownNetwork { index: i, network: name.clone() })
                    }
                    Some(n) if matches!(n.layout, LayoutSpec::Classic(_)) => {
                        problems.push(TopologyProblem::ClassicNetworkInMap(name.clone()));
                    }
                    Some(_) => {
                        if map_of.insert(name, i).is_some_and(|prev| prev != i) {
                            problems.push(TopologyProblem::NetworkInTwoTopologies { network: name.clone() });
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(IpamError::InvalidTopology(problems));
        }

        let mut networks = Vec::new();
        let mut listed: Vec<(u16, Vec<(HostSpec, u32)>)> = Vec::new();
        for (i, n) in spec.networks.iter().enumerate() {
            let kind = match n.layout {
                LayoutSpec::Classic(bits) => NetworkKind::Classic(ClassicNet::new(bits)),
                LayoutSpec::Blocks => match map_of.get(&n.name) {
                    None => NetworkKind::Blocks(None),
                    Some(t) => {
                        let mut carver = Carver {
                            network: &n.name,
                            block_len: masks[i],
                            groups: Vec::new(),
                            hosts: Vec::new(),
                            problems: &mut problems,
                        };
                        carver.carve_map(n.cidr, &spec.topologies[*t].map);
                        let (groups, hosts) = (carver.groups, carver.hosts);
                        listed.push((i as u16, hosts));
                        NetworkKind::Blocks(Some(Tree { groups }))
                    }
                },
            };
            networks.push(Network {
                name: n.name.clone(),
                cidr: n.cidr,
                block_len: masks[i],
                tenants: n.tenants.clone(),
                blackouts: Vec::new(),
                kind,
            });
        }

        // Hosts listed in maps: unique names and addresses per network, one address per name.
        let mut addr_of: BTreeMap<HostName, std::net::IpAddr> = BTreeMap::new();
        for (net, hosts) in &listed {
            let network = &networks[*net as usize].name;
            let mut names = BTreeSet::new();
            let mut ips = HashMap::new();
            for (h, _) in hosts {
                if !names.insert(h.name.clone()) {
                    problems.push(TopologyProblem::DuplicateHostName {
                        host: h.name.clone(),
                        network: network.clone(),
                    });
                }
                for ip in h.addresses() {
                    if let Some(other) = ips.insert(ip, h.name.clone())
                        && other != h.name
                    {
                        problems.push(TopologyProblem::DuplicateHostIp {
                            a: other,
                            b: h.name.clone(),
                            ip,
                            network: network.clone(),
                        });
                    }
                }
                match addr_of.get(&h.name) {
                    Some(a) if *a != h.ip => problems.push(TopologyProblem::HostWithTwoAddresses {
                        host: h.name.clone(),
                        a: *a,
                        b: h.ip,
                    }),
                    _ => {
                        addr_of.insert(h.name.clone(), h.ip);
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(IpamError::InvalidTopology(problems));
        }

        let mut tenant_networks: BTreeMap<_, Vec<u16>> = BTreeMap::new();
        let mut wildcard_networks = Vec::new();
        for (i, n) in spec.networks.iter().enumerate() {
            if n.tenants.is_empty() {
                wildcard_networks.push(i as u16);
            }
            for t in &n.tenants {
                tenant_networks.entry(t.clone()).or_default().push(i as u16);
            }
        }

        let mut ipam = Ipam {
            spec,
            networks,
            tenant_networks,
            wildcard_networks,
            hosts: Hosts::default(),
            owners: Owners::default(),
            blocks: crate::block::BlockTable::default(),
            names: NameIndex::default(),
            allocation_revision: 0,
            topology_revision: 1,
        };
        for (net, hosts) in listed {
            for (h, leaf) in hosts {
                let id = match ipam.hosts.id(&h.name) {
                    Some(id) => id,
                    None => ipam.hosts.insert(HostRecord::new(h, HostOrigin::Topology, vec![])),
                };
                ipam.hosts.get_mut(id).placements.push((net, Placement::Group(leaf)));
                ipam.attach(id, net, Placement::Group(leaf));
            }
        }
        Ok(ipam)
    }

    /// The topology spec this state was built from (as last applied).
    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }
}
