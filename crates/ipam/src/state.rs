//! The IPAM state: networks with their prefix-group trees, hosts, owners, blocks and address names.

use std::collections::{BTreeMap, BTreeSet};

use hashbrown::HashMap;

use romana_model::{Cidr, GroupName, HostName, NetworkName, SegmentName, TenantName};

use crate::block::BlockTable;
use crate::classic::ClassicNet;
use crate::host_registry::Hosts;
use crate::ids::{HostId, Owner, OwnerId};
use crate::names::NameIndex;
use crate::spec::TopologySpec;

/// The whole IPAM. Every operation is a pure function of this state and its arguments.
#[derive(Debug)]
pub struct Ipam {
    pub(crate) spec: TopologySpec,
    pub(crate) networks: Vec<Network>,
    pub(crate) tenant_networks: BTreeMap<TenantName, Vec<u16>>,
    pub(crate) wildcard_networks: Vec<u16>,
    pub(crate) hosts: Hosts,
    pub(crate) owners: Owners,
    pub(crate) blocks: BlockTable,
    pub(crate) names: NameIndex,
    /// +1 per allocation, release or blackout change.
    pub(crate) allocation_revision: u64,
    /// +1 per host change or topology update.
    pub(crate) topology_revision: u64,
}

#[derive(Debug)]
pub(crate) struct Network {
    pub name: NetworkName,
    pub cidr: Cidr,
    pub block_len: u8,
    pub tenants: Vec<TenantName>,
    pub blackouts: Vec<Cidr>,
    pub kind: NetworkKind,
}

#[derive(Debug)]
pub(crate) enum NetworkKind {
    /// Topology layout; `None` when no map names the network (hosts cannot join it).
    Blocks(Option<Tree>),
    Classic(ClassicNet),
}

impl Network {
    pub fn tree(&self) -> Option<&Tree> {
        match &self.kind {
            NetworkKind::Blocks(t) => t.as_ref(),
            NetworkKind::Classic(_) => None,
        }
    }

    pub fn blacked_out_by(&self, value: u128) -> Option<Cidr> {
        self.blackouts.iter().find(|c| c.contains_value(self.cidr.family(), value)).copied()
    }
}

/// A prefix-group tree; index 0 is the root.
#[derive(Debug)]
pub(crate) struct Tree {
    pub groups: Vec<Group>,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub name: GroupName,
    /// `/` for the root, then `/zone-a/rack-1`; unnamed groups appear as `#index`.
    pub path: String,
    pub cidr: Cidr,
    pub parent: Option<u32>,
    pub children: Vec<u32>,
    pub assignment: BTreeMap<String, String>,
    pub routing: String,
    pub bgp: Option<crate::spec::BgpSpec>,
    /// Added only to reach a power of two; takes no hosts.
    pub padding: bool,
    pub leaf: Option<Leaf>,
}

/// The part of a group that holds hosts and blocks.
#[derive(Debug, Default)]
pub(crate) struct Leaf {
    pub hosts: Vec<HostId>,
    /// Carved blocks by position (address order).
    pub blocks: crate::block_index::BlockIndex,
    /// Positions of carved blocks that are empty and unowned: reused before carving.
    pub reusable: BTreeSet<u128>,
    /// Every position below this one is carved or fully blacked out.
    pub next_carve: u128,
}

impl Group {
    pub fn is_leaf(&self) -> bool {
        self.leaf.is_some()
    }

    /// Whether a host with `tags` may join this group (ignoring ancestors).
    pub fn admits(&self, tags: &BTreeMap<String, String>) -> bool {
        !self.padding && self.assignment.iter().all(|(k, v)| tags.get(k) == Some(v))
    }
}

impl Tree {
    /// Whether `group` and all its ancestors admit `tags`.
    pub fn admits_path(&self, group: u32, tags: &BTreeMap<String, String>) -> bool {
        let mut g = Some(group);
        while let Some(i) = g {
            if !self.groups[i as usize].admits(tags) {
                return false;
            }
            g = self.groups[i as usize].parent;
        }
        true
    }

    /// The leaf group whose prefix contains `value`, if any.
    pub fn leaf_containing(&self, family: romana_model::Family, value: u128) -> Option<u32> {
        let mut g = 0u32;
        if !self.groups.first()?.cidr.contains_value(family, value) {
            return None;
        }
        loop {
            let group = &self.groups[g as usize];
            if group.is_leaf() {
                return Some(g);
            }
            g = *group
                .children
                .iter()
                .find(|c| self.groups[**c as usize].cidr.contains_value(family, value))?;
        }
    }
}

/// Interned (tenant, segment) pairs.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    pairs: Vec<(TenantName, SegmentName)>,
    // Nested so that a lookup borrows the request's names instead of cloning them.
    index: HashMap<TenantName, HashMap<SegmentName, OwnerId>>,
}

impl Owners {
    pub fn intern(&mut self, tenant: &TenantName, segment: &SegmentName) -> OwnerId {
        if let Some(id) = self.index.get(tenant.as_str()).and_then(|m| m.get(segment.as_str())) {
            return *id;
        }
        let id = OwnerId::from_index(self.pairs.len());
        self.pairs.push((tenant.clone(), segment.clone()));
        self.index.entry(tenant.clone()).or_default().insert(segment.clone(), id);
        id
    }

    pub fn get(&self, id: OwnerId) -> &(TenantName, SegmentName) {
        &self.pairs[id.index()]
    }
}

impl Ipam {
    pub(crate) fn owner_label(&self, owner: Owner) -> String {
        let (t, s) = self.owners.get(owner.owner);
        format!("{}:{} on host {}", t, s, self.hosts.get(owner.host).spec.name)
    }

    pub(crate) fn network_index(&self, name: &NetworkName) -> Option<u16> {
        self.networks.iter().position(|n| &n.name == name).map(|i| i as u16)
    }

    /// Networks a tenant may draw from, in order: its own, then the wildcard ones.
    pub(crate) fn networks_for_tenant(&self, tenant: &TenantName) -> Vec<u16> {
        let mut out: Vec<u16> = self.tenant_networks.get(tenant).cloned().unwrap_or_default();
        out.extend(self.wildcard_networks.iter().filter(|n| !out.contains(n)).collect::<Vec<_>>());
        out
    }

    pub(crate) fn host_id(&self, name: &HostName) -> Option<HostId> {
        self.hosts.id(name)
    }

    pub(crate) fn group(&self, net: u16, group: u32) -> &Group {
        match &self.networks[net as usize].kind {
            NetworkKind::Blocks(Some(tree)) => &tree.groups[group as usize],
            _ => unreachable!("group {group} requested in network {net} without a tree"),
        }
    }

    pub(crate) fn leaf_mut(&mut self, net: u16, group: u32) -> &mut Leaf {
        match &mut self.networks[net as usize].kind {
            NetworkKind::Blocks(Some(tree)) => {
                tree.groups[group as usize].leaf.as_mut().expect("hosts and blocks live in leaf groups")
            }
            _ => unreachable!("leaf {group} requested in network {net} without a tree"),
        }
    }

    /// Revision counters: (allocations, topology).
    pub fn revisions(&self) -> (u64, u64) {
        (self.allocation_revision, self.topology_revision)
    }

    /// What moves whenever any host's route set may (`route_stamps`' inputs but liveness): the
    /// topology, the hosts, and which blocks are owned by whom; not an address allocated or
    /// released in a block already held. Never decreases within one `Ipam` (a topology update's
    /// `merge` carries it on), so a publisher that saw it unmoved has nothing to recompute.
    pub fn routes_revision(&self) -> u64 {
        self.topology_revision + self.blocks.owner_changes
    }

    /// Number of allocated addresses.
    pub fn address_count(&self) -> usize {
        self.names.len()
    }

    /// Bytes of heap the state holds (names, blocks, group tables), for the memory budget.
    pub fn heap_bytes(&self) -> usize {
        self.names.heap_bytes() + self.blocks.heap_bytes()
    }
}
