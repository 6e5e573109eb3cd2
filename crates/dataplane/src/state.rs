//! The kernel objects Romana owns on a host: marked links, their addresses, and routes of our
//! protocol. Knows nothing of how they are read or written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use romana_model::Cidr;

/// Every link Romana creates starts with this; the agent observes and removes only these.
pub const LINK_PREFIX: &str = "romana";
/// The route protocol number our routes carry (`ip route ... proto 77`); the agent observes and
/// removes only routes with it, so routes of the operator, DHCP or a BGP daemon are never touched.
/// 77 is unassigned in iproute2's `rt_protos` (99 is Open/R) and differs from Calico's 80.
pub const ROUTE_PROTOCOL: u8 = 77;

/// A link name carrying our mark: the prefix, and a kernel-valid name (at most 15 bytes, no `/`,
/// whitespace or `:`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkNameError {
    #[error("link name {0:?} does not start with {LINK_PREFIX:?}: the agent only manages its own links")]
    Unmarked(String),
    #[error("link name {0:?} is longer than the kernel's 15 bytes")]
    TooLong(String),
    #[error("link name {0:?} contains a character the kernel refuses ('/', ':' or whitespace)")]
    BadChar(String),
}

impl LinkName {
    pub fn new(name: &str) -> Result<LinkName, LinkNameError> {
        if !name.starts_with(LINK_PREFIX) {
            return Err(LinkNameError::Unmarked(name.to_owned()));
        }
        if name.len() > 15 {
            return Err(LinkNameError::TooLong(name.to_owned()));
        }
        if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
            return Err(LinkNameError::BadChar(name.to_owned()));
        }
        Ok(LinkName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What a link is for; a link whose kind changes is recreated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkKind {
    /// The Romana gateway: the next hop endpoints route to (a `dummy` link, or a port-less bridge
    /// on kernels without `dummy`; the adapter chooses, the core does not care).
    Gateway,
    /// The host side of an endpoint's veth or tap.
    Endpoint,
}

/// Where a route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NextHop {
    /// Out of one of our links, no gateway (an endpoint's /32).
    Dev(LinkName),
    /// Through another host's address, on-link.
    Via(IpAddr),
    /// Fall through to the next table (a prefix we own but do not route here).
    Throw,
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Dev(l) => write!(f, "dev {l}"),
            NextHop::Via(ip) => write!(f, "via {ip}"),
            NextHop::Throw => f.write_str("throw"),
        }
    }
}

/// The Romana-owned part of a host's kernel state, desired or observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    pub links: BTreeMap<LinkName, LinkKind>,
    pub addresses: BTreeSet<(LinkName, Cidr)>,
    /// One route per destination: the kernel's main table holds one route per prefix and metric.
    pub routes: BTreeMap<Cidr, NextHop>,
}
