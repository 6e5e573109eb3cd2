//! A host's IPv6 underlay address as the wire gives it (`POST /hosts`, a topology's host entry):
//! parsed and checked once here, so the IPAM core only ever holds an address another host can
//! route to.

use std::net::{IpAddr, Ipv6Addr};

/// Parses `text` as a host's IPv6 underlay address, or says why it cannot be one. Link-local
/// addresses are refused: a route via one needs the outgoing device, which only the next hop's
/// neighbours know, and the route manager computes one route for every host of a rack.
pub fn parse_ipv6(text: &str) -> Result<Ipv6Addr, String> {
    let ip: IpAddr = text.parse().map_err(|_| format!("{text:?} is not an IP address"))?;
    let IpAddr::V6(v6) = ip else {
        return Err(format!("{text} is IPv4; the IPv6 underlay address must be IPv6 (the IPv4 one is `ip`)"));
    };
    let why = if v6.is_unspecified() {
        Some("unspecified")
    } else if v6.is_loopback() {
        Some("loopback")
    } else if v6.is_multicast() {
        Some("multicast")
    } else if v6.is_unicast_link_local() {
        Some("link-local (a next hop must be routable without naming a device)")
    } else if v6.to_ipv4_mapped().is_some() {
        Some("an IPv4-mapped address")
    } else {
        None
    };
    match why {
        Some(why) => Err(format!(
            "{v6} is {why}; a host's IPv6 underlay address must be a global or unique-local unicast address"
        )),
        None => Ok(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ipv6;

    fn check(text: &str, expect: Result<&str, &str>) {
        match (parse_ipv6(text), expect) {
            (Ok(a), Ok(e)) => assert_eq!(a.to_string(), e),
            (Err(m), Err(e)) => assert!(m.contains(e), "{text}: {m:?} should say {e:?}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn underlay_addresses() {
        check("fd00:1::2", Ok("fd00:1::2"));
        check("2001:db8::0001", Ok("2001:db8::1"));
        check("10.0.0.1", Err("is IPv4"));
        check("bogus", Err("\"bogus\" is not an IP address"));
        check("::", Err("unspecified"));
        check("::1", Err("loopback"));
        check("ff02::1", Err("multicast"));
        check("fe80::1", Err("link-local"));
        check("::ffff:10.0.0.1", Err("IPv4-mapped"));
    }
}
