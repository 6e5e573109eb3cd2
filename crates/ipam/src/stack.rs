//! Dual-stack allocation: an endpoint takes one address of each family its host can draw from
//! for its tenant (IPv4, IPv6 or both), all of them or none.
//!
//! Names: the IPAM keeps one address per name, so an endpoint's addresses are two names. Its own
//! name holds its first address (IPv4 when it has one, else IPv6), so a client that knows one
//! address per name (`GET /addresses/{name}`, the 2.0 `POST /address`, OpenStack) sees the
//! address it always saw; the IPv6 address of a dual-stack endpoint is held by the name with
//! `V6_SUFFIX` appended. `release_stack` releases both.

use std::net::IpAddr;

use romana_model::{AddressName, Family};

use crate::alloc::{AllocRequest, Allocation, Released};
use crate::error::IpamError;
use crate::state::Ipam;

/// Appended to an endpoint's name for the IPv6 address of a dual-stack endpoint. `#` appears in
/// no name our clients make (CNI's, the 2.0 driver's, OpenStack's).
pub const V6_SUFFIX: &str = "#v6";

/// The name holding `family`'s address of an endpoint whose first family is `first`.
pub fn stack_name(name: &AddressName, family: Family, first: Family) -> Result<AddressName, IpamError> {
    if family == first {
        return Ok(name.clone());
    }
    format!("{name}{V6_SUFFIX}")
        .parse()
        .map_err(|_| IpamError::StackNameTooLong { name: name.to_string(), suffix: V6_SUFFIX })
}

impl Ipam {
    /// The families `req`'s host can draw addresses from for `req`'s tenant: IPv4 first.
    pub fn stack_families(&self, req: &AllocRequest) -> Vec<Family> {
        let Some(host) = self.host_id(&req.host) else { return vec![] };
        let placed = self.hosts.get(host);
        let mut out: Vec<Family> = self
            .networks_for_tenant(&req.tenant)
            .into_iter()
            .filter(|n| placed.placement(*n).is_some())
            .map(|n| self.networks[n as usize].cidr.family())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// One address of each family `stack_families` gives (the IPv4 one first), or none: when a
    /// family has no free address, what this call took of the other is released again and the
    /// error names the exhausted family's networks. A retry gives the same addresses (each name's
    /// allocation is idempotent). With one family this is `allocate`, restricted to that family.
    pub fn allocate_stack(&mut self, req: &AllocRequest) -> Result<Vec<Allocation>, IpamError> {
        let families = self.stack_families(req);
        let Some(first) = families.first().copied() else {
            // No network of the tenant on this host: `allocate` names the reason.
            return self.allocate(req).map(|a| vec![a]);
        };
        let mut out: Vec<Allocation> = Vec::with_capacity(families.len());
        for f in families {
            let name = stack_name(&req.name, f, first)?;
            match self.allocate_in(&AllocRequest { name, ..req.clone() }, Some(f)) {
                Ok(a) => out.push(a),
                Err(e) => {
                    for a in out.iter().filter(|a| a.fresh) {
                        self.release(a.name.as_str())?;
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// The address of one family of an endpoint, named as `allocate_stack` names it (so an
    /// endpoint allocated one family at a time, as Neutron allocates a port's subnets, holds the
    /// same names as one allocated at once), `ip` pinning it when given. An error when the host
    /// draws no address of `family` for the tenant, naming the networks it does draw from.
    pub fn allocate_family(
        &mut self,
        req: &AllocRequest,
        family: Family,
        ip: Option<IpAddr>,
    ) -> Result<Allocation, IpamError> {
        if let Some(ip) = ip.filter(|ip| Family::of(*ip) != family) {
            return Err(IpamError::WrongFamily { ip, family });
        }
        let families = self.stack_families(req);
        let Some(first) = families.first().copied().filter(|_| families.contains(&family)) else {
            if self.host_id(&req.host).is_none() {
                return Err(IpamError::UnknownHost(req.host.clone()));
            }
            let nets = self.networks_for_tenant(&req.tenant);
            return Err(IpamError::NoFamily {
                family,
                host: req.host.clone(),
                tenant: req.tenant.to_string(),
                networks: nets
                    .iter()
                    .map(|n| {
                        let n = &self.networks[*n as usize];
                        format!("{} ({})", n.name, n.cidr)
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let named = AllocRequest { name: stack_name(&req.name, family, first)?, ..req.clone() };
        match ip {
            Some(ip) => self.allocate_specific(&named, ip),
            None => self.allocate_in(&named, Some(family)),
        }
    }

    /// Releases an endpoint's addresses: the name's, and its IPv6 name's when it has one. An
    /// address (rather than a name) releases that address only.
    pub fn release_stack(&mut self, key: &str) -> Result<Vec<Released>, IpamError> {
        let mut out = vec![self.release(key)?];
        let v6 = format!("{key}{V6_SUFFIX}");
        if self.lookup(&v6).is_some() {
            out.push(self.release(&v6)?);
        }
        Ok(out)
    }
}
