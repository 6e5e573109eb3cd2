//! Route sets as the wire carries them, projected from the pure IPAM: a host's set (without
//! routes through dead hosts) and the fabric's groups. Pure: no I/O, no HTTP.

use romana_api::rest::{HostRoutes, RouteInfo};
use romana_ipam::{Ipam, IpamError, RouteTarget};
use romana_model::HostName;

use crate::liveness::Liveness;

/// One IPAM route as the wire's `RouteInfo`.
pub fn route_info(r: &romana_ipam::Route) -> RouteInfo {
    let (kind, via, via_ip) = match &r.target {
        RouteTarget::Host { name, ip } => ("host", name.to_string(), ip.to_string()),
        RouteTarget::Group { path } => ("group", path.clone(), String::new()),
        RouteTarget::Throw => ("throw", String::new(), String::new()),
    };
    RouteInfo { dest: r.dest.to_string(), kind: kind.into(), via, via_ip }
}

/// The routes `host` installs: the IPAM's aggregated routes, without those through dead hosts.
pub fn host_routes(
    ipam: &Ipam,
    live: &Liveness,
    host: &HostName,
    revision: i64,
) -> Result<HostRoutes, IpamError> {
    let r = ipam.host_routes(host)?;
    let routes = r
        .routes
        .iter()
        .filter(|x| !matches!(&x.target, RouteTarget::Host { name, .. } if live.is_dead(name.as_str())))
        .map(route_info)
        .collect::<Vec<RouteInfo>>();
    Ok(HostRoutes {
        host: host.to_string(),
        revision,
        routes,
        per_block: r.per_block,
        per_endpoint: r.per_endpoint,
    })
}
