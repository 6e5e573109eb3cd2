//! The host registry: each host's record (spec, origin, placement per network, the blocks it
//! holds per owner) and the index by name and address. Data only; placement decisions are in
//! `hosts.rs`.

use hashbrown::HashMap;
use std::net::IpAddr;

use romana_model::HostName;

use crate::block::BlockTable;
use crate::ids::{BlockId, HostId, OwnerId};
use crate::spec::HostSpec;

/// Where a host came from: listed in the topology, or added at run time (kept across topology updates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOrigin {
    Topology,
    Dynamic,
}

/// Where a host sits in one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    Group(u32),
    Classic(u32),
}

#[derive(Debug, Clone)]
pub(crate) struct HostRecord {
    pub spec: HostSpec,
    pub origin: HostOrigin,
    pub placements: Vec<(u16, Placement)>,
    /// Topology blocks the host holds, per (network, owner).
    pub owned: Vec<OwnedBlocks>,
}

impl HostRecord {
    pub fn new(spec: HostSpec, origin: HostOrigin, placements: Vec<(u16, Placement)>) -> HostRecord {
        HostRecord { spec, origin, placements, owned: Vec::new() }
    }

    pub fn placement(&self, net: u16) -> Option<Placement> {
        self.placements.iter().find(|(n, _)| *n == net).map(|(_, p)| *p)
    }

    pub fn owned_mut(&mut self, net: u16, owner: OwnerId) -> Option<&mut OwnedBlocks> {
        self.owned.iter_mut().find(|o| o.net == net && o.owner == owner)
    }

    /// Records that the host now holds block `id` for `owner`.
    pub fn take_block(&mut self, net: u16, owner: OwnerId, id: BlockId, blocks: &BlockTable) {
        if self.owned_mut(net, owner).is_none() {
            self.owned.push(OwnedBlocks::new(net, owner));
        }
        self.owned_mut(net, owner).expect("just ensured").insert(id, blocks);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Hosts {
    slab: Vec<Option<HostRecord>>,
    free: Vec<u32>,
    by_name: HashMap<HostName, HostId>,
    by_ip: HashMap<IpAddr, HostId>,
}

impl Hosts {
    pub fn id(&self, name: &HostName) -> Option<HostId> {
        self.by_name.get(name).copied()
    }

    pub fn by_ip(&self, ip: &IpAddr) -> Option<HostId> {
        self.by_ip.get(ip).copied()
    }

    pub fn get(&self, id: HostId) -> &HostRecord {
        self.slab[id.0 as usize].as_ref().expect("host ids in use point at live hosts")
    }

    pub fn get_mut(&mut self, id: HostId) -> &mut HostRecord {
        self.slab[id.0 as usize].as_mut().expect("host ids in use point at live hosts")
    }

    pub fn insert(&mut self, record: HostRecord) -> HostId {
        let name = record.spec.name.clone();
        let ips: Vec<IpAddr> = record.spec.addresses().collect();
        let id = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(record);
                HostId(i)
            }
            None => {
                self.slab.push(Some(record));
                HostId((self.slab.len() - 1) as u32)
            }
        };
        self.by_name.insert(name, id);
        for ip in ips {
            self.by_ip.entry(ip).or_insert(id);
        }
        id
    }

    pub fn remove(&mut self, id: HostId) -> HostRecord {
        let record = self.slab[id.0 as usize].take().expect("removing a live host");
        self.by_name.remove(&record.spec.name);
        for ip in record.spec.addresses() {
            if self.by_ip.get(&ip) == Some(&id) {
                self.by_ip.remove(&ip);
            }
        }
        // Keep reuse deterministic: lowest id first.
        self.free.push(id.0);
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        record
    }

    /// Live hosts sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (HostId, &HostRecord)> {
        let mut v: Vec<_> = self
            .slab
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|h| (HostId(i as u32), h)))
            .collect();
        v.sort_by(|a, b| a.1.spec.name.cmp(&b.1.spec.name));
        v.into_iter()
    }
}

/// An owner's blocks on one host in one network, in address order (so the lowest free address
/// comes first; Romana 2.0 used acquisition order, which hands out a higher address after a block
/// is reused). Kept in the host's record, which allocation reads anyway: a host has few owners,
/// and a short scan there beats a hash lookup that misses the cache.
#[derive(Debug, Clone)]
pub(crate) struct OwnedBlocks {
    pub net: u16,
    pub owner: OwnerId,
    pub blocks: Vec<BlockId>,
    /// Blocks before this index are full.
    pub first_open: usize,
}

impl OwnedBlocks {
    pub fn new(net: u16, owner: OwnerId) -> OwnedBlocks {
        OwnedBlocks { net, owner, blocks: Vec::new(), first_open: 0 }
    }

    /// Adds block `id`, keeping address order.
    pub fn insert(&mut self, id: BlockId, blocks: &BlockTable) {
        let cidr = blocks[id].cidr;
        let at = self.blocks.partition_point(|b| blocks[b].cidr < cidr);
        self.blocks.insert(at, id);
        self.first_open = self.first_open.min(at);
    }
}
