//! Read-only views of the state for listings, the CLI and the REST layer.

use std::collections::BTreeMap;
use std::net::IpAddr;

use romana_model::{Cidr, Family, GroupName, HostName, NetworkName, SegmentName, TenantName, addr_value};

use crate::classic::ClassicAddress;
use crate::error::IpamError;
use crate::host_registry::{HostOrigin, Placement};
use crate::hosts::HostPlacement;
use crate::spec::{ClassicBits, LayoutSpec};
use crate::state::{Ipam, NetworkKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockView {
    pub network: NetworkName,
    pub cidr: Cidr,
    /// `None` for an emptied block waiting for reuse.
    pub owner: Option<(TenantName, SegmentName, HostName)>,
    pub allocated: u32,
    pub capacity: u32,
    pub revision: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub network: NetworkName,
    pub path: String,
    pub name: GroupName,
    pub cidr: Cidr,
    pub depth: usize,
    pub padding: bool,
    pub leaf: bool,
    pub assignment: BTreeMap<String, String>,
    pub routing: String,
    pub bgp: Option<crate::spec::BgpSpec>,
    pub hosts: Vec<HostName>,
    pub blocks: usize,
    pub allocated: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub name: HostName,
    pub ip: IpAddr,
    pub ipv6: Option<std::net::Ipv6Addr>,
    pub agent_port: u16,
    pub tags: BTreeMap<String, String>,
    pub origin: HostOrigin,
    pub placement: HostPlacement,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkView {
    pub name: NetworkName,
    pub cidr: Cidr,
    pub block_mask: u8,
    pub tenants: Vec<TenantName>,
    pub layout: LayoutSpec,
    pub blackouts: Vec<Cidr>,
    pub allocated: usize,
}

impl Ipam {
    /// Every carved block, by network then address.
    pub fn blocks(&self) -> Vec<BlockView> {
        let mut v: Vec<BlockView> = self
            .blocks
            .iter()
            .map(|b| BlockView {
                network: self.networks[b.net as usize].name.clone(),
                cidr: b.cidr,
                owner: b.owner().filter(|_| b.used > 0 || self.is_classic(b.net)).map(|o| {
                    let (t, s) = self.owners.get(o.owner).clone();
                    (t, s, self.hosts.get(o.host).spec.name.clone())
                }),
                allocated: b.used,
                capacity: b.capacity(),
                revision: b.revision,
            })
            .collect();
        let order: BTreeMap<&NetworkName, usize> =
            self.networks.iter().enumerate().map(|(i, n)| (&n.name, i)).collect();
        v.sort_by_key(|b| (order[&b.network], b.cidr));
        v
    }

    fn is_classic(&self, net: u16) -> bool {
        matches!(self.networks[net as usize].kind, NetworkKind::Classic(_))
    }

    /// Every group of every network, depth first.
    pub fn groups(&self) -> Vec<GroupView> {
        let mut out = Vec::new();
        for n in &self.networks {
            let Some(tree) = n.tree() else { continue };
            let mut stack = vec![(0u32, 0usize)];
            while let Some((g, depth)) = stack.pop() {
                let group = &tree.groups[g as usize];
                let (hosts, blocks, allocated) = match &group.leaf {
                    Some(leaf) => (
                        leaf.hosts.iter().map(|h| self.hosts.get(*h).spec.name.clone()).collect(),
                        leaf.blocks.len(),
                        leaf.blocks.values().map(|b| self.blocks[b].used as usize).sum(),
                    ),
                    None => (Vec::new(), 0, 0),
                };
                out.push(GroupView {
                    network: n.name.clone(),
                    path: group.path.clone(),
                    name: group.name.clone(),
                    cidr: group.cidr,
                    depth,
                    padding: group.padding,
                    leaf: group.is_leaf(),
                    assignment: group.assignment.clone(),
                    routing: group.routing.clone(),
                    bgp: group.bgp.clone(),
                    hosts,
                    blocks,
                    allocated,
                });
                stack.extend(group.children.iter().rev().map(|c| (*c, depth + 1)));
            }
        }
        out
    }

    /// Every host, by name.
    pub fn hosts(&self) -> Vec<HostView> {
        self.hosts
            .iter()
            .map(|(id, h)| HostView {
                name: h.spec.name.clone(),
                ip: h.spec.ip,
                ipv6: h.spec.ipv6,
                agent_port: h.spec.agent_port,
                tags: h.spec.tags.clone(),
                origin: h.origin,
                placement: self.placement_of(id),
            })
            .collect()
    }

    pub fn networks(&self) -> Vec<NetworkView> {
        self.networks
            .iter()
            .enumerate()
            .map(|(i, n)| NetworkView {
                name: n.name.clone(),
                cidr: n.cidr,
                block_mask: n.block_len,
                tenants: n.tenants.clone(),
                layout: match &n.kind {
                    NetworkKind::Classic(c) => LayoutSpec::Classic(c.bits),
                    NetworkKind::Blocks(_) => LayoutSpec::Blocks,
                },
                blackouts: n.blackouts.clone(),
                allocated: self.blocks.iter().filter(|b| b.net as usize == i).map(|b| b.used as usize).sum(),
            })
            .collect()
    }

    /// The allocations inside `block` (a block's exact prefix), lowest address first.
    pub fn block_allocations(&self, block: Cidr) -> Vec<crate::Allocation> {
        let Some(id) = self.blocks.ids().find(|b| self.blocks[*b].cidr == block) else { return Vec::new() };
        self.blocks
            .occupied(id)
            .map(|(s, _)| crate::Allocation { fresh: false, ..self.allocation_at(id, s) })
            .collect()
    }

    /// Whether any network uses the classic layout (which needs tenant and segment numbers).
    pub fn classic_networks(&self) -> Vec<(NetworkName, ClassicBits)> {
        self.networks
            .iter()
            .filter_map(|n| match &n.kind {
                NetworkKind::Classic(c) => Some((n.name.clone(), c.bits)),
                NetworkKind::Blocks(_) => None,
            })
            .collect()
    }

    /// Decodes an address of a classic network into host, tenant, segment and endpoint numbers.
    pub fn classic_decode(&self, ip: IpAddr) -> Option<(NetworkName, ClassicAddress)> {
        let (family, value) = (Family::of(ip), addr_value(ip));
        self.networks.iter().find_map(|n| match &n.kind {
            NetworkKind::Classic(c) if n.cidr.contains_value(family, value) => {
                c.decode(n.cidr, value).map(|d| (n.name.clone(), d))
            }
            _ => None,
        })
    }

    /// A host's gateway address and prefix in a classic network (e.g. 10.1.0.1 in 10.1.0.0/16).
    pub fn classic_gateway(&self, network: &NetworkName, host: &HostName) -> Option<(IpAddr, Cidr)> {
        let net = self.network_index(network)?;
        let n = &self.networks[net as usize];
        let NetworkKind::Classic(c) = &n.kind else { return None };
        let id = self.hosts.id(host)?;
        match self.hosts.get(id).placement(net)? {
            Placement::Classic(k) => Some((c.gateway(n.cidr, k), c.host_cidr(n.cidr, k))),
            Placement::Group(_) => None,
        }
    }

    /// The bits of a classic network.
    pub fn classic_bits(&self, network: &NetworkName) -> Option<ClassicBits> {
        let net = self.network_index(network)?;
        match &self.networks[net as usize].kind {
            NetworkKind::Classic(c) => Some(c.bits),
            NetworkKind::Blocks(_) => None,
        }
    }

    /// Gives a tenant (and optionally one of its segments) explicit numbers in a classic network,
    /// as the Tenant service does when it creates them. Numbers are bounded and never reused.
    pub fn set_classic_numbers(
        &mut self,
        network: &NetworkName,
        tenant: &TenantName,
        tenant_number: u32,
        segment: Option<(&SegmentName, u32)>,
    ) -> Result<(), IpamError> {
        let net = self.network_index(network).ok_or_else(|| IpamError::UnknownNetwork(network.clone()))?;
        let n = &mut self.networks[net as usize];
        let NetworkKind::Classic(c) = &mut n.kind else {
            return Err(IpamError::UnknownNetwork(network.clone()));
        };
        c.register_tenant(&n.name, tenant, tenant_number)?;
        if let Some((s, number)) = segment {
            c.register_segment(&n.name, tenant, s, number)?;
        }
        Ok(())
    }
}
