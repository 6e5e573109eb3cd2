//! Small netlink helpers shared by the kernel, endpoint and VM adapters: errno of a failed
//! request, the Linux errno values we react to, interface-name checks, and route builders.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rtnetlink::RouteMessageBuilder;

/// Linux errno values (stable ABI numbers on every Linux architecture we build for).
pub(crate) const ENOENT: i32 = 2;
pub(crate) const ESRCH: i32 = 3;
pub(crate) const EEXIST: i32 = 17;
pub(crate) const ENODEV: i32 = 19;
pub(crate) const EOPNOTSUPP: i32 = 95;
pub(crate) const EADDRNOTAVAIL: i32 = 99;

/// The errno of a request the kernel refused.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// What the kernel takes as an interface name: 1 to 15 bytes, no '/' or whitespace, not . or ..
pub(crate) fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != "."
        && n != ".."
        && !n.chars().any(|c| c == '/' || c.is_whitespace())
}

/// The prefix length of a single address: 32 or 128.
pub(crate) fn host_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// The all-zero address of `ip`'s family (the default route's destination).
pub(crate) fn unspecified(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) }
}

/// A route builder for `dest/len`. Callers pass a host length or 0, which always fit the family.
pub(crate) fn route_to(dest: IpAddr, len: u8) -> RouteMessageBuilder<IpAddr> {
    RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dest, len)
        .expect("a host length or 0 fits the family")
}
