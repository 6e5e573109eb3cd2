//! The Route Manager's computation: each host's routes and what each prefix group shows the fabric.
//!
//! A leaf group is one layer-2 segment (a rack). A host routes the blocks of the other hosts in its
//! own leaf directly to them, aggregated to the fewest prefixes (`aggregate`); everything outside
//! its leaf leaves through the fabric, which learns one prefix per group. A group's router needs
//! one route per child group (or, at a leaf, the aggregated blocks of each host).

use std::net::IpAddr;

use romana_model::{Cidr, Family, HostName, NetworkName};

use crate::aggregate::aggregate;
use crate::error::IpamError;
use crate::ids::HostId;
use crate::spec::HostSpec;
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

/// The route to `dest` through the host of `spec` (`Ipam::host_route`).
pub(crate) fn route_via(spec: &HostSpec, dest: Cidr) -> Route {
    let target = match spec.address(dest.family() == Family::V6) {
        Some(ip) => RouteTarget::Host { name: spec.name.clone(), ip },
        None => RouteTarget::Throw,
    };
    Route { dest, target }
}

impl Ipam {
    /// The route to `dest` through host `id`: via its underlay address of `dest`'s family. A
    /// host without one (an IPv6 block on a host with an IPv4 underlay only) gets a throw: an
    /// IPv6 route via an IPv4 next hop would need every hop to carry IPv6 over IPv4 (RFC 5549),
    /// and leaving the route out would let a covering aggregate of another host capture the
    /// block. So its endpoints of that family are unreachable from elsewhere (the lookup ends in
    /// the throw) until the host gets an IPv6 underlay address (ARCHITECTURE.md, "Dual-stack
    /// underlay").
    pub(crate) fn host_route(&self, dest: Cidr, id: HostId) -> Route {
        route_via(&self.hosts.get(id).spec, dest)
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

    /// The routes of each of `hosts`, from one state (`route_plan.rs`: each leaf's trie built
    /// once and shared by its hosts).
    pub fn hosts_routes(&self, hosts: &[HostName]) -> Vec<Result<HostRoutes, IpamError>> {
        self.route_plan(hosts, &|_| false).routes()
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
                            block.owner().map(|o| (block.cidr, Some(o.host)))
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
