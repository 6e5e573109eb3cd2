//! Route sets as the wire carries them, projected from the pure IPAM: a host's set (without
//! routes through dead hosts) with the stamp of its inputs, the notice of it that the route
//! manager publishes (that stamp), and the fabric's groups (`FabricGroup`, also what `romana
//! ipam plan` prints), with each VIP's /32 toward the host serving it. Pure: no I/O, no HTTP.

use std::collections::BTreeMap;

use romana_api::rest::{FabricGroup, HostRoutesInfo, RouteInfo, RouteKind, RouteSetNotice};
use romana_api::vip::VipInfo;
use romana_ipam::{Ipam, IpamError};
use romana_model::HostName;

use crate::liveness::Liveness;

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

/// A host's set as `GET /routes/{host}` answers it: its JSON and the `ETag` of its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub json: Vec<u8>,
    /// A weak entity tag (`W/"..."`) of the routes alone: the first 128 bits of the SHA-256 of
    /// their JSON array, in hex. Weak because the answer's revision, counts and stamp can differ
    /// under one tag; the same routes give the same tag on every replica.
    pub etag: String,
    /// The stamp of the set's inputs (`RouteSetNotice::stamp`), also sent with a 304.
    pub stamp: Option<String>,
}

/// What `host`'s set is computed from, read from the IPAM: the routes' inputs (`RoutePlan`, with
/// which hosts are dead) and the stamp. Cheap (the stamp and a copy of the leaf's blocks), so a
/// caller holds the IPAM's lock for this only; `SetInputs::write` computes the rest.
#[derive(Debug)]
pub struct SetInputs {
    host: HostName,
    plan: romana_ipam::RoutePlan,
    stamp: Option<String>,
    revision: i64,
}

pub fn set_inputs(ipam: &Ipam, live: &Liveness, host: &HostName, revision: i64) -> SetInputs {
    let dead = |h: &HostName| live.is_dead(h.as_str());
    SetInputs {
        host: host.clone(),
        plan: ipam.route_plan(std::slice::from_ref(host), &dead),
        stamp: ipam.route_stamp(host, &dead).map(stamp_text),
        revision,
    }
}

impl SetInputs {
    /// The routes the host installs (the IPAM's aggregated routes, without those through dead
    /// hosts), with what a per-block and a per-endpoint scheme would need and the stamp of their
    /// inputs, as `GET /routes/{host}` answers them (`route_wire::host_routes_json`).
    pub fn write(self) -> Result<Served, IpamError> {
        use std::fmt::Write as _;
        let set = self.plan.into_routes().next().unwrap_or(Err(IpamError::UnknownHost(self.host)))?;
        let written = romana_api::route_wire::host_routes_json(&set, self.revision, self.stamp.as_deref());
        let digest = ring::digest::digest(&ring::digest::SHA256, &written.json[written.routes]);
        let mut etag = String::with_capacity(36);
        etag.push_str("W/\"");
        for b in &digest.as_ref()[..16] {
            let _ = write!(etag, "{b:02x}");
        }
        etag.push('"');
        Ok(Served { json: written.json, etag, stamp: self.stamp })
    }
}

/// `set_inputs` and `write` in one: a host's set as `GET /routes/{host}` answers it.
pub fn host_routes_json(
    ipam: &Ipam,
    live: &Liveness,
    host: &HostName,
    revision: i64,
) -> Result<Served, IpamError> {
    set_inputs(ipam, live, host, revision).write()
}

/// Whether a request's `If-None-Match` (`value`: a list of entity tags, or `*`) names `etag`:
/// the reader holds these routes already (weak comparison, as RFC 9110 asks of this header).
pub fn not_modified(value: &str, etag: &str) -> bool {
    fn opaque(t: &str) -> &str {
        t.strip_prefix("W/").unwrap_or(t)
    }
    value.split(',').map(str::trim).any(|t| t == "*" || opaque(t) == opaque(etag))
}

/// `host_routes_json` read back: the set as a client of `GET /routes/{host}` sees it.
pub fn host_routes(
    ipam: &Ipam,
    live: &Liveness,
    host: &HostName,
    revision: i64,
) -> Result<HostRoutesInfo, IpamError> {
    let served = host_routes_json(ipam, live, host, revision)?;
    Ok(serde_json::from_slice(&served.json).expect("a set written by route_wire reads back"))
}

/// A route stamp as the wire writes it: 16 lowercase hex digits.
pub fn stamp_text(stamp: u64) -> String {
    format!("{stamp:016x}")
}

/// What the route manager puts at `routes/<host>` for a set whose inputs have `stamp`
/// (`Ipam::route_stamps`): a notice naming the set by that stamp, not the set.
pub fn notice(host: &str, stamp: u64) -> Vec<u8> {
    let notice = RouteSetNotice { host: host.to_owned(), stamp: stamp_text(stamp) };
    serde_json::to_vec(&notice).expect("a notice serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use romana_ipam::{AllocRequest, RouteTarget};
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

    /// A notice names its set by the stamp `GET /routes/{host}` answers with the set, and the
    /// stamp moves with the set (a block of h2's, then its owner dead).
    #[test]
    fn a_notice_names_its_set_by_stamp() {
        assert_eq!(
            std::str::from_utf8(&notice("h1", 0xab)).expect("utf-8"),
            r#"{"host":"h1","stamp":"00000000000000ab"}"#
        );
        let h1: HostName = "h1".parse().expect("host");
        let served = |ipam: &Ipam, live: &Liveness| host_routes(ipam, live, &h1, 0).expect("h1's");
        let mut live = Liveness::new(2);
        let (empty, one) = (ipam(&[]), ipam(&[("a", "h2")]));
        let before = served(&empty, &live);
        let after = served(&one, &live);
        assert_eq!(after.routes.len(), 1, "h2's block");
        let stamp = one.route_stamp(&h1, &|_| false).expect("known");
        let n: RouteSetNotice = serde_json::from_slice(&notice("h1", stamp)).expect("a notice");
        assert_eq!(after.stamp, Some(n.stamp.clone()), "the set served is the one announced");
        assert_ne!(before.stamp, after.stamp, "a new route, a new stamp");
        live.monitored.insert("h2".into());
        let dead = served(&one, &live);
        assert!(dead.routes.is_empty(), "h2 dead: {:?}", dead.routes);
        assert_ne!(dead.stamp, after.stamp, "a withdrawal, a new stamp");
        assert_eq!(served(&empty, &Liveness::new(2)), before, "the same inputs, the same set and stamp");
    }

    /// The `ETag` names the routes alone: another revision or another address in a held block
    /// (counts) keeps it, a new route moves it; `If-None-Match` lists are matched entry by entry.
    #[test]
    fn the_etag_names_the_routes_alone() {
        let (h1, live) = ("h1".parse().expect("host"), Liveness::new(2));
        let tag = |ipam: &Ipam, revision| host_routes_json(ipam, &live, &h1, revision).expect("h1's").etag;
        let one = ipam(&[("a", "h2")]);
        let etag = tag(&one, 3);
        assert_eq!((etag.len(), etag.starts_with("W/\""), etag.ends_with('"')), (36, true, true), "{etag}");
        assert_eq!(tag(&one, 9), etag, "another revision");
        assert_eq!(tag(&ipam(&[("a", "h2"), ("b", "h2")]), 3), etag, "another address in h2's block");
        assert_ne!(tag(&ipam(&[]), 3), etag, "no route");
        // h2's second block (17 addresses in blocks of 16): h1 routes both through one /27.
        let names: Vec<String> = (0..17).map(|i| format!("e{i}")).collect();
        let two: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "h2")).collect();
        let two = ipam(&two);
        let routes = host_routes(&two, &live, &h1, 0).expect("h1's").routes;
        assert_eq!(routes.iter().map(|r| r.dest.as_str()).collect::<Vec<_>>(), ["10.20.0.0/27"]);
        assert_ne!(tag(&two, 3), etag, "another route");
        let strong = etag.trim_start_matches("W/");
        assert!(not_modified(&etag, &etag));
        assert!(not_modified(&format!("\"x\", {strong}"), &etag), "weak comparison");
        assert!(not_modified("*", &etag));
        assert!(!not_modified("\"x\", \"y\"", &etag));
        assert!(!not_modified("", &etag));
        assert!(!not_modified(strong.trim_matches('"'), &etag), "an unquoted tag is another tag");
    }
}
