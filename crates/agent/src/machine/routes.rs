//! The host's routes as the core sees them: the route manager's set parsed into the dataplane's
//! input, the desired state compiled from it, and the kernel's observed state with the CNI's
//! endpoints taken out (endpoint links and their routes are the CNI path's, never the reconcile
//! loop's). Pure: knows nothing about netlink or romanad's transport.

use std::net::IpAddr;

use romana_api::rest::{HostRoutesInfo, RouteKind};
use romana_dataplane::{CompileError, HostState, HostView, LinkKind, LinkName, NextHop, PeerRoute, compile};

/// The route manager's set as the dataplane's input: routes via other hosts, and throws.
/// Entries that do not parse are left out (romanad wrote them; the rest still applies).
pub fn peer_routes(r: &HostRoutesInfo) -> Vec<PeerRoute> {
    r.routes
        .iter()
        .filter_map(|x| {
            let dest = x.dest.parse().ok()?;
            match &x.kind {
                RouteKind::Throw => Some(PeerRoute { dest, via: None }),
                // The kernel refuses a route of one family through a next hop of the other
                // ("IPv6 routes can not use an IPv4 nexthop"): a host with an IPv4 underlay
                // address cannot carry another host's IPv6 block (hosts have one underlay
                // address; docs/cni.md, "Dual stack"). Left out, so the rest still applies.
                RouteKind::Host { via_ip, .. } => via_ip
                    .parse::<IpAddr>()
                    .ok()
                    .filter(|ip: &IpAddr| ip.is_ipv4() == romana_model::Cidr::network(&dest).is_ipv4())
                    .map(|ip| PeerRoute { dest, via: Some(ip) }),
                // A group is the fabric's concern: a host's set never holds one.
                RouteKind::Group { .. } => None,
            }
        })
        .collect()
}

/// The name of the gateway link endpoints route through.
pub fn gateway_link() -> LinkName {
    LinkName::new("romana-gw").expect("a marked, short name")
}

/// What the reconcile loop wants in the kernel: the gateway with its addresses, and the routes.
pub fn desired(gateways: &[IpAddr], routes: &[PeerRoute]) -> Result<HostState, CompileError> {
    compile(&HostView {
        gateway: gateway_link(),
        gateway_addresses: gateways.to_vec(),
        endpoints: vec![],
        routes: routes.to_vec(),
    })
}

/// The observed state without endpoint links, their addresses and the routes through them, so
/// that a plan diffed against it never touches them.
pub fn without_endpoints(mut observed: HostState) -> HostState {
    let endpoints: Vec<LinkName> =
        observed.links.iter().filter(|(_, k)| **k == LinkKind::Endpoint).map(|(l, _)| l.clone()).collect();
    observed.links.retain(|_, k| *k != LinkKind::Endpoint);
    observed.addresses.retain(|(l, _)| !endpoints.contains(l));
    observed.routes.retain(|_, n| !matches!(n, NextHop::Dev(l) if endpoints.contains(l)));
    observed
}

#[cfg(test)]
mod tests {
    use super::*;
    use romana_api::rest::RouteInfo;

    /// The route manager's set as data: (dest, via_ip) -> the peer routes kept ("-" a throw).
    fn check(routes: &[(&str, &str)], expect: &[&str]) {
        let info = HostRoutesInfo {
            host: "h1".into(),
            revision: 1,
            routes: routes
                .iter()
                .map(|(dest, via)| RouteInfo {
                    dest: (*dest).into(),
                    kind: if via.is_empty() {
                        RouteKind::Throw
                    } else {
                        RouteKind::Host { via: "h2".into(), via_ip: (*via).into() }
                    },
                })
                .collect(),
            per_block: None,
            per_endpoint: None,
            stamp: None,
        };
        let got: Vec<String> = peer_routes(&info)
            .iter()
            .map(|r| format!("{} {}", r.dest, r.via.map_or("-".to_owned(), |v| v.to_string())))
            .collect();
        assert_eq!(got, expect, "{routes:?}");
    }

    #[test]
    fn routes_whose_next_hop_is_of_another_family_are_left_out() {
        check(
            &[("10.0.0.16/28", "192.168.1.2"), ("10.0.0.0/24", "")],
            &["10.0.0.16/28 192.168.1.2", "10.0.0.0/24 -"],
        );
        // An IPv6 block behind a host with an IPv4 underlay address: the kernel refuses it.
        check(&[("fd00::10/124", "192.168.1.2"), ("fd00::/120", "")], &["fd00::/120 -"]);
        check(&[("fd00::10/124", "fd01::2"), ("10.0.0.16/28", "fd01::2")], &["fd00::10/124 fd01::2"]);
        check(&[("garbage", "192.168.1.2"), ("10.0.0.16/28", "not an ip")], &[]);
    }
}
