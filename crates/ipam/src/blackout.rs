//! Blacked-out ranges: addresses no one may be given (gateways, reserved ranges, infrastructure).
//!
//! Rules (Romana 2.0's, kept): the range must lie inside a network and not cover all of it; it must
//! hold no allocated address; a larger range replaces the ones it contains and a contained request
//! is a no-op; un-blacking out needs an exact match.

use romana_model::Cidr;

use crate::error::IpamError;
use crate::state::{Ipam, NetworkKind};

impl Ipam {
    pub fn blackout(&mut self, cidr: Cidr) -> Result<(), IpamError> {
        let net = self
            .networks
            .iter()
            .position(|n| n.cidr.overlaps(&cidr))
            .filter(|i| self.networks[*i].cidr.contains(&cidr) || cidr.contains(&self.networks[*i].cidr))
            .ok_or(IpamError::BlackoutOutsideNetworks { cidr })?;
        let network = &self.networks[net];
        if cidr.contains(&network.cidr) {
            return Err(IpamError::BlackoutCoversNetwork { cidr, network: network.name.clone() });
        }
        if network.blackouts.iter().any(|b| b.contains(&cidr)) {
            return Ok(());
        }
        let inside: Vec<_> = self.allocations_in(net as u16, cidr);
        if let Some(first) = inside.first() {
            return Err(IpamError::BlackoutHasAllocations { cidr, first: *first, more: inside.len() - 1 });
        }
        let network = &mut self.networks[net];
        network.blackouts.retain(|b| !cidr.contains(b));
        network.blackouts.push(cidr);
        network.blackouts.sort();
        self.allocation_revision += 1;
        Ok(())
    }

    pub fn unblackout(&mut self, cidr: Cidr) -> Result<(), IpamError> {
        let network = self
            .networks
            .iter_mut()
            .find(|n| n.blackouts.contains(&cidr))
            .ok_or(IpamError::NotBlackedOut { cidr })?;
        network.blackouts.retain(|b| *b != cidr);
        // Positions skipped while fully blacked out may be carvable again.
        if let NetworkKind::Blocks(Some(tree)) = &mut network.kind {
            for g in &mut tree.groups {
                if let Some(leaf) = &mut g.leaf {
                    leaf.next_carve = 0;
                }
            }
        }
        self.allocation_revision += 1;
        Ok(())
    }

    /// Blacked-out ranges of every network, by network.
    pub fn blackouts(&self) -> Vec<(romana_model::NetworkName, Cidr)> {
        self.networks.iter().flat_map(|n| n.blackouts.iter().map(|b| (n.name.clone(), *b))).collect()
    }

    fn allocations_in(&self, net: u16, cidr: Cidr) -> Vec<std::net::IpAddr> {
        let family = cidr.family();
        self.blocks
            .ids()
            .filter(|b| {
                let b = &self.blocks[*b];
                b.net == net && b.used > 0 && b.cidr.overlaps(&cidr)
            })
            .flat_map(|b| {
                self.blocks.occupied(b).map(|(s, _)| self.blocks[b].value_of(s)).collect::<Vec<_>>()
            })
            .filter(|v| cidr.contains_value(family, *v))
            .map(|v| family.addr(v))
            .collect()
    }
}
