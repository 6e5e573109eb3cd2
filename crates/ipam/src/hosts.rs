//! Hosts: the registry, least-loaded placement into prefix groups, removal and tag updates.

use std::collections::BTreeMap;

use std::net::IpAddr;

use romana_model::{Cidr, HostName, NetworkName};

use crate::error::IpamError;
use crate::host_registry::{HostOrigin, HostRecord, Placement};
use crate::ids::{BlockId, HostId};
use crate::spec::HostSpec;
use crate::state::{Ipam, NetworkKind, Tree};

/// Where a host landed, per network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlacement {
    pub host: HostName,
    /// (network, group path and prefix) for every network that accepted the host.
    pub networks: Vec<(NetworkName, String, Cidr)>,
}

/// An address freed because its host went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedAddress {
    pub name: String,
    pub ip: IpAddr,
}

/// The eligible leaf with the fewest hosts, ties going to the first in depth-first order.
pub(crate) fn least_loaded_leaf(tree: &Tree, tags: &BTreeMap<String, String>) -> Option<u32> {
    let mut best: Option<(usize, u32)> = None;
    let mut stack = vec![0u32];
    while let Some(g) = stack.pop() {
        let group = &tree.groups[g as usize];
        if !group.admits(tags) {
            continue;
        }
        match &group.leaf {
            Some(leaf) => {
                if best.is_none_or(|(n, _)| leaf.hosts.len() < n) {
                    best = Some((leaf.hosts.len(), g));
                }
            }
            None => stack.extend(group.children.iter().rev()),
        }
    }
    best.map(|(_, g)| g)
}

fn tags_text(tags: &BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return "none".into();
    }
    tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

impl Ipam {
    /// Adds a host at run time: it joins every network with an eligible group (least-loaded leaf)
    /// and every classic network with a free host number. Adding the same host again is a no-op.
    pub fn add_host(&mut self, spec: HostSpec) -> Result<HostPlacement, IpamError> {
        self.add_host_preferring(spec, HostOrigin::Dynamic, &|_, _| None)
    }

    /// Adds a host as recorded elsewhere (a store record): in each network, the group at the
    /// recorded path if it exists and admits the host, else the least-loaded eligible one.
    pub fn add_host_at(
        &mut self,
        spec: HostSpec,
        origin: HostOrigin,
        paths: &BTreeMap<NetworkName, String>,
    ) -> Result<HostPlacement, IpamError> {
        let names: Vec<NetworkName> = self.networks.iter().map(|n| n.name.clone()).collect();
        let prefer = |net: u16, tree: &Tree| {
            let path = paths.get(&names[net as usize])?;
            tree.groups.iter().position(|g| &g.path == path).map(|g| g as u32)
        };
        self.add_host_preferring(spec, origin, &prefer)
    }

    pub(crate) fn add_host_preferring(
        &mut self,
        spec: HostSpec,
        origin: HostOrigin,
        prefer: &dyn Fn(u16, &Tree) -> Option<u32>,
    ) -> Result<HostPlacement, IpamError> {
        if let Some(id) = self.hosts.id(&spec.name) {
            let existing = self.hosts.get(id);
            if existing.spec.ip == spec.ip
                && existing.spec.ipv6 == spec.ipv6
                && existing.spec.tags == spec.tags
            {
                return Ok(self.placement_of(id));
            }
            return Err(IpamError::HostExists { host: spec.name, same_ip: existing.spec.ip == spec.ip });
        }
        if let Some(ipv6) = spec.ipv6
            && spec.ip.is_ipv6()
        {
            return Err(IpamError::SecondIpv6 { host: spec.name, ip: spec.ip, ipv6 });
        }
        for ip in spec.addresses() {
            if let Some(other) = self.hosts.by_ip(&ip) {
                return Err(IpamError::HostIpInUse { ip, other: self.hosts.get(other).spec.name.clone() });
            }
        }
        let mut placements = Vec::new();
        for (i, net) in self.networks.iter().enumerate() {
            let i = i as u16;
            match &net.kind {
                NetworkKind::Blocks(Some(tree)) => {
                    let preferred = prefer(i, tree)
                        .filter(|g| tree.groups[*g as usize].is_leaf() && tree.admits_path(*g, &spec.tags));
                    if let Some(g) = preferred.or_else(|| least_loaded_leaf(tree, &spec.tags)) {
                        placements.push((i, Placement::Group(g)));
                    }
                }
                NetworkKind::Blocks(None) => {}
                NetworkKind::Classic(c) => {
                    if let Some(k) = c.free_host_index() {
                        placements.push((i, Placement::Classic(k)));
                    }
                }
            }
        }
        if placements.is_empty() {
            return Err(IpamError::HostFitsNoGroup { host: spec.name, tags: tags_text(&spec.tags) });
        }
        let id = self.hosts.insert(HostRecord::new(spec, origin, placements.clone()));
        for (net, p) in placements {
            self.attach(id, net, p);
        }
        self.topology_revision += 1;
        Ok(self.placement_of(id))
    }

    pub(crate) fn attach(&mut self, id: HostId, net: u16, p: Placement) {
        match p {
            Placement::Group(g) => self.leaf_mut(net, g).hosts.push(id),
            Placement::Classic(k) => {
                if let NetworkKind::Classic(c) = &mut self.networks[net as usize].kind {
                    c.hosts.insert(k, id);
                }
            }
        }
    }

    pub(crate) fn placement_of(&self, id: HostId) -> HostPlacement {
        let h = self.hosts.get(id);
        let networks = h
            .placements
            .iter()
            .map(|(net, p)| {
                let network = &self.networks[*net as usize];
                match p {
                    Placement::Group(g) => {
                        let group = self.group(*net, *g);
                        (network.name.clone(), group.path.clone(), group.cidr)
                    }
                    Placement::Classic(k) => {
                        let cidr = match &network.kind {
                            NetworkKind::Classic(c) => c.host_cidr(network.cidr, *k),
                            NetworkKind::Blocks(_) => network.cidr,
                        };
                        (network.name.clone(), format!("host#{k}"), cidr)
                    }
                }
            })
            .collect();
        HostPlacement { host: h.spec.name.clone(), networks }
    }

    /// Removes a host from every network, freeing its blocks *and* its address names
    /// (Romana 2.0 left the names behind). Returns the addresses that were released.
    pub fn remove_host(&mut self, name: &HostName) -> Result<Vec<ReleasedAddress>, IpamError> {
        let id = self.hosts.id(name).ok_or_else(|| IpamError::UnknownHost(name.clone()))?;
        let mut released = Vec::new();
        let mut host_blocks: Vec<BlockId> =
            self.blocks.ids().filter(|b| self.blocks[b].owner().is_some_and(|o| o.host == id)).collect();
        host_blocks.sort_by_key(|b| (self.blocks[b].net, self.blocks[b].cidr));
        for b in host_blocks {
            let slots: Vec<u32> = self.blocks.occupied(b).map(|(s, _)| s).collect();
            for slot in slots {
                let r = self.release_slot(b, slot);
                released.push(ReleasedAddress { name: r.name.to_string(), ip: r.ip });
            }
        }
        let record = self.hosts.remove(id);
        for (net, p) in record.placements {
            match p {
                Placement::Group(g) => self.leaf_mut(net, g).hosts.retain(|h| *h != id),
                Placement::Classic(k) => {
                    if let NetworkKind::Classic(c) = &mut self.networks[net as usize].kind {
                        c.hosts.remove(&k);
                    }
                }
            }
        }
        self.topology_revision += 1;
        Ok(released)
    }

    /// Replaces a host's tags. The host never moves: the new tags must still satisfy the
    /// assignment of every group it sits in (and their ancestors). Networks that now have an
    /// eligible group and did not hold the host before take it.
    pub fn update_host_tags(
        &mut self,
        name: &HostName,
        tags: BTreeMap<String, String>,
    ) -> Result<(), IpamError> {
        let id = self.hosts.id(name).ok_or_else(|| IpamError::UnknownHost(name.clone()))?;
        let placements = self.hosts.get(id).placements.clone();
        for (net, p) in &placements {
            if let (Placement::Group(g), Some(tree)) = (p, self.networks[*net as usize].tree())
                && !tree.admits_path(*g, &tags)
            {
                return Err(IpamError::TagsBreakPlacement {
                    host: name.clone(),
                    network: self.networks[*net as usize].name.clone(),
                    group: tree.groups[*g as usize].path.clone(),
                });
            }
        }
        let mut joined = Vec::new();
        for (i, net) in self.networks.iter().enumerate() {
            let i = i as u16;
            if placements.iter().any(|(n, _)| *n == i) {
                continue;
            }
            if let NetworkKind::Blocks(Some(tree)) = &net.kind
                && let Some(g) = least_loaded_leaf(tree, &tags)
            {
                joined.push((i, Placement::Group(g)));
            }
        }
        let record = self.hosts.get_mut(id);
        record.spec.tags = tags;
        record.placements.extend(joined.iter().copied());
        for (net, p) in joined {
            self.attach(id, net, p);
        }
        self.topology_revision += 1;
        Ok(())
    }

    /// Where a host sits, or `None` if it is unknown.
    pub fn host_placement(&self, name: &HostName) -> Option<HostPlacement> {
        self.hosts.id(name).map(|id| self.placement_of(id))
    }
}
