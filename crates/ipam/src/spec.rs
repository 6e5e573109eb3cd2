//! Input specifications: what an operator asks for (networks, topology maps, hosts), before validation.
//!
//! These are plain values; the `api` crate converts Romana's JSON into them, and [`crate::Ipam::new`]
//! validates them into a working state.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use romana_model::{Cidr, GroupName, HostName, NetworkName, TenantName};

/// A whole topology request: networks and the maps that carve them (Romana 2.0 `TopologyUpdateRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologySpec {
    pub networks: Vec<NetworkSpec>,
    pub topologies: Vec<MapSpec>,
    /// Destinations outside the Romana networks that endpoints reach with their own address
    /// (no egress NAT) from every network: the topology-wide counterpart of Calico's disabled IP
    /// pools (docs/fabric.md, "Egress NAT").
    pub no_nat: Vec<Cidr>,
}

/// One address pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: NetworkName,
    pub cidr: Cidr,
    /// Prefix length of a block; `None` takes the default (/29 for IPv4, /122 for IPv6, or the
    /// network's own prefix when that is longer).
    pub block_mask: Option<u8>,
    /// Tenants restricted to this network; empty puts the network in the wildcard list.
    pub tenants: Vec<TenantName>,
    pub layout: LayoutSpec,
    /// Traffic from the network's endpoints to destinations outside every Romana network and
    /// outside `TopologySpec::no_nat` leaves masqueraded to the host's address (Calico's
    /// `natOutgoing`). On unless the topology says otherwise.
    pub nat_outgoing: bool,
}

/// How addresses are laid out in a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutSpec {
    /// Topology-aware blocks carved from prefix groups (Romana 2.0).
    #[default]
    Blocks,
    /// The layer-3 tenancy bit-field layout of Romana 0.6/1.x.
    Classic(ClassicBits),
}

/// Bit widths of the classic layout: `prefix | host | tenant | segment | endpoint (+ endpoint space)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassicBits {
    pub host_bits: u8,
    pub tenant_bits: u8,
    pub segment_bits: u8,
    pub endpoint_bits: u8,
    /// Each endpoint gets 2^endpoint_space_bits addresses (a /(width - space) route).
    pub endpoint_space_bits: u8,
}

/// A topology map shared by one or more networks; each network gets its own copy of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    pub networks: Vec<NetworkName>,
    pub map: Vec<GroupOrHostSpec>,
}

/// An element of a map or of a group's `groups` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOrHostSpec {
    Group(GroupSpec),
    Host(HostSpec),
}

/// A prefix group. `groups` empty makes a leaf (host group) with no hosts yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: GroupName,
    /// A host may join this group only if its tags carry every key/value listed here.
    pub assignment: BTreeMap<String, String>,
    /// How routes are distributed: `static` (or empty: routers programmed by hand or by the
    /// sandbox) or `bgp` (with `bgp`). Other text is kept and echoed, as Romana 2.0 did.
    pub routing: String,
    /// The group's BGP parameters; present exactly when `routing` is `bgp` (checked by the api).
    pub bgp: Option<BgpSpec>,
    pub groups: Vec<GroupOrHostSpec>,
}

/// A prefix group's BGP parameters (`routing: bgp`): its router(s), their AS, the AS its hosts
/// speak from (leaves), and the router's own addresses toward the parent group's routers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpSpec {
    /// AS number of the group's router(s).
    pub asn: u32,
    /// The group's routers, at the addresses its members (hosts of a leaf, the child groups'
    /// routers otherwise) peer with. Several routers above leaves give ECMP (two spines).
    pub routers: Vec<IpAddr>,
    /// The group's router's own addresses toward the parent group's routers, one per parent
    /// router, in the same order (empty at the root).
    pub uplinks: Vec<IpAddr>,
    /// Leaves: the AS the hosts speak from; `None` takes `asn` (iBGP with the router).
    pub host_asn: Option<u32>,
    /// Leaves speaking iBGP: route reflectors (docs/fabric.md), each one of the group's routers
    /// (which then reflects for every host) or one of its hosts (the other hosts then peer with
    /// the reflecting hosts only, and the routers with them only). Empty: a full set of sessions
    /// between hosts and routers.
    pub reflectors: Vec<IpAddr>,
}

/// A host, listed in a topology or added at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub name: HostName,
    pub ip: IpAddr,
    /// The host's IPv6 underlay address beside an IPv4 `ip` (a dual-stack underlay): the next hop
    /// of IPv6 routes to its blocks. An IPv6 route never leads to an IPv4 next hop
    /// (ARCHITECTURE.md, "Dual-stack underlay").
    pub ipv6: Option<Ipv6Addr>,
    pub agent_port: u16,
    pub tags: BTreeMap<String, String>,
}

/// The agent port Romana has always used.
pub const DEFAULT_AGENT_PORT: u16 = 9604;

impl HostSpec {
    pub fn new(name: HostName, ip: IpAddr) -> HostSpec {
        HostSpec { name, ip, ipv6: None, agent_port: DEFAULT_AGENT_PORT, tags: BTreeMap::new() }
    }

    pub fn with_ipv6(mut self, ipv6: Ipv6Addr) -> HostSpec {
        self.ipv6 = Some(ipv6);
        self
    }

    /// The host's underlay address of the family `v6` names: `ip` when it is of that family, else
    /// the IPv6 underlay address; `None` when the host has no address of that family.
    pub fn address(&self, v6: bool) -> Option<IpAddr> {
        if self.ip.is_ipv6() == v6 {
            Some(self.ip)
        } else if v6 {
            self.ipv6.map(IpAddr::V6)
        } else {
            None
        }
    }

    /// Every underlay address of the host: `ip`, then the IPv6 one.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.ip).chain(self.ipv6.map(IpAddr::V6))
    }

    pub fn with_tag(mut self, key: &str, value: &str) -> HostSpec {
        self.tags.insert(key.to_owned(), value.to_owned());
        self
    }
}
