//! Allocation and release of addresses: owned blocks first, then emptied blocks, then a new block.
//!
//! Within a block the lowest free address wins; blacked-out addresses are skipped. Allocation is
//! idempotent by name: asking again for the same name, host, tenant and segment returns the same
//! address, while a name already used for something else is an error.

use std::net::IpAddr;

use romana_model::{AddressName, Cidr, Family, HostName, NetworkName, SegmentName, TenantName, addr_value};

use crate::block::FREE;
use crate::error::IpamError;
use crate::host_registry::Placement;
use crate::ids::{BlockId, Owner};
use crate::state::{Ipam, Network, NetworkKind};

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocRequest {
    pub name: AddressName,
    pub host: HostName,
    pub tenant: TenantName,
    pub segment: SegmentName,
}

/// An allocated address and everything it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub name: AddressName,
    pub ip: IpAddr,
    /// The endpoint's route length: /32 (/128), shorter in a classic layout with endpoint space.
    pub prefix_len: u8,
    pub network: NetworkName,
    pub block: Cidr,
    pub host: HostName,
    pub tenant: TenantName,
    pub segment: SegmentName,
    /// False when the name already held this address (an idempotent retry).
    pub fresh: bool,
}

/// A released address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub name: String,
    pub ip: IpAddr,
    pub network: NetworkName,
    pub block: Cidr,
    pub host: Option<HostName>,
    /// The block became empty and is now reusable by any owner in its group.
    pub block_emptied: bool,
}

fn blocked(net: &Network) -> impl Fn(u128) -> bool + '_ {
    let family = net.cidr.family();
    move |v| !net.blackouts.is_empty() && net.blackouts.iter().any(|c| c.contains_value(family, v))
}

impl Ipam {
    /// Allocates an address for `req.name` on `req.host` for the tenant and segment.
    pub fn allocate(&mut self, req: &AllocRequest) -> Result<Allocation, IpamError> {
        self.allocate_in(req, None)
    }

    /// `allocate`, drawing only from networks of `family` when given (dual-stack: `stack.rs`).
    pub(crate) fn allocate_in(
        &mut self,
        req: &AllocRequest,
        family: Option<Family>,
    ) -> Result<Allocation, IpamError> {
        let hash = self.names.hash(req.name.as_str());
        if let Some(existing) = self.existing_hashed(hash, req, None)? {
            return Ok(existing);
        }
        let host = self.host_id(&req.host).ok_or_else(|| IpamError::UnknownHost(req.host.clone()))?;
        let owner = Owner { owner: self.owners.intern(&req.tenant, &req.segment), host };
        let mut member = false;
        let mut any = false;
        let mut classic_error = None;
        // Indexing (rather than iterating a borrowed list) lets the loop body mutate the state.
        let explicit = self.tenant_networks.get(&req.tenant).map_or(0, Vec::len);
        for i in 0..explicit + self.wildcard_networks.len() {
            let net = match i.checked_sub(explicit) {
                None => self.tenant_networks[&req.tenant][i],
                Some(w) => self.wildcard_networks[w],
            };
            if family.is_some_and(|f| f != self.networks[net as usize].cidr.family()) {
                continue;
            }
            any = true;
            let Some(placement) = self.hosts.get(host).placement(net) else { continue };
            member = true;
            let got = match placement {
                Placement::Group(g) => self.alloc_in_leaf(net, g, owner),
                Placement::Classic(k) => match self.alloc_classic(net, k, owner, &req.tenant, &req.segment) {
                    Ok(got) => got,
                    Err(e) => {
                        classic_error = Some(e);
                        None
                    }
                },
            };
            if let Some((block, slot)) = got {
                return Ok(self.record(hash, req, block, slot));
            }
        }
        if !any {
            return Err(IpamError::NoNetworkForTenant { tenant: req.tenant.to_string() });
        }
        let nets = self.networks_for_tenant(&req.tenant);
        let names =
            || nets.iter().map(|n| self.networks[*n as usize].name.to_string()).collect::<Vec<_>>().join(",");
        if !member {
            return Err(IpamError::HostNotInTenantNetworks {
                host: req.host.clone(),
                tenant: req.tenant.to_string(),
                networks: names(),
            });
        }
        Err(classic_error.unwrap_or_else(|| IpamError::Exhausted {
            host: req.host.clone(),
            tenant: req.tenant.to_string(),
            segment: req.segment.to_string(),
            networks: names(),
        }))
    }

    /// Allocates exactly `ip` (for migrations, restores and operators who must pin an address).
    pub fn allocate_specific(&mut self, req: &AllocRequest, ip: IpAddr) -> Result<Allocation, IpamError> {
        if let Some(existing) = self.existing(req, Some(ip))? {
            return Ok(existing);
        }
        let host = self.host_id(&req.host).ok_or_else(|| IpamError::UnknownHost(req.host.clone()))?;
        let (family, value) = (Family::of(ip), addr_value(ip));
        let net = self
            .networks
            .iter()
            .position(|n| n.cidr.contains_value(family, value))
            .ok_or(IpamError::AddressInNoNetwork { ip })? as u16;
        let network = &self.networks[net as usize];
        if !self.networks_for_tenant(&req.tenant).contains(&net) {
            return Err(IpamError::NetworkNotForTenant {
                ip,
                network: network.name.clone(),
                tenant: req.tenant.to_string(),
            });
        }
        if let Some(by) = network.blacked_out_by(value) {
            return Err(IpamError::AddressBlackedOut { ip, by });
        }
        let placement =
            self.hosts.get(host).placement(net).ok_or_else(|| IpamError::HostNotInTenantNetworks {
                host: req.host.clone(),
                tenant: req.tenant.to_string(),
                networks: network.name.to_string(),
            })?;
        let owner = Owner { owner: self.owners.intern(&req.tenant, &req.segment), host };
        let (block, slot) = match placement {
            Placement::Group(g) => self.claim_specific(net, g, owner, ip)?,
            Placement::Classic(k) => self.claim_classic_specific(net, k, owner, req, ip)?,
        };
        Ok(self.record(self.names.hash(req.name.as_str()), req, block, slot))
    }

    fn existing(&self, req: &AllocRequest, ip: Option<IpAddr>) -> Result<Option<Allocation>, IpamError> {
        self.existing_hashed(self.names.hash(req.name.as_str()), req, ip)
    }

    /// An existing allocation under `req.name`, if it matches the request; an error if it does not.
    fn existing_hashed(
        &self,
        hash: u64,
        req: &AllocRequest,
        ip: Option<IpAddr>,
    ) -> Result<Option<Allocation>, IpamError> {
        let Some((_, block, slot)) = self.names.get_hashed(hash, req.name.as_str()) else { return Ok(None) };
        let found = self.allocation_at(block, slot);
        let same = found.host == req.host
            && found.tenant == req.tenant
            && found.segment == req.segment
            && ip.is_none_or(|ip| ip == found.ip);
        if same {
            return Ok(Some(Allocation { fresh: false, ..found }));
        }
        Err(IpamError::NameExists {
            name: req.name.to_string(),
            ip: found.ip,
            host: found.host,
            tenant: found.tenant.to_string(),
            segment: found.segment.to_string(),
        })
    }

    fn record(&mut self, hash: u64, req: &AllocRequest, block: BlockId, slot: u32) -> Allocation {
        let entry = self.names.insert_hashed(hash, req.name.as_str(), block, slot);
        self.blocks.occupy(block, slot, entry);
        self.allocation_revision += 1;
        let b = &self.blocks[block];
        let network = &self.networks[b.net as usize];
        Allocation {
            name: req.name.clone(),
            ip: network.cidr.family().addr(b.value_of(slot)),
            prefix_len: b.endpoint_prefix_len(),
            network: network.name.clone(),
            block: b.cidr,
            host: req.host.clone(),
            tenant: req.tenant.clone(),
            segment: req.segment.clone(),
            fresh: true,
        }
    }

    pub(crate) fn allocation_at(&self, block: BlockId, slot: u32) -> Allocation {
        let b = &self.blocks[block];
        let network = &self.networks[b.net as usize];
        let owner = b.owner().expect("occupied blocks have an owner");
        let (tenant, segment) = self.owners.get(owner.owner).clone();
        let name = self.names.name(self.blocks.entry(block, slot));
        Allocation {
            name: AddressName::new(name).expect("stored names were validated"),
            ip: network.cidr.family().addr(b.value_of(slot)),
            prefix_len: b.endpoint_prefix_len(),
            network: network.name.clone(),
            block: b.cidr,
            host: self.hosts.get(owner.host).spec.name.clone(),
            tenant,
            segment,
            fresh: true,
        }
    }

    /// The lowest free address for `owner` in leaf `g`: its own blocks, then an emptied block, then a new one.
    fn alloc_in_leaf(&mut self, net: u16, g: u32, owner: Owner) -> Option<(BlockId, u32)> {
        let blocks = &mut self.blocks;
        let host = self.hosts.get_mut(owner.host);
        let network = &mut self.networks[net as usize];
        let family = network.cidr.family();
        let block_len = network.block_len;
        let NetworkKind::Blocks(Some(tree)) = &mut network.kind else { return None };
        let group = &mut tree.groups[g as usize];
        let gcidr = group.cidr;
        let leaf = group.leaf.as_mut()?;
        let blackouts = &network.blackouts;
        let blocked =
            |v: u128| !blackouts.is_empty() && blackouts.iter().any(|c| c.contains_value(family, v));

        if let Some(owned) = host.owned_mut(net, owner.owner) {
            while owned.first_open < owned.blocks.len() && blocks[owned.blocks[owned.first_open]].is_full() {
                owned.first_open += 1;
            }
            for &b in &owned.blocks[owned.first_open..] {
                if let Some(s) = blocks.lowest_free(b, blocked) {
                    return Some((b, s));
                }
            }
        }
        let reusable = leaf.reusable.iter().copied().find_map(|pos| {
            let b = leaf.blocks.get(pos).expect("reusable positions are carved");
            blocks.lowest_free(b, blocked).map(|s| (pos, b, s))
        });
        if let Some((pos, b, s)) = reusable {
            leaf.reusable.remove(&pos);
            blocks.set_owner(b, Some(owner));
            host.take_block(net, owner.owner, b, blocks);
            return Some((b, s));
        }
        let block_bits = family.width() - block_len;
        let positions = 1u128.checked_shl(u32::from(block_len - gcidr.prefix_len())).unwrap_or(u128::MAX);
        loop {
            let pos = leaf.next_carve;
            if pos >= positions {
                return None;
            }
            if leaf.blocks.contains(pos) {
                leaf.next_carve += 1;
                continue;
            }
            let cidr = gcidr.subnet(pos, block_len).expect("position below 2^(block_len - group prefix)");
            if let Some(by) = blackouts.iter().find(|c| c.contains(&cidr)) {
                leaf.next_carve = (pos + 1).max(((by.last() - gcidr.first()) >> block_bits) + 1);
                continue;
            }
            let id = blocks.push_topology(cidr, net, g);
            leaf.blocks.insert(pos, id);
            leaf.next_carve += 1;
            match blocks.lowest_free(id, blocked) {
                Some(s) => {
                    blocks.set_owner(id, Some(owner));
                    host.take_block(net, owner.owner, id, blocks);
                    return Some((id, s));
                }
                // Covered by several smaller blackouts: keep it carved and unowned.
                None => {
                    leaf.reusable.insert(pos);
                }
            }
        }
    }

    fn alloc_classic(
        &mut self,
        net: u16,
        k: u32,
        owner: Owner,
        tenant: &TenantName,
        segment: &SegmentName,
    ) -> Result<Option<(BlockId, u32)>, IpamError> {
        let b = self.classic_block(net, k, owner, tenant, segment, None)?;
        let network = &self.networks[net as usize];
        Ok(self.blocks.lowest_free(b, blocked(network)).map(|s| (b, s)))
    }

    /// The classic block for (host k, tenant, segment), numbering the tenant and segment on first use
    /// (or with the given numbers, when an address is pinned).
    fn classic_block(
        &mut self,
        net: u16,
        k: u32,
        owner: Owner,
        tenant: &TenantName,
        segment: &SegmentName,
        numbers: Option<(u32, u32)>,
    ) -> Result<BlockId, IpamError> {
        let network = &mut self.networks[net as usize];
        let NetworkKind::Classic(c) = &mut network.kind else {
            unreachable!("classic placement in a block network")
        };
        if let Some((t, s)) = numbers {
            c.register_tenant(&network.name, tenant, t)?;
            c.register_segment(&network.name, tenant, segment, s)?;
        }
        let t = c.tenant_number(&network.name, tenant)?;
        let s = c.segment_number(&network.name, tenant, segment)?;
        let b = match c.blocks.get(&(k, t, s)) {
            Some(b) => *b,
            None => {
                let cidr = c.segment_cidr(network.cidr, k, t, s);
                let id = self.blocks.push_classic(cidr, net, c.bits.endpoint_space_bits, c.slots());
                c.blocks.insert((k, t, s), id);
                id
            }
        };
        self.blocks.set_owner(b, Some(owner));
        Ok(b)
    }

    fn claim_specific(
        &mut self,
        net: u16,
        g: u32,
        owner: Owner,
        ip: IpAddr,
    ) -> Result<(BlockId, u32), IpamError> {
        let value = addr_value(ip);
        let network = &self.networks[net as usize];
        let group = self.group(net, g);
        if !group.cidr.contains_value(Family::of(ip), value) {
            return Err(IpamError::AddressOutsideHost {
                ip,
                host: self.hosts.get(owner.host).spec.name.clone(),
                network: network.name.clone(),
                cidr: group.cidr,
            });
        }
        let block_len = network.block_len;
        let gcidr = group.cidr;
        let pos = (value - gcidr.first()) >> (gcidr.family().width() - block_len);
        let existing = group.leaf.as_ref().and_then(|l| l.blocks.get(pos));
        if let Some(b) = existing {
            let block = &self.blocks[b];
            let slot = block.slot_of(value).expect("the block at this position contains the address");
            if let Some(o) = block.owner()
                && o != owner
            {
                return Err(IpamError::AddressInForeignBlock {
                    ip,
                    block: block.cidr,
                    owner: self.owner_label(o),
                });
            }
            let entry = self.blocks.entry(b, slot);
            if entry != FREE {
                return Err(IpamError::AddressInUse { ip, name: self.names.name(entry).to_owned() });
            }
            if block.owner().is_none() {
                self.blocks.set_owner(b, Some(owner));
                let blocks = &self.blocks;
                let NetworkKind::Blocks(Some(tree)) = &mut self.networks[net as usize].kind else {
                    unreachable!("group placement in a network without a tree")
                };
                let leaf = tree.groups[g as usize].leaf.as_mut().expect("hosts sit in leaves");
                leaf.reusable.remove(&pos);
                self.hosts.get_mut(owner.host).take_block(net, owner.owner, b, blocks);
            }
            return Ok((b, slot));
        }
        let cidr = gcidr.subnet(pos, block_len).expect("the address lies in the group");
        let id = self.blocks.push_topology(cidr, net, g);
        self.blocks.set_owner(id, Some(owner));
        let slot = self.blocks[id].slot_of(value).expect("the new block contains the address");
        let blocks = &self.blocks;
        let NetworkKind::Blocks(Some(tree)) = &mut self.networks[net as usize].kind else {
            unreachable!("group placement in a network without a tree")
        };
        let leaf = tree.groups[g as usize].leaf.as_mut().expect("hosts sit in leaves");
        leaf.blocks.insert(pos, id);
        self.hosts.get_mut(owner.host).take_block(net, owner.owner, id, blocks);
        Ok((id, slot))
    }

    fn claim_classic_specific(
        &mut self,
        net: u16,
        k: u32,
        owner: Owner,
        req: &AllocRequest,
        ip: IpAddr,
    ) -> Result<(BlockId, u32), IpamError> {
        let network = &self.networks[net as usize];
        let NetworkKind::Classic(c) = &network.kind else {
            unreachable!("classic placement in a block network")
        };
        let not_endpoint =
            |reason: String| IpamError::NotAnEndpointAddress { ip, network: network.name.clone(), reason };
        let d = c
            .decode(network.cidr, addr_value(ip))
            .ok_or_else(|| not_endpoint("outside the network".into()))?;
        if d.host != k {
            return Err(IpamError::AddressOutsideHost {
                ip,
                host: req.host.clone(),
                network: network.name.clone(),
                cidr: c.host_cidr(network.cidr, k),
            });
        }
        if d.seq.is_none() {
            return Err(not_endpoint("endpoints are 3 + 2^space * n within their segment".into()));
        }
        let pair = (req.tenant.clone(), req.segment.clone());
        if let Some(t) = c.tenants.get(&req.tenant)
            && *t != d.tenant
        {
            return Err(not_endpoint(format!(
                "it encodes tenant number {}, {} has {t}",
                d.tenant, req.tenant
            )));
        }
        if let Some(s) = c.segments.get(&pair)
            && *s != d.segment
        {
            return Err(not_endpoint(format!(
                "it encodes segment number {}, {} has {s}",
                d.segment, req.segment
            )));
        }
        if let Some(b) = c.blocks.get(&(d.host, d.tenant, d.segment)) {
            let block = &self.blocks[b];
            let slot = block.slot_of(addr_value(ip)).expect("decoded endpoint addresses have a slot");
            let entry = self.blocks.entry(*b, slot);
            if entry != FREE {
                return Err(IpamError::AddressInUse { ip, name: self.names.name(entry).to_owned() });
            }
        }
        let b = self.classic_block(net, k, owner, &req.tenant, &req.segment, Some((d.tenant, d.segment)))?;
        let slot = self.blocks[b].slot_of(addr_value(ip)).expect("decoded endpoint addresses have a slot");
        Ok((b, slot))
    }

    /// Releases an address given its name or, failing that, its address.
    pub fn release(&mut self, key: &str) -> Result<Released, IpamError> {
        if let Some((block, slot)) = self.names.take(key) {
            return Ok(self.free_slot(block, slot, key.to_owned()));
        }
        let (block, slot) = key
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| self.locate(ip))
            .ok_or_else(|| IpamError::NotFound(key.to_owned()))?;
        Ok(self.release_slot(block, slot))
    }

    /// The block and slot holding `ip`, if it is allocated.
    fn locate(&self, ip: IpAddr) -> Option<(BlockId, u32)> {
        let (family, value) = (Family::of(ip), addr_value(ip));
        let network = self.networks.iter().find(|n| n.cidr.contains_value(family, value))?;
        let b = match &network.kind {
            NetworkKind::Blocks(tree) => {
                let tree = tree.as_ref()?;
                let g = tree.leaf_containing(family, value)?;
                let gcidr = tree.groups[g as usize].cidr;
                let pos = (value - gcidr.first()) >> (family.width() - network.block_len);
                tree.groups[g as usize].leaf.as_ref()?.blocks.get(pos)?
            }
            NetworkKind::Classic(c) => {
                let d = c.decode(network.cidr, value)?;
                *c.blocks.get(&(d.host, d.tenant, d.segment))?
            }
        };
        let slot = self.blocks[b].slot_of(value)?;
        (self.blocks.entry(b, slot) != FREE).then_some((b, slot))
    }

    pub(crate) fn release_slot(&mut self, b: BlockId, slot: u32) -> Released {
        let entry = self.blocks.entry(b, slot);
        let name = self.names.name(entry).to_owned();
        self.names.remove(entry);
        self.free_slot(b, slot, name)
    }

    /// Frees a slot whose name entry is already gone.
    fn free_slot(&mut self, b: BlockId, slot: u32, name: String) -> Released {
        self.blocks.vacate(b, slot).expect("free_slot is called on occupied slots");
        let block = &self.blocks[b];
        let ip = self.networks[block.net as usize].cidr.family().addr(block.value_of(slot));
        self.allocation_revision += 1;
        let block = &self.blocks[b];
        let (net, group, cidr, owner, emptied) =
            (block.net, block.group, block.cidr, block.owner(), block.used == 0);
        let host = owner.map(|o| self.hosts.get(o.host).spec.name.clone());
        let topology = matches!(self.networks[net as usize].kind, NetworkKind::Blocks(_));
        if topology && let Some(owner) = owner {
            if emptied {
                self.blocks.set_owner(b, None);
            }
            let block_len = self.networks[net as usize].block_len;
            let gcidr = self.group(net, group).cidr;
            let pos = (cidr.first() - gcidr.first()) >> (cidr.family().width() - block_len);
            let record = self.hosts.get_mut(owner.host);
            if let Some(owned) = record.owned_mut(net, owner.owner)
                && let Some(idx) = owned.blocks.iter().position(|x| *x == b)
            {
                if emptied {
                    owned.blocks.remove(idx);
                    if idx < owned.first_open {
                        owned.first_open -= 1;
                    }
                    if owned.blocks.is_empty() {
                        record.owned.retain(|o| !(o.net == net && o.owner == owner.owner));
                    }
                } else {
                    owned.first_open = owned.first_open.min(idx);
                }
            }
            if emptied {
                self.leaf_mut(net, group).reusable.insert(pos);
            }
        }
        Released {
            name,
            ip,
            network: self.networks[net as usize].name.clone(),
            block: cidr,
            host,
            block_emptied: emptied && topology,
        }
    }

    /// The allocation held under `name`.
    pub fn lookup(&self, name: &str) -> Option<Allocation> {
        let (_, block, slot) = self.names.get(name)?;
        Some(Allocation { fresh: false, ..self.allocation_at(block, slot) })
    }

    /// The allocation holding `ip`.
    pub fn lookup_ip(&self, ip: IpAddr) -> Option<Allocation> {
        let (block, slot) = self.locate(ip)?;
        Some(Allocation { fresh: false, ..self.allocation_at(block, slot) })
    }

    /// Every allocation, by network and then address.
    pub fn allocations(&self) -> Vec<Allocation> {
        self.allocations_page(None, usize::MAX).0
    }

    /// `allocations` a page at a time: those of at most `blocks` blocks after `cursor` (`None`:
    /// from the first), with the cursor of the next page (`None`: this was the last). A caller
    /// that holds a lock for each page lets go between them: the whole listing at 50,000
    /// addresses held romanad's IPAM for 8-14 ms, and allocations waited (issue 22). Pages of a
    /// changing IPAM are each exact, not one picture.
    pub fn allocations_page(
        &self,
        cursor: Option<AllocationsCursor>,
        blocks: usize,
    ) -> (Vec<Allocation>, Option<AllocationsCursor>) {
        let key = |b: BlockId| AllocationsCursor(self.blocks[b].net, self.blocks[b].cidr);
        let mut order: Vec<BlockId> = self
            .blocks
            .ids()
            .filter(|b| self.blocks[*b].used > 0 && cursor.is_none_or(|c| key(*b) > c))
            .collect();
        order.sort_by_key(|b| key(*b));
        let next = (order.len() > blocks && blocks > 0).then(|| key(order[blocks - 1]));
        order.truncate(blocks);
        let page = order
            .into_iter()
            .flat_map(|b| self.blocks.occupied(b).map(move |(s, _)| (b, s)).collect::<Vec<_>>())
            .map(|(b, s)| Allocation { fresh: false, ..self.allocation_at(b, s) })
            .collect();
        (page, next)
    }
}

/// Where `Ipam::allocations_page` goes on: after the block it names (network, prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllocationsCursor(u16, Cidr);
