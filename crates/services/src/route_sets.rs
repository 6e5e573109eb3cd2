//! Route sets as the wire carries them, projected from the pure IPAM: a host's set (without
//! routes through dead hosts) and the fabric's groups (`FabricGroup`, also what `romana ipam
//! plan` prints). Pure: no I/O, no HTTP.

use romana_api::rest::{FabricGroup, HostRoutesInfo, RouteInfo};
use romana_ipam::{Ipam, IpamError, RouteTarget};
use romana_model::HostName;

use crate::liveness::Liveness;

/// One IPAM route as the wire's `RouteInfo`.
pub fn route_info(r: &romana_ipam::Route) -> RouteInfo {
    RouteInfo::from(r)
}

/// The fabric's view (`GET /fabric`): every prefix group with its prefix, announcement, hosts and
/// routes.
pub fn fabric_groups(ipam: &Ipam) -> Vec<FabricGroup> {
    ipam.fabric_routes().iter().map(FabricGroup::from).collect()
}

/// The routes `host` installs: the IPAM's aggregated routes, without those through dead hosts.
pub fn host_routes(
    ipam: &Ipam,
    live: &Liveness,
    host: &HostName,
    revision: i64,
) -> Result<HostRoutesInfo, IpamError> {
    let r = ipam.host_routes(host)?;
    let routes = r
        .routes
        .iter()
        .filter(|x| !matches!(&x.target, RouteTarget::Host { name, .. } if live.is_dead(name.as_str())))
        .map(route_info)
        .collect::<Vec<RouteInfo>>();
    Ok(HostRoutesInfo {
        host: host.to_string(),
        revision,
        routes,
        per_block: r.per_block,
        per_endpoint: r.per_endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use romana_ipam::AllocRequest;
    use serde_json::json;

    const TOPOLOGY: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28}],
      "topologies":[{"networks":["pods"],"map":[
        {"name":"rack-1","groups":[{"name":"h1","ip":"192.168.1.1"},{"name":"h2","ip":"192.168.1.2"}]},
        {"name":"rack-2","groups":[{"name":"h3","ip":"192.168.2.3"}]}]}]}"#;

    fn ipam(endpoints: &[(&str, &str)]) -> Ipam {
        let mut ipam = Ipam::new(romana_api::topology::parse(TOPOLOGY).expect("parses")).expect("valid");
        for (name, host) in endpoints {
            let req = AllocRequest {
                name: name.parse().expect("name"),
                host: host.parse().expect("host"),
                tenant: "t".parse().expect("tenant"),
                segment: "".parse().expect("segment"),
            };
            ipam.allocate(&req).expect("allocates");
        }
        ipam
    }

    /// What `GET /fabric` answered before `FabricGroup` existed (built with `json!`), kept as
    /// the reference the typed answer must equal byte for byte.
    fn fabric_as_before(ipam: &Ipam) -> String {
        let routes = |g: &romana_ipam::GroupRoutes| {
            g.routes
                .iter()
                .map(|r| {
                    let (kind, via, via_ip) = match &r.target {
                        RouteTarget::Host { name, ip } => ("host", name.to_string(), ip.to_string()),
                        RouteTarget::Group { path } => ("group", path.clone(), String::new()),
                        RouteTarget::Throw => ("throw", String::new(), String::new()),
                    };
                    let mut v = json!({"dest": r.dest.to_string(), "kind": kind});
                    if !via.is_empty() {
                        v["via"] = via.into();
                    }
                    if !via_ip.is_empty() {
                        v["via_ip"] = via_ip.into();
                    }
                    v
                })
                .collect::<Vec<_>>()
        };
        let groups: Vec<serde_json::Value> = ipam
            .fabric_routes()
            .iter()
            .map(|g| {
                json!({
                    "network": g.network.as_str(), "group": g.path, "cidr": g.cidr.to_string(),
                    "announce": g.announce.map(|c| c.to_string()),
                    "hosts": g.hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
                    "routes": routes(g),
                })
            })
            .collect();
        serde_json::to_string(&groups).expect("serializes")
    }

    fn check(endpoints: &[(&str, &str)], kinds: &[&str]) {
        let ipam = ipam(endpoints);
        let typed = fabric_groups(&ipam);
        let text = serde_json::to_string(&typed).expect("serializes");
        assert_eq!(text, fabric_as_before(&ipam), "the same JSON as before");
        let back: Vec<FabricGroup> = serde_json::from_str(&text).expect("reads back");
        assert_eq!(back, typed, "round trip");
        for kind in kinds {
            assert!(text.contains(&format!("\"kind\":\"{kind}\"")), "a {kind} route in {text}");
        }
    }

    #[test]
    fn fabric_groups_keep_the_json_clients_saw() {
        check(&[], &[]);
        check(&[("a", "h1"), ("b", "h3")], &["host", "group"]);
        check(&[("a", "h1"), ("b", "h2"), ("c", "h3"), ("d", "h3")], &["host", "group"]);
    }
}
