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
                RouteKind::Host { via_ip, .. } => {
                    via_ip.parse().ok().map(|ip| PeerRoute { dest, via: Some(ip) })
                }
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
