//! Stamps of what each host's route set is computed from: the route manager announces a set by
//! its stamp, and writes a notice only for the hosts whose stamp moved. `host_routes(h)`'s routes
//! read h's leaf groups (their prefix and every owned block in them: prefix, owner, the owner's
//! name and address) or, in a classic network, every host of the network; plus, in romanad,
//! which owners are dead. One change (a block, a host, a death) moves the stamps of one leaf's
//! hosts, not all; an address allocated or released in a block moves none (the per-block and
//! per-endpoint counts, which would move with it, are not part of what a stamp names).
//!
//! A stamp is a 64-bit hash of those inputs (std's SipHash with fixed keys, so deterministic):
//! equal inputs give equal stamps; different inputs give different stamps but for a collision
//! chance of 2^-64 per comparison.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use romana_model::HostName;

use crate::host_registry::Placement;
use crate::ids::HostId;
use crate::state::{Ipam, NetworkKind};

/// Where a host's routes come from in one network: a leaf group, or a classic network whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Leaf(u16, u32),
    Classic(u16),
}

impl Ipam {
    fn hash_owner(&self, h: &mut DefaultHasher, id: HostId, dead: &dyn Fn(&HostName) -> bool) {
        let spec = &self.hosts.get(id).spec;
        (id, &spec.name, spec.ip, spec.ipv6, dead(&spec.name)).hash(h);
    }

    /// The hash of one source's inputs.
    fn source_stamp(&self, source: Source, dead: &dyn Fn(&HostName) -> bool) -> u64 {
        let mut h = DefaultHasher::new();
        source.hash(&mut h);
        let (Source::Leaf(n, _) | Source::Classic(n)) = source;
        let Some(network) = self.networks.get(n as usize) else { return h.finish() };
        match (&network.kind, source) {
            (NetworkKind::Blocks(Some(tree)), Source::Leaf(_, g)) => {
                let Some(group) = tree.groups.get(g as usize) else { return h.finish() };
                (&network.name, group.cidr).hash(&mut h);
                // Each block with its owner's id, then each owner once (a leaf holds ten times
                // more blocks than hosts, and an owner's name is the costly part to hash).
                let mut owners = Vec::new();
                for b in group.leaf.iter().flat_map(|l| l.blocks.values()) {
                    let block = &self.blocks[b];
                    let Some(owner) = block.owner() else { continue };
                    (block.cidr, owner.host).hash(&mut h);
                    owners.push(owner.host);
                }
                owners.sort_unstable();
                owners.dedup();
                for id in owners {
                    self.hash_owner(&mut h, id, dead);
                }
            }
            (NetworkKind::Classic(c), Source::Classic(_)) => {
                (&network.name, network.cidr).hash(&mut h);
                for (k, id) in &c.hosts {
                    k.hash(&mut h);
                    self.hash_owner(&mut h, *id, dead);
                }
            }
            _ => {}
        }
        h.finish()
    }

    fn host_stamp(&self, id: HostId, source: &mut dyn FnMut(Source) -> u64) -> u64 {
        let record = self.hosts.get(id);
        let mut h = DefaultHasher::new();
        (id, &record.spec.name).hash(&mut h);
        for (net, placement) in &record.placements {
            let s = match placement {
                Placement::Group(g) => Source::Leaf(*net, *g),
                Placement::Classic(_) => Source::Classic(*net),
            };
            source(s).hash(&mut h);
        }
        h.finish()
    }

    /// Every host with the stamp of its route set's inputs (`dead`: which hosts the caller
    /// leaves out as targets). Each leaf is hashed once, so this is one pass over the blocks.
    pub fn route_stamps(&self, dead: &dyn Fn(&HostName) -> bool) -> Vec<(HostName, u64)> {
        let mut memo: HashMap<Source, u64> = HashMap::new();
        let mut source = |s: Source| *memo.entry(s).or_insert_with(|| self.source_stamp(s, dead));
        self.hosts.iter().map(|(id, r)| (r.spec.name.clone(), self.host_stamp(id, &mut source))).collect()
    }

    /// One host's stamp, as `route_stamps` gives it; `None` for an unknown host.
    pub fn route_stamp(&self, host: &HostName, dead: &dyn Fn(&HostName) -> bool) -> Option<u64> {
        self.route_stamps_of(std::slice::from_ref(host), dead).pop().flatten()
    }

    /// The stamps of `hosts`, as `route_stamps` gives them, each leaf hashed once.
    pub fn route_stamps_of(&self, hosts: &[HostName], dead: &dyn Fn(&HostName) -> bool) -> Vec<Option<u64>> {
        let mut memo: HashMap<Source, u64> = HashMap::new();
        let mut source = |s: Source| *memo.entry(s).or_insert_with(|| self.source_stamp(s, dead));
        hosts.iter().map(|h| Some(self.host_stamp(self.hosts.id(h)?, &mut source))).collect()
    }
}
