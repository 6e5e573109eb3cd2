//! Route sets as the wire carries them, projected from the pure IPAM: a host's set (without
//! routes through dead hosts), the notice of it that the route manager publishes, and the
//! fabric's groups (`FabricGroup`, also what `romana ipam plan` prints), with each VIP's /32
//! toward the host serving it. Pure: no I/O, no HTTP.

use std::collections::BTreeMap;

use romana_api::rest::{FabricGroup, HostRoutesInfo, RouteInfo, RouteKind, RouteSetNotice};
use romana_api::vip::VipInfo;
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

/// The VIPs' routes added to the fabric view (`FabricGroup::vips`): for each VIP assigned to a
/// host, in every leaf holding that host a /32 to the host's address (`hosts`: name to address),
/// and in each ancestor a /32 toward the child on the way down. Routers of a static fabric
/// install them; they move when romanad assigns the VIP to another host (failover). A VIP not
/// served, or served by a host in no leaf, has no route.
pub fn add_vip_routes(groups: &mut [FabricGroup], vips: &[VipInfo], hosts: &BTreeMap<String, String>) {
    for v in vips.iter().filter(|v| !v.assigned.is_empty()) {
        let Ok(addr) = v.address.parse::<std::net::IpAddr>() else { continue };
        let dest = romana_model::Cidr::host(addr).to_string();
        let leaves: Vec<usize> =
            (0..groups.len()).filter(|g| groups[*g].hosts.contains(&v.assigned)).collect();
        for leaf in leaves {
            let via_ip = hosts.get(&v.assigned).cloned().unwrap_or_default();
            let kind = RouteKind::Host { via: v.assigned.clone(), via_ip };
            groups[leaf].vips.push(RouteInfo { dest: dest.clone(), kind });
            let mut child = leaf;
            while let Some(parent) = parent_of(groups, child) {
                let kind = RouteKind::Group { via: groups[child].group.clone() };
                groups[parent].vips.push(RouteInfo { dest: dest.clone(), kind });
                child = parent;
            }
        }
    }
}

/// The group whose path is `g`'s parent path (`/a/b` -> `/a`, `/a` -> `/`), in `g`'s network.
fn parent_of(groups: &[FabricGroup], g: usize) -> Option<usize> {
    let path = &groups[g].group;
    let parent = match path.rfind('/') {
        _ if path == "/" => return None,
        Some(0) => "/",
        Some(k) => &path[..k],
        None => return None,
    };
    groups.iter().position(|p| p.network == groups[g].network && p.group == parent)
}

/// The routes `host` installs: the IPAM's aggregated routes, without those through dead hosts,
/// with what a per-block and a per-endpoint scheme would need (`GET /routes/{host}`).
pub fn host_routes(
    ipam: &Ipam,
    live: &Liveness,
    host: &HostName,
    revision: i64,
) -> Result<HostRoutesInfo, IpamError> {
    Ok(routes_info(ipam.host_routes(host)?, live, revision))
}

/// What the route manager puts at `routes/<host>` for a set of `routes` routes whose published
/// JSON (`route_wire::published_json`) is `set`: a notice naming the set by digest, not the set.
pub fn notice(host: &str, routes: usize, set: &[u8]) -> Vec<u8> {
    let notice = RouteSetNotice { host: host.to_owned(), routes, digest: digest(set) };
    serde_json::to_vec(&notice).expect("a notice serializes")
}

/// `RouteSetNotice::digest` of a set's published JSON.
pub fn digest(set: &[u8]) -> String {
    use std::fmt::Write as _;
    let d = ring::digest::digest(&ring::digest::SHA256, set);
    d.as_ref().iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn routes_info(r: romana_ipam::HostRoutes, live: &Liveness, revision: i64) -> HostRoutesInfo {
    let routes = r
        .routes
        .iter()
        .filter(|x| !matches!(&x.target, RouteTarget::Host { name, .. } if live.is_dead(name.as_str())))
        .map(route_info)
        .collect::<Vec<RouteInfo>>();
    HostRoutesInfo {
        host: r.host.to_string(),
        revision,
        routes,
        per_block: Some(r.per_block),
        per_endpoint: Some(r.per_endpoint),
    }
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

    /// VIPs (address, assigned host) -> every group's VIP routes as `group: dest kind via`.
    fn check_vips(vips: &[(&str, &str)], expect: &[&str]) {
        let mut groups = fabric_groups(&ipam(&[("a", "h1"), ("b", "h3")]));
        let vips: Vec<VipInfo> = vips
            .iter()
            .map(|(a, h)| {
                serde_json::from_value(json!({"address": a, "service": "web", "tenant": "t",
                    "selector": {}, "assigned": h}))
                .expect("a VIP")
            })
            .collect();
        let hosts: BTreeMap<String, String> =
            [("h1", "192.168.1.1"), ("h2", "192.168.1.2"), ("h3", "192.168.2.3")]
                .iter()
                .map(|(h, a)| ((*h).to_owned(), (*a).to_owned()))
                .collect();
        add_vip_routes(&mut groups, &vips, &hosts);
        let got: Vec<String> = groups
            .iter()
            .flat_map(|g| {
                g.vips.iter().map(move |r| match &r.kind {
                    RouteKind::Host { via, via_ip } => format!("{}: {} host {via} {via_ip}", g.group, r.dest),
                    RouteKind::Group { via } => format!("{}: {} group {via}", g.group, r.dest),
                    RouteKind::Throw => format!("{}: {} throw", g.group, r.dest),
                })
            })
            .collect();
        assert_eq!(got, expect, "{vips:?}");
        // The aggregates are untouched: VIP routes live beside them.
        assert_eq!(
            groups.iter().map(|g| &g.routes).collect::<Vec<_>>(),
            fabric_groups(&ipam(&[("a", "h1"), ("b", "h3")])).iter().map(|g| &g.routes).collect::<Vec<_>>()
        );
    }

    #[test]
    fn vips_route_to_their_serving_host() {
        check_vips(&[], &[]);
        check_vips(
            &[("198.51.100.5", "h3")],
            &["/: 198.51.100.5/32 group /rack-2", "/rack-2: 198.51.100.5/32 host h3 192.168.2.3"],
        );
        // Failover: the same VIP assigned to another host routes there.
        check_vips(
            &[("198.51.100.5", "h2")],
            &["/: 198.51.100.5/32 group /rack-1", "/rack-1: 198.51.100.5/32 host h2 192.168.1.2"],
        );
        // Not served (no live host with an endpoint), or served by an unknown host: no route.
        check_vips(&[("198.51.100.5", ""), ("198.51.100.6", "h9")], &[]);
        check_vips(
            &[("198.51.100.5", "h1"), ("198.51.100.6", "h1")],
            &[
                "/: 198.51.100.5/32 group /rack-1",
                "/: 198.51.100.6/32 group /rack-1",
                "/rack-1: 198.51.100.5/32 host h1 192.168.1.1",
                "/rack-1: 198.51.100.6/32 host h1 192.168.1.1",
            ],
        );
    }

    #[test]
    fn fabric_groups_keep_the_json_clients_saw() {
        check(&[], &[]);
        check(&[("a", "h1"), ("b", "h3")], &["host", "group"]);
        check(&[("a", "h1"), ("b", "h2"), ("c", "h3"), ("d", "h3")], &["host", "group"]);
    }

    /// A notice is the set's size and the SHA-256 of its JSON (the digest a client recomputes
    /// from `GET /routes/{host}`), and it differs whenever the set does.
    #[test]
    fn a_notice_names_its_set_by_digest() {
        let empty = notice("h1", 0, b"");
        assert_eq!(
            std::str::from_utf8(&empty).expect("utf-8"),
            r#"{"host":"h1","routes":0,"digest":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#
        );
        let ipam = ipam(&[("a", "h2")]);
        let live = Liveness::new(2);
        let mut served = host_routes(&ipam, &live, &"h1".parse().expect("host"), 0).expect("h1's");
        (served.per_block, served.per_endpoint) = (None, None);
        let set = serde_json::to_vec(&served).expect("a set");
        let n: RouteSetNotice =
            serde_json::from_slice(&notice("h1", served.routes.len(), &set)).expect("a notice");
        assert_eq!((n.routes, n.digest.len()), (1, 64), "h2's block");
        let mut other = set.clone();
        other.push(b' ');
        assert_ne!(n.digest, digest(&other));
    }
}
