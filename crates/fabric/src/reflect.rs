//! Route reflectors of a leaf group, pure: which kind the topology names (the group's router, or
//! some of its hosts), checked against the group's routers and hosts as the fabric view knows
//! them (hosts added at run time included). Knows nothing of BIRD's syntax (`bird.rs`).

use std::net::IpAddr;

use crate::FabricError;
use crate::view::Fabric;

/// How a leaf's hosts and routers exchange routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reflection {
    /// Every host peers with every router of the group (no reflectors).
    Full,
    /// The routers named reflect for their hosts (`rr client` on their host sessions); the hosts'
    /// side is unchanged.
    Routers(Vec<IpAddr>),
    /// These hosts (name, address) reflect: the other hosts peer with them only, and the routers
    /// with them only. A router then holds one session per reflector instead of one per host.
    Hosts(Vec<(String, IpAddr)>),
}

impl Reflection {
    /// Whether `host` is one of the reflecting hosts.
    pub fn is_reflector(&self, host: &str) -> bool {
        matches!(self, Reflection::Hosts(r) if r.iter().any(|(h, _)| h == host))
    }
}

/// Group `g`'s reflection, or what is wrong with its reflectors: one that is neither a router
/// nor a host of the group, routers and hosts mixed, or hosts in another AS (reflection is iBGP).
pub fn reflection(f: &Fabric, g: usize) -> Result<Reflection, FabricError> {
    let group = &f.groups[g];
    let Some(bgp) = &group.bgp else { return Ok(Reflection::Full) };
    if bgp.reflectors.is_empty() {
        return Ok(Reflection::Full);
    }
    if bgp.host_asn != bgp.asn {
        return Err(FabricError::ReflectorAsn {
            group: group.path.clone(),
            asn: bgp.asn,
            host_asn: bgp.host_asn,
        });
    }
    let mut routers = Vec::new();
    let mut hosts = Vec::new();
    for r in &bgp.reflectors {
        if bgp.routers.contains(r) {
            routers.push(*r);
        } else if let Some((h, a)) = group.hosts.iter().find(|(_, a)| a == r) {
            hosts.push((h.clone(), *a));
        } else {
            return Err(FabricError::ReflectorOutside {
                group: group.path.clone(),
                reflector: *r,
                routers: bgp.routers.clone(),
                hosts: group.hosts.iter().map(|(h, a)| format!("{h} {a}")).collect(),
            });
        }
    }
    match (routers.is_empty(), hosts.is_empty()) {
        (false, false) => Err(FabricError::ReflectorMixed { group: group.path.clone() }),
        (false, true) => Ok(Reflection::Routers(routers)),
        _ => Ok(Reflection::Hosts(hosts)),
    }
}
