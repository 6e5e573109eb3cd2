//! The Route Manager's computation: each host's routes and what each prefix group shows the fabric.
//!
//! A leaf group is one layer-2 segment (a rack). A host routes the blocks of the other hosts in its
//! own leaf directly to them, aggregated to the fewest prefixes (`aggregate`); everything outside
//! its leaf leaves through the fabric, which learns one prefix per group. A group's router needs
//! one route per child group (or, at a leaf, the aggregated blocks of each host).

use std::collections::HashMap;
use std::net::IpAddr;

use romana_model::{Cidr, Family, HostName, NetworkName};

use crate::aggregate::{Shared, aggregate};
use crate::error::IpamError;
use crate::host_registry::Placement;
use crate::ids::HostId;
use crate::state::{Ipam, NetworkKind, Tree};

/// Where a route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteTarget {
    /// To a host, by its address.
    Host { name: HostName, ip: IpAddr },
    /// To a child prefix group's router.
    Group { path: String },
    /// Not through any of our routes: falls through to the next routing table.
    Throw,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dest: Cidr,
    pub target: RouteTarget,
}

/// The routes one host needs, with the counts a per-block or per-endpoint scheme would need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoutes {
    pub host: HostName,
    pub routes: Vec<Route>,
    /// Routes a one-route-per-block scheme (Calico-style) would install.
    pub per_block: usize,
    /// Routes a one-route-per-endpoint scheme would install.
    pub per_endpoint: usize,
}

/// What one prefix group shows upward and needs downward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRoutes {
    pub network: NetworkName,
    pub path: String,
    pub cidr: Cidr,
    /// The prefix the group announces to its parent; `None` when nothing below holds a host.
    pub announce: Option<Cidr>,
    pub hosts: Vec<HostName>,
    /// What the group's router needs: per-host block aggregates at a leaf, per-child prefixes above.
    pub routes: Vec<Route>,
}

/// One leaf's blocks, shared by the hosts of the leaf whose routes are asked for together.
struct LeafRoutes {
    trie: Shared<HostId>,
    blocks: usize,
    used: usize,
    /// Blocks and addresses in use by owner.
    own: HashMap<HostId, (usize, usize)>,
}

impl Ipam {
    /// The route to `dest` through host `id`: via its underlay address of `dest`'s family. A
    /// host without one (an IPv6 block on a host with an IPv4 underlay only) gets a throw: an
    /// IPv6 route via an IPv4 next hop would need every hop to carry IPv6 over IPv4 (RFC 5549),
    /// and leaving the route out would let a covering aggregate of another host capture the
    /// block. So its endpoints of that family are unreachable from elsewhere (the lookup ends in
    /// the throw) until the host gets an IPv6 underlay address (ARCHITECTURE.md, "Dual-stack
    /// underlay").
    fn host_route(&self, dest: Cidr, id: HostId) -> Route {
        let spec = &self.hosts.get(id).spec;
        let target = match spec.address(dest.family() == Family::V6) {
            Some(ip) => RouteTarget::Host { name: spec.name.clone(), ip },
            None => RouteTarget::Throw,
        };
        Route { dest, target }
    }

    /// Aggregates over hosts' blocks as routes: throws for our own (the `None` label), routes
    /// through the owning host for others'.
    fn routes_to_hosts(&self, aggregates: Vec<(Cidr, Option<HostId>)>) -> impl Iterator<Item = Route> + '_ {
        aggregates.into_iter().map(|(dest, l)| match l {
            None => Route { dest, target: RouteTarget::Throw },
            Some(h) => self.host_route(dest, h),
        })
    }

    /// The routes `host` installs in Romana's table.
    pub fn host_routes(&self, host: &HostName) -> Result<HostRoutes, IpamError> {
        self.hosts_routes(std::slice::from_ref(host)).pop().expect("one answer per host")
    }

    /// The routes of each of `hosts`, from one state. Each leaf's trie is built once and shared
    /// by the hosts of that leaf asked for (`aggregate::Shared`): a new block in a leaf of a
    /// hundred hosts moves all their sets, and building a trie per host was most of a route
    /// pass (issue 22).
    pub fn hosts_routes(&self, hosts: &[HostName]) -> Vec<Result<HostRoutes, IpamError>> {
        let mut leaves: HashMap<(u16, u32), LeafRoutes> = HashMap::new();
        hosts.iter().map(|h| self.routes_with(h, &mut leaves)).collect()
    }

    fn routes_with(
        &self,
        host: &HostName,
        leaves: &mut HashMap<(u16, u32), LeafRoutes>,
    ) -> Result<HostRoutes, IpamError> {
        let id = self.hosts.id(host).ok_or_else(|| IpamError::UnknownHost(host.clone()))?;
        let mut out = HostRoutes { host: host.clone(), routes: Vec::new(), per_block: 0, per_endpoint: 0 };
        for (net, placement) in &self.hosts.get(id).placements {
            let network = &self.networks[*net as usize];
            match (placement, &network.kind) {
                (Placement::Group(g), NetworkKind::Blocks(Some(tree))) => {
                    let leaf = leaves.entry((*net, *g)).or_insert_with(|| self.leaf_routes(tree, *g));
                    let (own_blocks, own_used) = leaf.own.get(&id).copied().unwrap_or_default();
                    out.per_block += leaf.blocks - own_blocks;
                    out.per_endpoint += leaf.used - own_used;
                    out.routes.extend(self.routes_to_hosts(leaf.trie.aggregate_as(Some(id))));
                }
                (Placement::Classic(_), NetworkKind::Classic(c)) => {
                    for (k, other) in &c.hosts {
                        if *other == id {
                            continue;
                        }
                        let dest = c.host_cidr(network.cidr, *k);
                        out.routes.push(self.host_route(dest, *other));
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
        out.routes.sort();
        Ok(out)
    }

    /// Leaf group `g`'s owned blocks as one shared trie, with the counts a per-block and a
    /// per-endpoint scheme would need (the leaf's, and each owner's own, to subtract).
    fn leaf_routes(&self, tree: &Tree, g: u32) -> LeafRoutes {
        let group = &tree.groups[g as usize];
        let leaf = group.leaf.as_ref().expect("hosts sit in leaves");
        let mut items = Vec::new();
        let (mut blocks, mut used) = (0, 0);
        let mut own: HashMap<HostId, (usize, usize)> = HashMap::new();
        for b in leaf.blocks.values() {
            let block = &self.blocks[b];
            let Some(owner) = block.owner else { continue };
            items.push((block.cidr, Some(owner.host)));
            blocks += 1;
            used += block.used as usize;
            let mine = own.entry(owner.host).or_default();
            mine.0 += 1;
            mine.1 += block.used as usize;
        }
        LeafRoutes { trie: Shared::new(group.cidr, &items), blocks, used, own }
    }

    /// Every group of every network: what it announces and what its router needs.
    pub fn fabric_routes(&self) -> Vec<GroupRoutes> {
        let mut out = Vec::new();
        for network in &self.networks {
            match &network.kind {
                NetworkKind::Blocks(Some(tree)) => self.tree_routes(&network.name, tree, &mut out),
                NetworkKind::Classic(c) => {
                    let hosts: Vec<_> =
                        c.hosts.values().map(|h| self.hosts.get(*h).spec.name.clone()).collect();
                    let routes = c
                        .hosts
                        .iter()
                        .map(|(k, h)| self.host_route(c.host_cidr(network.cidr, *k), *h))
                        .collect();
                    out.push(GroupRoutes {
                        network: network.name.clone(),
                        path: "/".into(),
                        cidr: network.cidr,
                        announce: (!hosts.is_empty()).then_some(network.cidr),
                        hosts,
                        routes,
                    });
                }
                NetworkKind::Blocks(None) => {}
            }
        }
        out
    }

    fn tree_routes(&self, network: &NetworkName, tree: &Tree, out: &mut Vec<GroupRoutes>) {
        // Whether each group has a host somewhere below it.
        let mut populated = vec![false; tree.groups.len()];
        for (i, g) in tree.groups.iter().enumerate().rev() {
            populated[i] = g.leaf.as_ref().is_some_and(|l| !l.hosts.is_empty())
                || g.children.iter().any(|c| populated[*c as usize]);
        }
        let mut order = vec![0u32];
        let mut i = 0;
        while i < order.len() {
            order.extend(tree.groups[order[i] as usize].children.iter().copied());
            i += 1;
        }
        for g in order {
            let group = &tree.groups[g as usize];
            if group.padding {
                continue;
            }
            let (hosts, routes) = match &group.leaf {
                Some(leaf) => {
                    let items: Vec<_> = leaf
                        .blocks
                        .values()
                        .filter_map(|b| {
                            let block = &self.blocks[b];
                            block.owner.map(|o| (block.cidr, Some(o.host)))
                        })
                        .collect();
                    let routes = self.routes_to_hosts(aggregate(group.cidr, &items)).collect();
                    (leaf.hosts.iter().map(|h| self.hosts.get(*h).spec.name.clone()).collect(), routes)
                }
                None => {
                    let items: Vec<_> = group
                        .children
                        .iter()
                        .filter(|c| populated[**c as usize])
                        .map(|c| (tree.groups[*c as usize].cidr, Some(*c)))
                        .collect();
                    let routes = aggregate(group.cidr, &items)
                        .into_iter()
                        .map(|(dest, l)| Route {
                            dest,
                            target: l.map_or(RouteTarget::Throw, |c| RouteTarget::Group {
                                path: tree.groups[c as usize].path.clone(),
                            }),
                        })
                        .collect();
                    (Vec::new(), routes)
                }
            };
            out.push(GroupRoutes {
                network: network.clone(),
                path: group.path.clone(),
                cidr: group.cidr,
                announce: populated[g as usize].then_some(group.cidr),
                hosts,
                routes,
            });
        }
    }
}
