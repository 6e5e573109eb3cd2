//! Desired host state from the agent's view of its host: the gateway link, one link and /32 route
//! per local endpoint, and the route manager's routes toward other hosts. Pure and total: bad
//! views are errors naming the conflict, never a partial state.

use std::collections::BTreeMap;
use std::net::IpAddr;

use romana_model::Cidr;

use crate::state::{HostState, LinkKind, LinkName, NextHop};

/// An endpoint on this host: its address and the host side of its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The IPAM address name (container id and interface, or the VM's port id); for errors.
    pub name: String,
    pub ip: IpAddr,
    pub link: LinkName,
}

/// A route the route manager computed for this host: `via` another host, or `None` for a prefix
/// that falls through (throw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    pub dest: Cidr,
    pub via: Option<IpAddr>,
}

/// Everything the agent knows that decides its host's Romana state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub gateway: LinkName,
    /// The gateway's addresses (/32 or /128 each): endpoints use them as their next hop.
    pub gateway_addresses: Vec<IpAddr>,
    pub endpoints: Vec<LocalEndpoint>,
    pub routes: Vec<PeerRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("endpoints {first:?} and {second:?} both have address {ip}")]
    DuplicateAddress { ip: IpAddr, first: String, second: String },
    #[error("endpoints {first:?} and {second:?} both use link {link}")]
    DuplicateLink { link: LinkName, first: String, second: String },
    #[error("endpoint {endpoint:?} uses link {link}, which is the gateway")]
    GatewayLink { link: LinkName, endpoint: String },
    #[error("the route manager sent two routes for {dest}")]
    DuplicateRoute { dest: Cidr },
    #[error("the route manager sent a route for {dest}, which is local endpoint {endpoint:?}")]
    RouteToLocalEndpoint { dest: Cidr, endpoint: String },
}

/// The state the host should have. Deterministic: the same view gives the same state.
pub fn compile(view: &HostView) -> Result<HostState, CompileError> {
    let mut state = HostState::default();
    state.links.insert(view.gateway.clone(), LinkKind::Gateway);
    for ip in &view.gateway_addresses {
        state.addresses.insert((view.gateway.clone(), Cidr::host(*ip)));
    }
    let mut by_ip: BTreeMap<IpAddr, &str> = BTreeMap::new();
    let mut by_link: BTreeMap<&LinkName, &str> = BTreeMap::new();
    for e in &view.endpoints {
        if e.link == view.gateway {
            return Err(CompileError::GatewayLink { link: e.link.clone(), endpoint: e.name.clone() });
        }
        if let Some(first) = by_ip.insert(e.ip, &e.name) {
            return Err(CompileError::DuplicateAddress {
                ip: e.ip,
                first: first.into(),
                second: e.name.clone(),
            });
        }
        if let Some(first) = by_link.insert(&e.link, &e.name) {
            return Err(CompileError::DuplicateLink {
                link: e.link.clone(),
                first: first.into(),
                second: e.name.clone(),
            });
        }
        state.links.insert(e.link.clone(), LinkKind::Endpoint);
        state.routes.insert(Cidr::host(e.ip), NextHop::Dev(e.link.clone()));
    }
    for r in &view.routes {
        if let Some(endpoint) =
            by_ip.get(&r.dest.network()).filter(|_| r.dest == Cidr::host(r.dest.network()))
        {
            return Err(CompileError::RouteToLocalEndpoint { dest: r.dest, endpoint: (*endpoint).into() });
        }
        let next = r.via.map_or(NextHop::Throw, NextHop::Via);
        if state.routes.insert(r.dest, next).is_some() {
            return Err(CompileError::DuplicateRoute { dest: r.dest });
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(s: &str) -> LinkName {
        LinkName::new(s).expect("test link names are marked")
    }

    fn view(endpoints: &[(&str, &str, &str)], routes: &[(&str, Option<&str>)]) -> HostView {
        HostView {
            gateway: link("romana-gw"),
            gateway_addresses: vec!["10.0.0.1".parse().expect("literal")],
            endpoints: endpoints
                .iter()
                .map(|(n, ip, l)| LocalEndpoint {
                    name: (*n).into(),
                    ip: ip.parse().expect("literal"),
                    link: link(l),
                })
                .collect(),
            routes: routes
                .iter()
                .map(|(d, v)| PeerRoute {
                    dest: d.parse().expect("literal"),
                    via: v.map(|v| v.parse().expect("literal")),
                })
                .collect(),
        }
    }

    /// Compiles `v` and renders the state as sorted lines, or the error message.
    fn check(v: HostView, expect: &[&str]) {
        let got: Vec<String> = match compile(&v) {
            Ok(s) => s
                .links
                .iter()
                .map(|(l, k)| format!("link {l} {k:?}"))
                .chain(s.addresses.iter().map(|(l, c)| format!("addr {c} dev {l}")))
                .chain(s.routes.iter().map(|(d, n)| format!("route {d} {n}")))
                .collect(),
            Err(e) => vec![format!("error: {e}")],
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn endpoints_and_peer_routes() {
        check(
            view(
                &[("c1/eth0", "10.1.0.5", "romana-c1"), ("c2/eth0", "10.1.0.6", "romana-c2")],
                &[("10.2.0.0/16", Some("192.168.0.2")), ("10.0.0.0/8", None)],
            ),
            &[
                "link romana-c1 Endpoint",
                "link romana-c2 Endpoint",
                "link romana-gw Gateway",
                "addr 10.0.0.1/32 dev romana-gw",
                "route 10.0.0.0/8 throw",
                "route 10.1.0.5/32 dev romana-c1",
                "route 10.1.0.6/32 dev romana-c2",
                "route 10.2.0.0/16 via 192.168.0.2",
            ],
        );
    }

    #[test]
    fn conflicts_are_errors_naming_both_sides() {
        check(
            view(&[("a", "10.1.0.5", "romana-a"), ("b", "10.1.0.5", "romana-b")], &[]),
            &[r#"error: endpoints "a" and "b" both have address 10.1.0.5"#],
        );
        check(
            view(&[("a", "10.1.0.5", "romana-x"), ("b", "10.1.0.6", "romana-x")], &[]),
            &[r#"error: endpoints "a" and "b" both use link romana-x"#],
        );
        check(
            view(&[("a", "10.1.0.5", "romana-gw")], &[]),
            &[r#"error: endpoint "a" uses link romana-gw, which is the gateway"#],
        );
        check(
            view(&[], &[("10.2.0.0/16", Some("192.168.0.2")), ("10.2.0.0/16", Some("192.168.0.3"))]),
            &["error: the route manager sent two routes for 10.2.0.0/16"],
        );
        check(
            view(&[("a", "10.1.0.5", "romana-a")], &[("10.1.0.5/32", Some("192.168.0.3"))]),
            &[r#"error: the route manager sent a route for 10.1.0.5/32, which is local endpoint "a""#],
        );
    }

    #[test]
    fn link_names_carry_the_mark() {
        assert!(matches!(LinkName::new("eth0"), Err(crate::LinkNameError::Unmarked(_))));
        assert!(matches!(LinkName::new("romana-0123456789"), Err(crate::LinkNameError::TooLong(_))));
        assert!(matches!(LinkName::new("romana a"), Err(crate::LinkNameError::BadChar(_))));
        assert_eq!(link("romana-gw").as_str(), "romana-gw");
    }
}
