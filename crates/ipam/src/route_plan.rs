//! Some hosts' routes in two steps: `Ipam::route_plan` reads what they need from the IPAM (each
//! leaf's owned blocks, the owners' names and addresses, classic networks' routes) into an owned
//! plan; `RoutePlan::routes` builds each leaf's trie, shared by the leaf's hosts, and aggregates,
//! without the IPAM. A caller can hold the IPAM's read lock for the first step only: at 50,000
//! endpoints in a flat leaf the second is about 1 ms per set (the trie of 4,000 blocks and its
//! aggregation), and `GET /routes/{host}`, which every agent of the leaf sends after a new block,
//! held the lock for it while allocations waited (issue 22). One trie per leaf, not per host: a
//! new block in a leaf of a hundred hosts moves all their sets, and a trie per host was most of
//! computing them.

use romana_model::{Cidr, HostName};
use std::collections::HashMap;

use crate::aggregate::Shared;
use crate::error::IpamError;
use crate::host_registry::Placement;
use crate::ids::HostId;
use crate::routes::{HostRoutes, Route, RouteTarget, route_via};
use crate::spec::HostSpec;
use crate::state::{Ipam, NetworkKind, Tree};

/// The inputs of some hosts' routes, owned (no borrow of the IPAM).
#[derive(Debug)]
pub struct RoutePlan {
    leaves: HashMap<(u16, u32), LeafRoutes>,
    owners: HashMap<HostId, Owner>,
    hosts: Vec<Result<Planned, IpamError>>,
}

/// One leaf's owned blocks, shared by the hosts of the leaf in the plan.
#[derive(Debug)]
struct LeafRoutes {
    /// The leaf's prefix.
    within: Cidr,
    /// Its owned blocks, until the trie is built from them.
    items: Vec<(Cidr, Option<HostId>)>,
    /// Built at the first host's routes, outside the IPAM.
    trie: Option<Shared<HostId>>,
    blocks: usize,
    used: usize,
    /// Blocks and addresses in use by owner, to take out of the leaf's counts for the owner.
    own: HashMap<HostId, (usize, usize)>,
}

/// A block's owner as its routes need it.
#[derive(Debug)]
struct Owner {
    spec: HostSpec,
    dead: bool,
}

#[derive(Debug)]
struct Planned {
    id: HostId,
    leaves: Vec<(u16, u32)>,
    /// The host's routes so far: classic networks' routes and counts, complete at planning.
    classic: HostRoutes,
}

impl Ipam {
    /// What the routes of `hosts` need, read once (`dead`: hosts whose routes are left out, as
    /// targets; `|_| false` keeps all).
    pub fn route_plan(&self, hosts: &[HostName], dead: &dyn Fn(&HostName) -> bool) -> RoutePlan {
        let mut plan = RoutePlan { leaves: HashMap::new(), owners: HashMap::new(), hosts: Vec::new() };
        for host in hosts {
            let planned = self.plan_host(host, dead, &mut plan);
            plan.hosts.push(planned);
        }
        plan
    }

    fn plan_host(
        &self,
        host: &HostName,
        dead: &dyn Fn(&HostName) -> bool,
        plan: &mut RoutePlan,
    ) -> Result<Planned, IpamError> {
        let id = self.hosts.id(host).ok_or_else(|| IpamError::UnknownHost(host.clone()))?;
        let classic = HostRoutes { host: host.clone(), routes: Vec::new(), per_block: 0, per_endpoint: 0 };
        let mut planned = Planned { id, leaves: Vec::new(), classic };
        for (net, placement) in &self.hosts.get(id).placements {
            let network = &self.networks[*net as usize];
            match (placement, &network.kind) {
                (Placement::Group(g), NetworkKind::Blocks(Some(tree))) => {
                    if !plan.leaves.contains_key(&(*net, *g)) {
                        let leaf = self.leaf_routes(tree, *g, dead, &mut plan.owners);
                        plan.leaves.insert((*net, *g), leaf);
                    }
                    planned.leaves.push((*net, *g));
                }
                (Placement::Classic(_), NetworkKind::Classic(c)) => {
                    let out = &mut planned.classic;
                    for (k, other) in &c.hosts {
                        if *other == id {
                            continue;
                        }
                        let dest = c.host_cidr(network.cidr, *k);
                        if !dead(&self.hosts.get(*other).spec.name) {
                            out.routes.push(self.host_route(dest, *other));
                        }
                        out.per_block += c.blocks.keys().filter(|(h, _, _)| h == k).count();
                        out.per_endpoint += c
                            .blocks
                            .iter()
                            .filter(|((h, _, _), _)| h == k)
                            .map(|(_, b)| self.blocks[b].used as usize)
                            .sum::<usize>();
                    }
                }
                _ => {}
            }
        }
        Ok(planned)
    }

    /// Leaf group `g`'s owned blocks as one shared trie, with the counts a per-block and a
    /// per-endpoint scheme would need; its owners go to `owners`.
    fn leaf_routes(
        &self,
        tree: &Tree,
        g: u32,
        dead: &dyn Fn(&HostName) -> bool,
        owners: &mut HashMap<HostId, Owner>,
    ) -> LeafRoutes {
        let group = &tree.groups[g as usize];
        let leaf = group.leaf.as_ref().expect("hosts sit in leaves");
        let mut items = Vec::new();
        let (mut blocks, mut used) = (0, 0);
        let mut own: HashMap<HostId, (usize, usize)> = HashMap::new();
        for b in leaf.blocks.values() {
            let block = &self.blocks[b];
            let Some(owner) = block.owner() else { continue };
            items.push((block.cidr, Some(owner.host)));
            blocks += 1;
            used += block.used as usize;
            let mine = own.entry(owner.host).or_insert_with(|| {
                let spec = &self.hosts.get(owner.host).spec;
                owners
                    .entry(owner.host)
                    .or_insert_with(|| Owner { dead: dead(&spec.name), spec: spec.clone() });
                (0, 0)
            });
            mine.0 += 1;
            mine.1 += block.used as usize;
        }
        LeafRoutes { within: group.cidr, items, trie: None, blocks, used, own }
    }
}

impl RoutePlan {
    /// Each planned host's routes (sorted), in the order asked for; an unknown host is an error.
    pub fn routes(self) -> Vec<Result<HostRoutes, IpamError>> {
        self.into_routes().collect()
    }

    /// `routes`, one host at a time: a caller that digests each set and drops it holds one set,
    /// not every host's (a hundred sets of 4,000 routes in a leaf of a hundred hosts).
    pub fn into_routes(mut self) -> impl Iterator<Item = Result<HostRoutes, IpamError>> {
        let hosts = std::mem::take(&mut self.hosts);
        hosts.into_iter().map(move |p| Ok(self.host_routes(p?)))
    }

    fn host_routes(&mut self, p: Planned) -> HostRoutes {
        let mut out = p.classic;
        for key in &p.leaves {
            let leaf = self.leaves.get_mut(key).expect("planned leaves are in the plan");
            let (own_blocks, own_used) = leaf.own.get(&p.id).copied().unwrap_or_default();
            out.per_block += leaf.blocks - own_blocks;
            out.per_endpoint += leaf.used - own_used;
            let trie =
                leaf.trie.get_or_insert_with(|| Shared::new(leaf.within, &std::mem::take(&mut leaf.items)));
            for (dest, label) in trie.aggregate_as(Some(p.id)) {
                match label.map(|h| &self.owners[&h]) {
                    None => out.routes.push(Route { dest, target: RouteTarget::Throw }),
                    Some(owner) if owner.dead => {}
                    Some(owner) => out.routes.push(route_via(&owner.spec, dest)),
                }
            }
        }
        out.routes.sort();
        out
    }
}
