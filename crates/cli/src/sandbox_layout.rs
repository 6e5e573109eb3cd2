//! The sandbox's shape, pure: namespace names, addresses and links for R racks of H hosts behind
//! rack routers and one spine (static routing) or two (BGP: one shared segment per spine, for
//! ECMP), the topology romanad carves for it, the `ip` commands that wire it, and the routers'
//! routes from romanad's fabric view. No I/O; `sandbox.rs` and `sandbox_bgp.rs` run the plan.

use romana_api::rest::{FabricGroup, RouteKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How the sandbox's routers learn pod routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Routes programmed by the CLI from `GET /fabric` after each change.
    #[default]
    Static,
    /// BIRD in every router and host namespace, configured only from rendered configuration.
    Bgp,
}

/// The spines' AS (both spines share it, so their routes are equal: ECMP).
pub const SPINE_ASN: u32 = 65000;

/// Rack r's router's AS, and its hosts' AS.
pub fn rack_asn(rack: usize) -> u32 {
    SPINE_ASN + rack as u32
}

pub fn hosts_asn(rack: usize) -> u32 {
    SPINE_ASN + 100 + rack as u32
}

/// Every namespace of sandbox `name` starts with this, so `down` finds them even after a crash.
pub fn prefix(name: &str) -> String {
    format!("rms-{name}-")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Host name in the topology (`r1h2`).
    pub name: String,
    pub netns: String,
    pub rack: usize,
    pub ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub name: String,
    pub racks: usize,
    pub hosts_per_rack: usize,
    pub cidr: String,
    pub block_mask: u8,
    pub hosts: Vec<Host>,
    pub routing: Routing,
    pub egress: Egress,
    /// BGP: the first this many hosts of each rack are its route reflectors (iBGP in the rack);
    /// 0: every host peers with its rack router.
    pub reflectors: usize,
    /// The IPv6 pod network beside the IPv4 one (`--ipv6`), with the IPv6 underlay of
    /// `sandbox_ipv6.rs`; `None`: IPv4 only.
    pub ipv6: Option<String>,
}

/// The sandbox's way out (docs/fabric.md, "Egress NAT"), kept in its state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Egress {
    /// An "internet" namespace behind the spines (`--internet`).
    #[serde(default)]
    pub internet: bool,
    /// The sandbox network's `nat_outgoing`.
    #[serde(default = "nat_on")]
    pub nat_outgoing: bool,
    /// The topology's `no_nat` list.
    #[serde(default)]
    pub no_nat: Vec<String>,
}

fn nat_on() -> bool {
    true
}

impl Default for Egress {
    fn default() -> Egress {
        Egress { internet: false, nat_outgoing: true, no_nat: Vec::new() }
    }
}

/// The "internet"'s address: benchmark space (RFC 2544), outside every Romana network and every
/// private range the sandbox uses.
pub const INTERNET_IP: &str = "198.18.0.1";

/// The port of the echo server in the "internet" (and in pods, for `sandbox reach`).
pub const ECHO_PORT: u16 = 7;

/// A sandbox name: 1 to 8 of a-z and 0-9 (namespace and link names stay short).
pub fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 8 && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

impl Layout {
    pub fn new(
        name: &str,
        racks: usize,
        hosts_per_rack: usize,
        cidr: &str,
        block_mask: u8,
    ) -> Result<Layout, String> {
        if !valid_name(name) {
            return Err(format!("sandbox name {name:?}: 1 to 8 characters from a-z 0-9"));
        }
        if !(1..=16).contains(&racks) || !(1..=32).contains(&hosts_per_rack) {
            return Err(format!("{racks} racks x {hosts_per_rack} hosts: 1 to 16 racks of 1 to 32 hosts"));
        }
        let hosts = (1..=racks)
            .flat_map(|r| {
                (1..=hosts_per_rack).map(move |h| Host {
                    name: format!("r{r}h{h}"),
                    netns: format!("{}r{r}h{h}", prefix(name)),
                    rack: r,
                    ip: format!("192.168.{r}.{}", 10 + h),
                })
            })
            .collect();
        Ok(Layout {
            name: name.into(),
            racks,
            hosts_per_rack,
            cidr: cidr.into(),
            block_mask,
            hosts,
            routing: Routing::Static,
            egress: Egress::default(),
            reflectors: 0,
            ipv6: None,
        })
    }

    /// Route reflectors (docs/fabric.md): the first `n` hosts of each rack, with BGP only.
    pub fn with_reflectors(mut self, n: usize) -> Result<Layout, String> {
        if n > 0 && self.routing != Routing::Bgp {
            return Err(format!("{n} reflectors: route reflectors need --routing bgp"));
        }
        if n > self.hosts_per_rack {
            return Err(format!("{n} reflectors: a rack has {} hosts", self.hosts_per_rack));
        }
        self.reflectors = n;
        Ok(self)
    }

    pub fn with_egress(mut self, egress: Egress) -> Layout {
        self.egress = egress;
        self
    }

    /// The "internet" namespace.
    pub fn internet_ns(&self) -> String {
        format!("{}inet", prefix(&self.name))
    }

    /// Spine s's (1 or 2) link to the "internet": its address (`side` 1) and the internet's (2).
    pub fn internet_link_ip(s: usize, side: u8) -> String {
        format!("192.168.{}.{side}", 240 + s)
    }

    /// The "internet" behind the spines: a namespace holding `INTERNET_IP`, a link from each
    /// spine, each spine's default route into it and routes to the racks' host subnets (which
    /// the pod fabric does not carry: the underlay's business), the racks' default routes up to
    /// the first spine (with static routing they have it already). The internet routes back
    /// only the hosts' range, not the pods': a pod address reaches it but cannot be answered.
    fn internet_wiring(&self, cmds: &mut Vec<String>) {
        let inet = self.internet_ns();
        cmds.push(format!("-n {inet} addr add {INTERNET_IP}/32 dev lo"));
        for (i, s) in self.spines().iter().enumerate() {
            let k = i + 1;
            cmds.push(format!("-n {s} link add inet type veth peer name s{k} netns {inet}"));
            cmds.push(format!("-n {s} addr add {}/30 dev inet", Self::internet_link_ip(k, 1)));
            cmds.push(format!("-n {s} link set inet up"));
            cmds.push(format!("-n {inet} addr add {}/30 dev s{k}", Self::internet_link_ip(k, 2)));
            cmds.push(format!("-n {inet} link set s{k} up"));
            cmds.push(format!("-n {s} route add default via {}", Self::internet_link_ip(k, 2)));
            for r in 1..=self.racks {
                let via = match self.routing {
                    Routing::Static => Self::uplink_ip(r),
                    Routing::Bgp => Self::rack_uplink_ip(k, r),
                };
                cmds.push(format!("-n {s} route add 192.168.{r}.0/24 via {via}"));
            }
        }
        cmds.push(format!("-n {inet} route add 192.168.0.0/16 via {}", Self::internet_link_ip(1, 1)));
        if self.routing == Routing::Bgp {
            for r in 1..=self.racks {
                cmds.push(format!("-n {} route add default via {}", self.router(r), Self::spine_ip(1)));
            }
        }
    }

    pub fn with_routing(mut self, routing: Routing) -> Layout {
        self.routing = routing;
        self
    }

    pub fn spine(&self) -> String {
        format!("{}spine", prefix(&self.name))
    }

    /// The spines: one with static routing, two with BGP (`spine`, `spine2`).
    pub fn spines(&self) -> Vec<String> {
        match self.routing {
            Routing::Static => vec![self.spine()],
            Routing::Bgp => vec![self.spine(), format!("{}spine2", prefix(&self.name))],
        }
    }

    /// BGP: spine s's (1 or 2) address on its segment with the rack routers, and rack r's there.
    pub fn spine_ip(s: usize) -> String {
        format!("192.168.{}.1", 255 - s)
    }

    pub fn rack_uplink_ip(s: usize, rack: usize) -> String {
        format!("192.168.{}.{}", 255 - s, 10 + rack)
    }

    /// The rack router's address toward its hosts.
    pub fn rack_ip(rack: usize) -> String {
        format!("192.168.{rack}.1")
    }

    pub fn router(&self, rack: usize) -> String {
        format!("{}rack{rack}", prefix(&self.name))
    }

    /// The rack router's address on the spine link (spine side is one less).
    pub fn uplink_ip(rack: usize) -> String {
        format!("192.168.254.{}", rack * 4 + 2)
    }

    pub fn pod_netns(&self, pod: &str) -> String {
        format!("{}{pod}", prefix(&self.name))
    }

    /// Every namespace of the sandbox but pods, in creation order.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out = self.spines();
        out.extend((1..=self.racks).map(|r| self.router(r)));
        out.extend(self.hosts.iter().map(|h| h.netns.clone()));
        if self.egress.internet {
            out.push(self.internet_ns());
        }
        out
    }

    /// The topology: one network, one prefix group per rack, hosts joining by their `rack` tag.
    /// With BGP the racks sit under one root group, the spines', each with its router and AS.
    pub fn topology(&self) -> Value {
        let mut t = self.carved_topology();
        if !self.egress.no_nat.is_empty() {
            t["no_nat"] = json!(self.egress.no_nat);
        }
        t
    }

    fn carved_topology(&self) -> Value {
        if self.routing == Routing::Bgp {
            return self.bgp_topology();
        }
        let groups: Vec<Value> = (1..=self.racks)
            .map(
                |r| json!({"name": format!("rack-{r}"), "assignment": {"rack": r.to_string()}, "groups": []}),
            )
            .collect();
        let network = format!("sandbox-{}", self.name);
        // The racks hang under one named root, the spine's group, as with BGP: a map of one
        // element is that group itself, so a lone rack at the top would be the root and its hosts'
        // routes would land on the spine, which has no link to them (`--racks 1`: "Nexthop has
        // invalid gateway").
        json!({
            "networks": [self.network()],
            "topologies": [{"networks": [network], "map": [{"name": "spine", "groups": groups}]}]
        })
    }

    /// The sandbox's one network.
    fn network(&self) -> Value {
        let mut n = json!({"name": format!("sandbox-{}", self.name), "cidr": self.cidr, "block_mask": self.block_mask});
        if !self.egress.nat_outgoing {
            n["nat_outgoing"] = json!(false);
        }
        n
    }

    fn bgp_topology(&self) -> Value {
        let groups: Vec<Value> = (1..=self.racks)
            .map(|r| {
                let mut bgp = json!({"asn": rack_asn(r), "routers": [Self::rack_ip(r)],
                    "uplinks": [Self::rack_uplink_ip(1, r), Self::rack_uplink_ip(2, r)]});
                if self.reflectors == 0 {
                    bgp["host_asn"] = json!(hosts_asn(r));
                } else {
                    // Reflection is iBGP: the hosts speak the rack router's AS.
                    let hosts = self.hosts.iter().filter(|h| h.rack == r).take(self.reflectors);
                    bgp["reflectors"] = json!(hosts.map(|h| h.ip.clone()).collect::<Vec<_>>());
                }
                json!({"name": format!("rack-{r}"), "assignment": {"rack": r.to_string()}, "routing": "bgp",
                    "bgp": bgp, "groups": []})
            })
            .collect();
        let network = format!("sandbox-{}", self.name);
        json!({
            "networks": [self.network()],
            "topologies": [{"networks": [network], "map": [{"name": "spines", "routing": "bgp",
                "bgp": {"asn": SPINE_ASN, "routers": [Self::spine_ip(1), Self::spine_ip(2)]},
                "groups": groups}]}]
        })
    }

    /// `ip` invocations (argument lists) that build the wiring: the spine with a link to each rack
    /// router, each router's rack bridge with a link to each of its hosts, default routes up.
    /// With BGP: two spines, each with a bridge every rack router joins; no routes on routers.
    pub fn wiring(&self) -> Vec<Vec<String>> {
        let mut cmds: Vec<String> = Vec::new();
        for ns in self.namespaces() {
            cmds.push(format!("netns add {ns}"));
            cmds.push(format!("-n {ns} link set lo up"));
        }
        let spine = self.spine();
        for (i, s) in self.spines().iter().enumerate().filter(|_| self.routing == Routing::Bgp) {
            cmds.push(format!("-n {s} link add fab0 type bridge"));
            cmds.push(format!("-n {s} addr add {}/24 dev fab0", Self::spine_ip(i + 1)));
            cmds.push(format!("-n {s} link set fab0 up"));
            for r in 1..=self.racks {
                let router = self.router(r);
                cmds.push(format!("-n {s} link add r{r} type veth peer name up{i} netns {router}"));
                cmds.push(format!("-n {s} link set r{r} master fab0"));
                cmds.push(format!("-n {s} link set r{r} up"));
                cmds.push(format!("-n {router} addr add {}/24 dev up{i}", Self::rack_uplink_ip(i + 1, r)));
                cmds.push(format!("-n {router} link set up{i} up"));
            }
        }
        for r in 1..=self.racks {
            let router = self.router(r);
            if self.routing == Routing::Bgp {
                cmds.push(format!("-n {router} link add rack0 type bridge"));
                cmds.push(format!("-n {router} addr add 192.168.{r}.1/24 dev rack0"));
                cmds.push(format!("-n {router} link set rack0 up"));
                continue;
            }
            let router = self.router(r);
            cmds.push(format!("-n {spine} link add r{r} type veth peer name up0 netns {router}"));
            cmds.push(format!("-n {spine} addr add 192.168.254.{}/30 dev r{r}", r * 4 + 1));
            cmds.push(format!("-n {spine} link set r{r} up"));
            cmds.push(format!("-n {router} addr add {}/30 dev up0", Self::uplink_ip(r)));
            cmds.push(format!("-n {router} link set up0 up"));
            cmds.push(format!("-n {router} route add default via 192.168.254.{}", r * 4 + 1));
            cmds.push(format!("-n {router} link add rack0 type bridge"));
            cmds.push(format!("-n {router} addr add 192.168.{r}.1/24 dev rack0"));
            cmds.push(format!("-n {router} link set rack0 up"));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let router = self.router(h.rack);
            let port = format!("h{i}");
            cmds.push(format!("-n {router} link add {port} type veth peer name eth0 netns {}", h.netns));
            cmds.push(format!("-n {router} link set {port} master rack0"));
            cmds.push(format!("-n {router} link set {port} up"));
            cmds.push(format!("-n {} addr add {}/24 dev eth0", h.netns, h.ip));
            cmds.push(format!("-n {} link set eth0 up", h.netns));
            cmds.push(format!("-n {} route add default via 192.168.{}.1", h.netns, h.rack));
        }
        if self.egress.internet {
            self.internet_wiring(&mut cmds);
        }
        cmds.into_iter().map(|c| c.split_whitespace().map(str::to_owned).collect()).collect()
    }

    /// Namespaces that route (spines and rack routers): forwarding on there.
    pub fn routers(&self) -> Vec<String> {
        let mut out = self.spines();
        out.extend((1..=self.racks).map(|r| self.router(r)));
        out
    }

    /// The routers' routes from romanad's `GET /fabric`: (namespace, destination, next hop). A
    /// leaf group's routes go to its rack router (toward hosts); the root's to the spine (toward
    /// the rack routers). `throw` routes need nothing: the default route covers them. VIPs'
    /// /32s (`vips`) go the same way, toward the host serving each.
    pub fn fabric_routes(&self, fabric: &[FabricGroup]) -> Vec<(String, String, String)> {
        self.network_routes(fabric, &format!("sandbox-{}", self.name), Self::uplink_ip)
    }

    /// `fabric_routes` of one network, whose rack routers' spine-side addresses are `uplink`'s.
    pub(crate) fn network_routes(
        &self,
        fabric: &[FabricGroup],
        network: &str,
        uplink: fn(usize) -> String,
    ) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let rack_of = |path: &str| {
            (1..=self.racks).find(|r| path.trim_end_matches('/').ends_with(&format!("rack-{r}")))
        };
        for g in fabric.iter().filter(|g| g.network == *network) {
            let router = match rack_of(&g.group) {
                Some(r) => self.router(r),
                None => self.spine(),
            };
            for route in g.routes.iter().chain(&g.vips) {
                let via = match &route.kind {
                    RouteKind::Host { via_ip, .. } => via_ip.clone(),
                    RouteKind::Group { via } => match rack_of(via) {
                        Some(r) => uplink(r),
                        None => continue,
                    },
                    RouteKind::Throw => continue,
                };
                if !route.dest.is_empty() && !via.is_empty() {
                    out.push((router.clone(), route.dest.clone(), via));
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "sandbox_layout_tests.rs"]
mod tests;
