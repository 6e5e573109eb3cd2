//! The wire's route types from the IPAM core's: one `RouteInfo` per `romana_ipam::Route` and a
//! `FabricGroup` per group's routes, so romanad (`GET /routes`, `GET /fabric`) and `romana ipam
//! plan` print the same shape from the same code; and a host's set as `GET /routes/{host}`
//! answers it, written straight from the IPAM's routes (`host_routes_json`).

use std::net::IpAddr;

use romana_ipam::{GroupRoutes, HostRoutes, Route, RouteTarget};

use crate::rest::{FabricGroup, RouteInfo, RouteKind};

impl From<&Route> for RouteInfo {
    fn from(r: &Route) -> RouteInfo {
        let kind = match &r.target {
            RouteTarget::Host { name, ip } => {
                RouteKind::Host { via: name.to_string(), via_ip: ip.to_string() }
            }
            RouteTarget::Group { path } => RouteKind::Group { via: path.clone() },
            RouteTarget::Throw => RouteKind::Throw,
        };
        RouteInfo { dest: r.dest.to_string(), kind }
    }
}

impl From<&GroupRoutes> for FabricGroup {
    fn from(g: &GroupRoutes) -> FabricGroup {
        FabricGroup {
            announce: g.announce.map(|c| c.to_string()),
            cidr: g.cidr.to_string(),
            group: g.path.clone(),
            hosts: g.hosts.iter().map(|h| h.to_string()).collect(),
            network: g.network.to_string(),
            routes: g.routes.iter().map(RouteInfo::from).collect(),
            vips: Vec::new(),
        }
    }
}

/// `GET /routes/{host}`'s answer for `r` (routes through dead hosts already taken out): byte
/// for byte what serde writes for the `HostRoutesInfo` of `r` with `revision`, both counts and
/// `stamp`, written straight from the IPAM's routes. Every agent of a leaf reads its set after
/// each new block there (4,000 routes at 50,000 endpoints in a leaf of 100 hosts), and building
/// a `RouteInfo` (three strings per route through `fmt`) and serde's flattened map for each
/// route was most of a set's cost (issue 22, docs/benchmarks.md).
pub fn host_routes_json(r: &HostRoutes, revision: i64, stamp: Option<&str>) -> SetJson {
    let mut out = Vec::with_capacity(128 + r.routes.len() * 80);
    out.extend_from_slice(b"{\"host\":");
    push_name(&mut out, r.host.as_str());
    out.extend_from_slice(b",\"revision\":");
    out.extend_from_slice(revision.to_string().as_bytes());
    out.extend_from_slice(b",\"routes\":");
    let start = out.len();
    out.push(b'[');
    for (i, route) in r.routes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_route(&mut out, route);
    }
    out.push(b']');
    let routes = start..out.len();
    out.extend_from_slice(b",\"per_block\":");
    out.extend_from_slice(r.per_block.to_string().as_bytes());
    out.extend_from_slice(b",\"per_endpoint\":");
    out.extend_from_slice(r.per_endpoint.to_string().as_bytes());
    if let Some(stamp) = stamp {
        out.extend_from_slice(b",\"stamp\":");
        push_name(&mut out, stamp);
    }
    out.push(b'}');
    SetJson { json: out, routes }
}

/// A set's JSON (`host_routes_json`), with where its routes array lies in it: what an `ETag`
/// of the routes alone is of (the revision and counts move without them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetJson {
    pub json: Vec<u8>,
    pub routes: std::ops::Range<usize>,
}

/// One route as serde writes its `RouteInfo`.
fn push_route(out: &mut Vec<u8>, route: &Route) {
    out.extend_from_slice(b"{\"dest\":\"");
    push_ip(out, route.dest.network());
    out.push(b'/');
    push_u8(out, route.dest.prefix_len());
    out.extend_from_slice(b"\",\"kind\":");
    match &route.target {
        RouteTarget::Host { name, ip } => {
            // `via` and `via_ip` are never empty here (a host name has a character at least).
            out.extend_from_slice(b"\"host\",\"via\":");
            push_name(out, name.as_str());
            out.extend_from_slice(b",\"via_ip\":\"");
            push_ip(out, *ip);
            out.push(b'"');
        }
        RouteTarget::Group { path } if path.is_empty() => out.extend_from_slice(b"\"group\""),
        RouteTarget::Group { path } => {
            out.extend_from_slice(b"\"group\",\"via\":");
            push_name(out, path);
        }
        RouteTarget::Throw => out.extend_from_slice(b"\"throw\""),
    }
    out.push(b'}');
}

/// A JSON string: serde's escaping (host names need none, group paths may).
fn push_name(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("a string serializes into memory");
}

/// An address as `Display` writes it; IPv4 without `fmt` (it was the pass's largest part).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u8(out, octet);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            write!(out, "{v6}").expect("writing into memory");
        }
    }
}

fn push_u8(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + n / 10 % 10);
    }
    out.push(b'0' + n % 10);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::rest::HostRoutesInfo;

    fn route(dest: &str, target: RouteTarget) -> Route {
        Route { dest: dest.parse().unwrap(), target }
    }

    fn host(name: &str, ip: &str) -> RouteTarget {
        RouteTarget::Host { name: name.parse().unwrap(), ip: ip.parse().unwrap() }
    }

    /// The hand-written set against serde's for the same routes, with and without a stamp.
    fn check(routes: Vec<Route>) {
        let r = HostRoutes { host: "node-1.example".parse().unwrap(), routes, per_block: 7, per_endpoint: 9 };
        for (revision, stamp) in [(0, None), (-3, Some("00ab12cd34ef5678")), (i64::MAX, Some("é\"x"))] {
            let typed = HostRoutesInfo {
                host: r.host.to_string(),
                revision,
                routes: r.routes.iter().map(RouteInfo::from).collect(),
                per_block: Some(7),
                per_endpoint: Some(9),
                stamp: stamp.map(str::to_owned),
            };
            let SetJson { json: ours, routes } = host_routes_json(&r, revision, stamp);
            let array: Vec<RouteInfo> = serde_json::from_slice(&ours[routes]).unwrap();
            assert_eq!(array, typed.routes, "the routes' range holds the routes array");
            assert_eq!(
                String::from_utf8(ours.clone()).unwrap(),
                serde_json::to_string(&typed).unwrap(),
                "{:?}",
                r.routes
            );
            let back: HostRoutesInfo = serde_json::from_slice(&ours).unwrap();
            assert_eq!(back, typed);
        }
    }

    #[test]
    fn the_set_served_is_what_serde_writes() {
        check(vec![]);
        check(vec![route("10.0.0.0/28", host("h1", "192.168.0.1"))]);
        check(vec![
            route("0.0.0.0/0", RouteTarget::Throw),
            route("10.9.99.100/30", host("h_2-x", "1.10.100.255")),
            route("255.255.255.255/32", host("h3", "0.0.0.0")),
            route("fd00:1:2::/64", host("h4", "fd00::1")),
            route("fd00::/48", host("h5", "10.0.0.1")),
            route("::/0", RouteTarget::Throw),
            route("10.1.0.0/16", RouteTarget::Group { path: "/rack \"1\"\\é".into() }),
            route("10.2.0.0/16", RouteTarget::Group { path: String::new() }),
        ]);
        // Every octet value and prefix length once.
        let all: Vec<Route> = (0..=255u8)
            .map(|n| {
                let ip = format!("{n}.{}.{}.{n}", 255 - n, n / 3);
                route(&format!("{ip}/32"), host("h", &ip))
            })
            .collect();
        check(all);
        check((0..=32u8).map(|l| route(&format!("0.0.0.0/{l}"), RouteTarget::Throw)).collect());
    }
}
