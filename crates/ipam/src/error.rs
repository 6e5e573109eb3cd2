//! `IpamError`: every way an IPAM operation can fail, with the data that names the problem.

use std::net::IpAddr;

use romana_model::{Cidr, Family, HostName, NetworkName};

/// A problem found while validating a topology; a request may have several.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyProblem {
    #[error("network {0} is defined twice")]
    DuplicateNetwork(NetworkName),
    #[error("networks {a} ({a_cidr}) and {b} ({b_cidr}) overlap")]
    OverlappingNetworks { a: NetworkName, a_cidr: Cidr, b: NetworkName, b_cidr: Cidr },
    #[error(
        "network {network}: block_mask {mask} must lie between the network prefix /{prefix} and /{width} (invalid blockmask)"
    )]
    BlockMaskOutOfRange { network: NetworkName, mask: u8, prefix: u8, width: u8 },
    #[error(
        "network {network}: block_mask /{mask} gives blocks of {size} addresses; at most 65536 are supported"
    )]
    BlockTooLarge { network: NetworkName, mask: u8, size: u128 },
    #[error("network {network}: classic layout bits ({detail}) must add up to {width}")]
    ClassicBitsMismatch { network: NetworkName, detail: String, width: u8 },
    #[error(
        "network {network}: classic layout needs at least 2 endpoint bits, and at most 16 endpoint plus space bits"
    )]
    ClassicEndpointBits { network: NetworkName },
    #[error("network {0} uses the classic layout and cannot appear in a topology map")]
    ClassicNetworkInMap(NetworkName),
    #[error("topology {index} names network {network}, which is not defined")]
    UnknownNetwork { index: usize, network: NetworkName },
    #[error("network {network} appears in more than one topology")]
    NetworkInTwoTopologies { network: NetworkName },
    #[error("topology {index} has no networks")]
    MapWithoutNetworks { index: usize },
    #[error("network {0} uses the block layout but is in no topology map")]
    NetworkWithoutMap(NetworkName),
    #[error("group {path}: a list mixes hosts and groups; put hosts in a group of their own")]
    MixedHostsAndGroups { path: String },
    #[error("group {path} ({cidr}) is smaller than a block (/{mask})")]
    GroupSmallerThanBlock { path: String, cidr: Cidr, mask: u8 },
    #[error("group {path}: {count} children need more bits than {cidr} has")]
    TooManyChildren { path: String, count: usize, cidr: Cidr },
    #[error("host {host} appears twice in network {network}")]
    DuplicateHostName { host: HostName, network: NetworkName },
    #[error("hosts {a} and {b} share address {ip} in network {network}")]
    DuplicateHostIp { a: HostName, b: HostName, ip: IpAddr, network: NetworkName },
    #[error("host {host} is listed with two addresses ({a} and {b})")]
    HostWithTwoAddresses { host: HostName, a: IpAddr, b: IpAddr },
    #[error(
        "map {path}: host {host} sits at the top level of a map with several elements; put it in a group"
    )]
    HostAtTopLevel { path: String, host: HostName },
    #[error("groups nest deeper than {max} levels at {path}")]
    TooDeep { path: String, max: usize },
}

/// Every failure of the IPAM core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid topology: {}", list(.0))]
    InvalidTopology(Vec<TopologyProblem>),
    #[error("unknown host {0}")]
    UnknownHost(HostName),
    #[error("host {host} already exists{}", if *.same_ip { " with that address" } else { "" })]
    HostExists { host: HostName, same_ip: bool },
    #[error("address {ip} is already used by host {other}")]
    HostIpInUse { ip: IpAddr, other: HostName },
    #[error(
        "host {host}: an IPv6 underlay address ({ipv6}) goes beside an IPv4 address, but the host's address {ip} is IPv6"
    )]
    SecondIpv6 { host: HostName, ip: IpAddr, ipv6: std::net::Ipv6Addr },
    #[error("host {host} fits no group in any network (tags: {tags})")]
    HostFitsNoGroup { host: HostName, tags: String },
    #[error("new tags for host {host} no longer match group {group} of network {network}")]
    TagsBreakPlacement { host: HostName, network: NetworkName, group: String },
    #[error("no networks found for tenant {tenant:?}")]
    NoNetworkForTenant { tenant: String },
    #[error(
        "host {host} has no {family} network for tenant {tenant:?} (the topology's networks of the tenant: {networks})"
    )]
    NoFamily { family: Family, host: HostName, tenant: String, networks: String },
    #[error("{ip} is not an {family} address")]
    WrongFamily { ip: IpAddr, family: Family },
    #[error("host {host} is in none of the networks tenant {tenant:?} may use ({networks})")]
    HostNotInTenantNetworks { host: HostName, tenant: String, networks: String },
    #[error(
        "no available IP for tenant {tenant:?} segment {segment:?} on host {host} (networks tried: {networks})"
    )]
    Exhausted { host: HostName, tenant: String, segment: String, networks: String },
    #[error("address name {name} already holds {ip} (host {host}, tenant {tenant:?}, segment {segment:?})")]
    NameExists { name: String, ip: IpAddr, host: HostName, tenant: String, segment: String },
    #[error("no allocated address named or numbered {0}")]
    NotFound(String),
    #[error("{ip} lies in no network")]
    AddressInNoNetwork { ip: IpAddr },
    #[error("{ip} is in network {network}, which tenant {tenant:?} may not use")]
    NetworkNotForTenant { ip: IpAddr, network: NetworkName, tenant: String },
    #[error("{ip} lies outside {cidr}, the range of host {host} in network {network}")]
    AddressOutsideHost { ip: IpAddr, host: HostName, network: NetworkName, cidr: Cidr },
    #[error("{ip} is in block {block}, owned by {owner}")]
    AddressInForeignBlock { ip: IpAddr, block: Cidr, owner: String },
    #[error("{ip} is already allocated as {name}")]
    AddressInUse { ip: IpAddr, name: String },
    #[error("{ip} is blacked out by {by}")]
    AddressBlackedOut { ip: IpAddr, by: Cidr },
    #[error("{ip} is not an endpoint address in the classic layout of network {network} ({reason})")]
    NotAnEndpointAddress { ip: IpAddr, network: NetworkName, reason: String },
    #[error("network {network}: no {what} number left ({bits} bits allow {limit})")]
    ClassicNumbersExhausted { network: NetworkName, what: &'static str, bits: u8, limit: u64 },
    #[error("network {network}: {what} number {number} is out of range ({bits} bits) or already taken")]
    ClassicNumberUnavailable { network: NetworkName, what: &'static str, number: u64, bits: u8 },
    #[error("unknown network {0}")]
    UnknownNetwork(NetworkName),
    #[error("{cidr} lies in no network")]
    BlackoutOutsideNetworks { cidr: Cidr },
    #[error("{cidr} would black out all of network {network}")]
    BlackoutCoversNetwork { cidr: Cidr, network: NetworkName },
    #[error("{cidr} contains allocated addresses ({first} and {more} more)")]
    BlackoutHasAllocations { cidr: Cidr, first: IpAddr, more: usize },
    #[error("{cidr} is not blacked out (un-blackout needs an exact match)")]
    NotBlackedOut { cidr: Cidr },
    #[error(
        "address name {name} is too long for a dual-stack endpoint ({suffix} is appended for its IPv6 address; names hold at most 512 bytes)"
    )]
    StackNameTooLong { name: String, suffix: &'static str },
    #[error("topology change would lose data: {}", list(.0))]
    MergeConflicts(Vec<String>),
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
