//! The wire's route types from the IPAM core's: one `RouteInfo` per `romana_ipam::Route` and a
//! `FabricGroup` per group's routes, so romanad (`GET /routes`, `GET /fabric`) and `romana ipam
//! plan` print the same shape from the same code.

use romana_ipam::{GroupRoutes, Route, RouteTarget};

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
