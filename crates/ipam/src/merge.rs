//! Run-time topology change as a merge: the new topology is built fresh, then everything the old
//! state held is carried over (hosts added at run time, blackouts, classic numbers, and every
//! allocated address at the same address). Romana 2.0 dropped dynamic hosts and ignored new files
//! (its issues #175 and #191); here a change that cannot keep something fails and names it.

use std::collections::BTreeMap;

use romana_model::{Cidr, Family, HostName, NetworkName, addr_value};

use crate::alloc::AllocRequest;
use crate::error::IpamError;
use crate::host_registry::{HostOrigin, Placement};
use crate::spec::TopologySpec;
use crate::state::{Ipam, NetworkKind};

/// What a topology update kept, added and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyChange {
    pub kept_addresses: usize,
    /// Hosts added at run time that were placed into the new topology.
    pub kept_hosts: Vec<HostName>,
    /// Hosts that the old topology listed, the new one does not, and that held no address.
    pub dropped_hosts: Vec<HostName>,
    pub added_networks: Vec<NetworkName>,
    pub removed_networks: Vec<NetworkName>,
    /// Blackouts that lie in no network any more.
    pub dropped_blackouts: Vec<Cidr>,
}

impl Ipam {
    /// Applies a new topology, keeping what exists. Returns the new state; `self` is untouched,
    /// so a caller commits the result or drops it.
    pub fn update_topology(&self, spec: TopologySpec) -> Result<(Ipam, TopologyChange), IpamError> {
        let mut next = Ipam::new(spec)?;
        let mut change = TopologyChange::default();
        let mut conflicts = Vec::new();

        for n in &next.networks {
            if self.network_index(&n.name).is_none() {
                change.added_networks.push(n.name.clone());
            }
        }
        for n in &self.networks {
            if next.network_index(&n.name).is_none() {
                change.removed_networks.push(n.name.clone());
            }
        }

        // Classic tenant and segment numbers must never change meaning.
        for (i, old) in self.networks.iter().enumerate() {
            let NetworkKind::Classic(oc) = &old.kind else { continue };
            let Some(j) = next.network_index(&old.name) else { continue };
            let network = &mut next.networks[j as usize];
            if let NetworkKind::Classic(nc) = &mut network.kind {
                for (t, n) in &oc.tenants {
                    if let Err(e) = nc.register_tenant(&network.name, t, *n) {
                        conflicts.push(format!("network {}: {e}", self.networks[i].name));
                    }
                }
                for ((t, s), n) in &oc.segments {
                    if let Err(e) = nc.register_segment(&network.name, t, s, *n) {
                        conflicts.push(format!("network {}: {e}", self.networks[i].name));
                    }
                }
            }
        }

        for (_, cidr) in self.blackouts() {
            match next.blackout(cidr) {
                Ok(()) => {}
                Err(IpamError::BlackoutOutsideNetworks { .. }) => change.dropped_blackouts.push(cidr),
                Err(e) => conflicts.push(format!("blackout {cidr}: {e}")),
            }
        }

        let allocations = self.allocations();
        let mut first_address: BTreeMap<&HostName, Vec<std::net::IpAddr>> = BTreeMap::new();
        for a in &allocations {
            first_address.entry(&a.host).or_default().push(a.ip);
        }
        for (_, old) in self.hosts.iter() {
            let name = &old.spec.name;
            if let Some(new_id) = next.hosts.id(name) {
                let listed = next.hosts.get(new_id);
                if listed.spec.ip != old.spec.ip {
                    conflicts.push(format!("host {name} moves from {} to {}", old.spec.ip, listed.spec.ip));
                }
                if listed.spec.ipv6 != old.spec.ipv6 {
                    let show = |a: Option<std::net::Ipv6Addr>| a.map_or("none".to_owned(), |a| a.to_string());
                    conflicts.push(format!(
                        "host {name} moves its IPv6 underlay address from {} to {}",
                        show(old.spec.ipv6),
                        show(listed.spec.ipv6)
                    ));
                }
                continue;
            }
            let held = first_address.get(name).map_or(0, Vec::len);
            if old.origin == HostOrigin::Topology {
                if held == 0 {
                    change.dropped_hosts.push(name.clone());
                } else {
                    conflicts.push(format!("host {name} is no longer listed but holds {held} addresses"));
                }
                continue;
            }
            // Prefer the group holding the host's addresses, then the group at the same path.
            let addresses = first_address.get(name).cloned().unwrap_or_default();
            let old_paths: BTreeMap<NetworkName, String> = old
                .placements
                .iter()
                .filter_map(|(net, p)| match p {
                    Placement::Group(g) => {
                        Some((self.networks[*net as usize].name.clone(), self.group(*net, *g).path.clone()))
                    }
                    Placement::Classic(_) => None,
                })
                .collect();
            let net_names: Vec<NetworkName> = next.networks.iter().map(|n| n.name.clone()).collect();
            let prefer = |net: u16, tree: &crate::state::Tree| {
                let by_address =
                    addresses.iter().find_map(|ip| tree.leaf_containing(Family::of(*ip), addr_value(*ip)));
                by_address.or_else(|| {
                    let path = old_paths.get(&net_names[net as usize])?;
                    tree.groups.iter().position(|g| &g.path == path).map(|g| g as u32)
                })
            };
            match next.add_host_preferring(old.spec.clone(), HostOrigin::Dynamic, &prefer) {
                Ok(_) => change.kept_hosts.push(name.clone()),
                Err(e) => conflicts.push(format!("host {name}: {e}")),
            }
        }

        for a in &allocations {
            let req = AllocRequest {
                name: a.name.clone(),
                host: a.host.clone(),
                tenant: a.tenant.clone(),
                segment: a.segment.clone(),
            };
            match next.allocate_specific(&req, a.ip) {
                Ok(_) => change.kept_addresses += 1,
                Err(e) => conflicts.push(format!("address {} ({}): {e}", a.name, a.ip)),
            }
        }
        if !conflicts.is_empty() {
            return Err(IpamError::MergeConflicts(conflicts));
        }
        next.allocation_revision = self.allocation_revision + 1;
        next.topology_revision = self.topology_revision + 1;
        // The owners' changes counted on from here, so that `routes_revision` only grows.
        next.blocks.owner_changes += self.blocks.owner_changes;
        Ok((next, change))
    }
}
