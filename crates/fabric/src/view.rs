//! The BGP fabric, pure: romanad's topology (`GET /topology`: groups with their BGP parameters,
//! hosts with their addresses) joined with the route manager's fabric view (`GET /fabric`: what
//! each group announces and which member each of its routes leads to). Knows nothing of BIRD's
//! syntax (`bird.rs`) nor of any I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use romana_api::rest::FabricGroup;
use romana_api::rest::RouteKind;
use romana_api::topology::{GroupOrHost, TopologyRequest};
use romana_model::Cidr;

use crate::FabricError;

/// A group's BGP parameters, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bgp {
    pub asn: u32,
    pub routers: Vec<IpAddr>,
    pub uplinks: Vec<IpAddr>,
    pub host_asn: u32,
    /// Route reflectors of a leaf (iBGP): routers of the group or hosts of it (`reflect.rs`).
    pub reflectors: Vec<IpAddr>,
}

/// Where one of a group's routes leads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    Host(String),
    Group(String),
    Throw,
}

/// One prefix group of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub network: String,
    pub path: String,
    pub cidr: Cidr,
    pub announce: Option<Cidr>,
    pub parent: Option<usize>,
    pub bgp: Option<Bgp>,
    /// Leaves: the hosts with their addresses.
    pub hosts: Vec<(String, IpAddr)>,
    pub routes: Vec<(Cidr, Via)>,
}

/// The whole fabric: every group of every network, parents before children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fabric {
    pub groups: Vec<Group>,
    /// Every pod network's prefix.
    pub networks: Vec<Cidr>,
    /// Hosts' IPv6 underlay addresses (a dual-stack underlay), by host name: the next hop a
    /// host announces its IPv6 aggregates with. A host without one announces no IPv6.
    pub host_ipv6: BTreeMap<String, IpAddr>,
    /// Where VIPs may be (the external ranges and every VIP's address): routers accept /32s
    /// inside them from any member and pass them up (`vip.rs`). Empty from `new`; the caller
    /// sets them from `/config/vips` and `/vips`.
    pub vip_ranges: Vec<Cidr>,
}

fn cidr(what: &str, text: &str) -> Result<Cidr, FabricError> {
    text.parse()
        .map_err(|e| FabricError::Malformed { what: what.to_owned(), value: format!("{text:?}: {e}") })
}

fn ip(what: &str, text: &str) -> Result<IpAddr, FabricError> {
    text.parse().map_err(|_| FabricError::Malformed { what: what.to_owned(), value: format!("{text:?}") })
}

impl Fabric {
    /// Joins the topology and the fabric view. Groups are matched by network and prefix (both
    /// views carry the carved `cidr`); a group of the fabric view the topology does not show (the
    /// unnamed root of a map of several groups) has no BGP parameters.
    pub fn new(topology: &TopologyRequest, view: &[FabricGroup]) -> Result<Fabric, FabricError> {
        let mut networks = Vec::new();
        for n in &topology.networks {
            networks.push(cidr(&format!("network {}", n.name), &n.cidr)?);
        }
        let mut groups = Vec::new();
        for g in view {
            let at = format!("fabric group {} {}", g.network, g.group);
            let routes = g
                .routes
                .iter()
                .map(|r| {
                    let via = match &r.kind {
                        RouteKind::Host { via, .. } => Via::Host(via.clone()),
                        RouteKind::Group { via } => Via::Group(via.clone()),
                        RouteKind::Throw => Via::Throw,
                    };
                    Ok((cidr(&at, &r.dest)?, via))
                })
                .collect::<Result<Vec<_>, FabricError>>()?;
            groups.push(Group {
                network: g.network.clone(),
                path: g.group.clone(),
                cidr: cidr(&at, &g.cidr)?,
                announce: g.announce.as_deref().map(|a| cidr(&at, a)).transpose()?,
                parent: None,
                bgp: None,
                hosts: Vec::new(),
                routes,
            });
        }
        // Parents by path: `/a/b`'s parent is `/a`, `/a`'s is `/`.
        for i in 0..groups.len() {
            let path = &groups[i].path;
            let parent = match path.rfind('/') {
                _ if path == "/" => None,
                Some(0) => Some("/".to_owned()),
                Some(k) => Some(path[..k].to_owned()),
                None => None,
            };
            groups[i].parent = parent.and_then(|p| {
                (0..groups.len()).find(|j| groups[*j].network == groups[i].network && groups[*j].path == p)
            });
        }
        let mut fabric = Fabric { groups, networks, host_ipv6: BTreeMap::new(), vip_ranges: Vec::new() };
        for t in &topology.topologies {
            for network in &t.networks {
                match t.map.as_slice() {
                    // One element is the root itself; several hang under an unnamed root.
                    [root] => fabric.walk(network, "/", std::slice::from_ref(root), true)?,
                    list => fabric.walk(network, "/", list, false)?,
                }
            }
        }
        Ok(fabric)
    }

    /// Copies BGP parameters and host addresses from the topology's groups onto ours, matched by
    /// path (built as the IPAM builds it: `/name`, or `/#index` for an unnamed group).
    fn walk(
        &mut self,
        network: &str,
        parent: &str,
        list: &[GroupOrHost],
        root: bool,
    ) -> Result<(), FabricError> {
        for (i, e) in list.iter().enumerate() {
            if e.ip.is_some() {
                continue;
            }
            let base = if parent == "/" { "" } else { parent };
            let path = match (root, e.name.is_empty()) {
                (true, _) => "/".to_owned(),
                (false, true) => format!("{base}/#{i}"),
                (false, false) => format!("{base}/{}", e.name),
            };
            let Some(g) = self.groups.iter().position(|g| g.network == network && g.path == path) else {
                continue;
            };
            let at = format!("group {}", self.groups[g].path);
            if e.routing == "bgp"
                && let Some(b) = &e.bgp
            {
                let list = |what: &str, l: &[String]| -> Result<Vec<IpAddr>, FabricError> {
                    l.iter().map(|a| ip(&format!("{at} bgp.{what}"), a)).collect()
                };
                self.groups[g].bgp = Some(Bgp {
                    asn: b.asn,
                    routers: list("routers", &b.routers)?,
                    uplinks: list("uplinks", &b.uplinks)?,
                    host_asn: b.host_asn.unwrap_or(b.asn),
                    reflectors: list("reflectors", &b.reflectors)?,
                });
            }
            let members = e.groups.as_deref().unwrap_or(&[]);
            for h in members.iter().filter(|m| m.ip.is_some()) {
                let addr = ip(&format!("{at} host {}", h.name), h.ip.as_deref().unwrap_or_default())?;
                self.groups[g].hosts.push((h.name.clone(), addr));
                if let Some(v6) = &h.ipv6 {
                    let v6 = ip(&format!("{at} host {} ipv6", h.name), v6)?;
                    self.host_ipv6.insert(h.name.clone(), v6);
                }
            }
            self.walk(network, &path, members, false)?;
        }
        Ok(())
    }

    /// The group at `path` in every network that has it (`rack-1` also finds `/rack-1`).
    pub fn groups_at(&self, path: &str) -> Vec<usize> {
        let want = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        (0..self.groups.len()).filter(|g| self.groups[*g].path == want).collect()
    }

    /// The leaves holding `host`, one per network it is placed in.
    pub fn leaves_of(&self, host: &str) -> Vec<usize> {
        (0..self.groups.len()).filter(|g| self.groups[*g].hosts.iter().any(|(h, _)| h == host)).collect()
    }

    /// Whether group `g` lies on the branch at `path` (is that group or below it).
    fn on_branch(&self, g: usize, path: &str) -> bool {
        let p = &self.groups[g].path;
        p == path || path == "/" || p.starts_with(&format!("{path}/"))
    }

    /// What group `g`'s routers should learn from their parents: every route of every ancestor
    /// that leads to a group off `g`'s branch (the other groups' aggregates, at each level).
    pub fn from_upstream(&self, g: usize) -> BTreeSet<Cidr> {
        let mut out = BTreeSet::new();
        let mut at = self.groups[g].parent;
        while let Some(a) = at {
            for (dest, via) in &self.groups[a].routes {
                if let Via::Group(path) = via
                    && !self.on_branch(g, path)
                {
                    out.insert(*dest);
                }
            }
            at = self.groups[a].parent;
        }
        out
    }

    /// What group `g`'s routers should learn from one member: host `name` at a leaf, the child
    /// group at path `name` otherwise. Exactly the routes the fabric view sends to it.
    pub fn from_member(&self, g: usize, name: &str) -> BTreeSet<Cidr> {
        self.groups[g]
            .routes
            .iter()
            .filter(|(_, via)| match via {
                Via::Host(h) | Via::Group(h) => h == name,
                Via::Throw => false,
            })
            .map(|(dest, _)| *dest)
            .collect()
    }

    /// The child groups of `g`.
    pub fn children(&self, g: usize) -> Vec<usize> {
        (0..self.groups.len()).filter(|c| self.groups[*c].parent == Some(g)).collect()
    }
}
