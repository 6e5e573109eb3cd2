//! The topology request (`POST /topology`, topology files): Romana 2.0's `TopologyUpdateRequest`
//! JSON, plus a `classic` network option, converted to and from `romana_ipam::spec`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use romana_ipam::spec::{
    BgpSpec, ClassicBits, DEFAULT_AGENT_PORT, GroupOrHostSpec, GroupSpec, HostSpec, LayoutSpec, MapSpec,
    NetworkSpec, TopologySpec,
};
use romana_ipam::{GroupView, Ipam};
use romana_model::{Cidr, GroupName, HostName, NetworkName, TenantName};
use serde::{Deserialize, Serialize};

use crate::Problems;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyRequest {
    #[serde(default)]
    pub networks: Vec<NetworkDefinition>,
    #[serde(default)]
    pub topologies: Vec<TopologyDefinition>,
    /// CIDRs outside the Romana networks that endpoints of every network reach without egress
    /// NAT (other clusters' pod ranges, a routed datacentre range, the VIP range), as Calico's
    /// disabled IP pools. Traffic to Romana networks is never NATed and needs no entry here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_nat: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDefinition {
    pub name: String,
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_mask: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// Present for a network with the classic host/tenant/segment layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classic: Option<ClassicDefinition>,
    /// Egress NAT for the network's endpoints (Calico's `natOutgoing`); default on, so only
    /// `false` is written out.
    #[serde(default = "nat_on", skip_serializing_if = "is_on")]
    pub nat_outgoing: bool,
}

fn nat_on() -> bool {
    true
}

fn is_on(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassicDefinition {
    pub host_bits: u8,
    pub tenant_bits: u8,
    pub segment_bits: u8,
    pub endpoint_bits: u8,
    #[serde(default)]
    pub endpoint_space_bits: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyDefinition {
    pub networks: Vec<String>,
    pub map: Vec<GroupOrHost>,
}

/// A group (no `ip`) or a host (with `ip`), as in Romana 2.0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupOrHost {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// A host's IPv6 underlay address beside its IPv4 `ip` (dual-stack underlay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_port: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assignment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub routing: String,
    /// With `routing: bgp`: the group's routers and AS numbers (docs/fabric.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpDefinition>,
    /// Output only: the group's carved prefix. Ignored on input, as in Romana 2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// `None` for hosts; `Some(vec![])` for an empty leaf group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<GroupOrHost>>,
}

/// A group's BGP parameters as JSON: `{"asn": 65001, "routers": ["192.168.1.1"],
/// "uplinks": ["192.168.254.11", "192.168.253.11"], "host_asn": 65101}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpDefinition {
    pub asn: u32,
    #[serde(default)]
    pub routers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uplinks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_asn: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reflectors: Vec<String>,
}

impl BgpDefinition {
    fn from_spec(b: &BgpSpec) -> BgpDefinition {
        BgpDefinition {
            asn: b.asn,
            routers: b.routers.iter().map(ToString::to_string).collect(),
            uplinks: b.uplinks.iter().map(ToString::to_string).collect(),
            host_asn: b.host_asn,
            reflectors: b.reflectors.iter().map(ToString::to_string).collect(),
        }
    }
}

/// An AS number a BGP session can use: not 0, not AS_TRANS (23456), not 4294967295 (RFC 7300).
fn check_asn(asn: u32) -> Result<u32, String> {
    if asn == 0 || asn == 23456 || asn == u32::MAX {
        Err(format!("AS number {asn} is reserved (use 1 to 4294967294 but 23456; private: 64512-65534)"))
    } else {
        Ok(asn)
    }
}

fn ip_list(c: &mut Collector, at: &str, list: &[String]) -> Vec<IpAddr> {
    list.iter()
        .enumerate()
        .filter_map(|(i, a)| {
            c.take(
                || format!("{at}[{i}]"),
                a.parse::<IpAddr>().map_err(|_| format!("malformed address {a:?}")),
            )
        })
        .collect()
}

/// A group's `routing` and `bgp` fields, checked on their own.
fn convert_bgp(c: &mut Collector, at: &str, e: &GroupOrHost) -> Option<BgpSpec> {
    match (e.routing.as_str(), &e.bgp) {
        ("bgp", None) => {
            c.0.push(format!("{at}.bgp: routing is bgp but the group has no bgp section (asn, routers)"));
            None
        }
        ("bgp", Some(b)) => {
            let at = format!("{at}.bgp");
            let asn = c.take(|| format!("{at}.asn"), check_asn(b.asn));
            let host_asn = b.host_asn.map(|h| c.take(|| format!("{at}.host_asn"), check_asn(h)));
            if b.routers.is_empty() {
                c.0.push(format!("{at}.routers: a bgp group needs at least one router address"));
            }
            let routers = ip_list(c, &format!("{at}.routers"), &b.routers);
            let uplinks = ip_list(c, &format!("{at}.uplinks"), &b.uplinks);
            let leaf = !e.groups.as_ref().is_some_and(|g| g.iter().any(|x| x.ip.is_none()));
            if host_asn.is_some() && !leaf {
                c.0.push(format!("{at}.host_asn: only a leaf group (hosts, no groups) has hosts"));
            }
            let reflectors = ip_list(c, &format!("{at}.reflectors"), &b.reflectors);
            check_reflectors(c, &at, b, leaf);
            Some(BgpSpec {
                asn: asn?,
                routers,
                uplinks,
                host_asn: host_asn.map(|h| h.ok_or(())).transpose().ok()?,
                reflectors,
            })
        }
        (other, Some(_)) => {
            c.0.push(format!("{at}.bgp: given but routing is {other:?}; set \"routing\": \"bgp\""));
            None
        }
        (_, None) => None,
    }
}

/// Route reflectors: a leaf's hosts and routers in one AS (reflection is iBGP), each reflector
/// once. Whether each is a router or a host of the group is checked where the hosts are known
/// (`romana_fabric`, which sees hosts added at run time too).
fn check_reflectors(c: &mut Collector, at: &str, b: &BgpDefinition, leaf: bool) {
    if b.reflectors.is_empty() {
        return;
    }
    if !leaf {
        c.0.push(format!(
            "{at}.reflectors: only a leaf group's hosts have reflectors (groups speak eBGP to their parent)"
        ));
    }
    if let Some(h) = b.host_asn.filter(|h| *h != b.asn) {
        c.0.push(format!(
            "{at}.reflectors: route reflection is iBGP, but host_asn {h} differs from asn {} (drop host_asn or make it {})",
            b.asn, b.asn
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in &b.reflectors {
        if !seen.insert(r) {
            c.0.push(format!("{at}.reflectors: {r} is listed twice"));
        }
    }
}

/// Checks BGP groups against their parents: a bgp group under a bgp group has one router and one
/// uplink per parent router (uplink k faces parent router k); uplinks need a bgp parent.
fn check_bgp_tree(c: &mut Collector, at: &str, list: &[GroupOrHostSpec], parent: Option<&BgpSpec>) {
    for (i, e) in list.iter().enumerate() {
        let GroupOrHostSpec::Group(g) = e else { continue };
        let here = format!("{at}[{i}]");
        if let Some(b) = &g.bgp {
            match parent {
                Some(p) => {
                    if b.uplinks.len() != p.routers.len() {
                        c.0.push(format!(
                            "{here}.bgp.uplinks: {} given, but the parent group has {} router(s); one uplink per parent router, in the same order",
                            b.uplinks.len(),
                            p.routers.len()
                        ));
                    }
                    if b.routers.len() > 1 {
                        c.0.push(format!(
                            "{here}.bgp.routers: a group under a bgp group has one router ({} given)",
                            b.routers.len()
                        ));
                    }
                    if b.asn == p.asn {
                        c.0.push(format!(
                            "{here}.bgp.asn: {} is the parent group's AS too; groups speak eBGP to their parent",
                            b.asn
                        ));
                    }
                }
                None if !b.uplinks.is_empty() => {
                    c.0.push(format!("{here}.bgp.uplinks: the parent group does not route with bgp"));
                }
                None => {}
            }
        }
        check_bgp_tree(c, &format!("{here}.groups"), &g.groups, g.bgp.as_ref());
    }
}

/// Parses a topology document (JSON), reporting malformed JSON with its line and column.
pub fn parse(text: &str) -> Result<TopologySpec, Problems> {
    let req: TopologyRequest =
        serde_json::from_str(text).map_err(|e| Problems(vec![format!("topology: {e}")]))?;
    req.to_spec()
}

struct Collector(Vec<String>);

impl Collector {
    fn take<T, E: std::fmt::Display>(&mut self, at: impl FnOnce() -> String, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| self.0.push(format!("{}: {e}", at()))).ok()
    }
}

impl TopologyRequest {
    /// Converts to the IPAM's spec, listing every malformed field.
    pub fn to_spec(&self) -> Result<TopologySpec, Problems> {
        let mut c = Collector(Vec::new());
        let mut networks = Vec::new();
        for (i, n) in self.networks.iter().enumerate() {
            let name = c.take(|| format!("networks[{i}].name"), NetworkName::new(n.name.clone()));
            let cidr = c.take(|| format!("networks[{i}].cidr"), n.cidr.parse::<Cidr>());
            // Romana 2.0 wrote `"tenants": ["*"]` for "every tenant", which is what no list means.
            let wildcard = n.tenants.iter().any(|t| t == "*");
            let tenants: Vec<TenantName> = n
                .tenants
                .iter()
                .enumerate()
                .filter(|_| !wildcard)
                .filter_map(|(j, t)| {
                    c.take(|| format!("networks[{i}].tenants[{j}]"), TenantName::new(t.clone()))
                })
                .collect();
            let layout = n.classic.map_or(LayoutSpec::Blocks, |b| {
                LayoutSpec::Classic(ClassicBits {
                    host_bits: b.host_bits,
                    tenant_bits: b.tenant_bits,
                    segment_bits: b.segment_bits,
                    endpoint_bits: b.endpoint_bits,
                    endpoint_space_bits: b.endpoint_space_bits,
                })
            });
            if let (Some(name), Some(cidr)) = (name, cidr) {
                networks.push(NetworkSpec {
                    name,
                    cidr,
                    block_mask: n.block_mask,
                    tenants,
                    layout,
                    nat_outgoing: n.nat_outgoing,
                });
            }
        }
        let no_nat = self.no_nat_spec(&mut c, &networks);
        let mut topologies = Vec::new();
        for (i, t) in self.topologies.iter().enumerate() {
            let nets: Vec<NetworkName> = t
                .networks
                .iter()
                .enumerate()
                .filter_map(|(j, n)| {
                    c.take(|| format!("topologies[{i}].networks[{j}]"), NetworkName::new(n.clone()))
                })
                .collect();
            let before = c.0.len();
            let map = convert_list(&mut c, &format!("topologies[{i}].map"), &t.map);
            // Counts of routers and uplinks mean something only once every address parsed.
            if c.0.len() == before {
                check_bgp_tree(&mut c, &format!("topologies[{i}].map"), &map, None);
            }
            topologies.push(MapSpec { networks: nets, map });
        }
        if c.0.is_empty() { Ok(TopologySpec { networks, topologies, no_nat }) } else { Err(Problems(c.0)) }
    }
}

impl TopologyRequest {
    /// The `no_nat` list: CIDRs, none inside a Romana network (traffic to those is never NATed,
    /// so such an entry says nothing and is most likely a mistake for another range).
    fn no_nat_spec(&self, c: &mut Collector, networks: &[NetworkSpec]) -> Vec<Cidr> {
        let mut out = Vec::new();
        for (i, text) in self.no_nat.iter().enumerate() {
            let Some(cidr) = c.take(|| format!("no_nat[{i}]"), text.parse::<Cidr>()) else { continue };
            match networks.iter().find(|n| n.cidr.contains(&cidr)) {
                Some(n) => c.0.push(format!(
                    "no_nat[{i}]: {cidr} lies inside network {} ({}), which is never NATed; list only destinations outside the Romana networks",
                    n.name, n.cidr
                )),
                None => out.push(cidr),
            }
        }
        out
    }
}

fn convert_list(c: &mut Collector, at: &str, list: &[GroupOrHost]) -> Vec<GroupOrHostSpec> {
    list.iter().enumerate().filter_map(|(i, e)| convert(c, &format!("{at}[{i}]"), e)).collect()
}

fn convert(c: &mut Collector, at: &str, e: &GroupOrHost) -> Option<GroupOrHostSpec> {
    match &e.ip {
        Some(ip) => {
            let name = c.take(|| format!("{at}.name"), HostName::new(e.name.clone()));
            let ip = c.take(
                || format!("{at}.ip"),
                ip.parse::<IpAddr>().map_err(|_| format!("malformed address {ip:?}")),
            );
            let ipv6 = match &e.ipv6 {
                None => Some(None),
                Some(v6) => c.take(|| format!("{at}.ipv6"), crate::underlay::parse_ipv6(v6)).map(Some),
            };
            if e.groups.is_some() {
                c.0.push(format!("{at}: a host (with ip) cannot have groups"));
            }
            if let (Some(IpAddr::V6(_)), Some(Some(_))) = (ip, ipv6) {
                c.0.push(format!("{at}.ipv6: goes beside an IPv4 ip; this host's ip is IPv6 already"));
                return None;
            }
            let (name, ip, ipv6) = (name?, ip?, ipv6?);
            // Romana 2.0's GET /topology wrote a host's tags as `assignment`; accept both.
            let mut tags = e.assignment.clone();
            tags.extend(e.tags.clone());
            Some(GroupOrHostSpec::Host(HostSpec {
                name,
                ip,
                ipv6,
                agent_port: e.agent_port.unwrap_or(DEFAULT_AGENT_PORT),
                tags,
            }))
        }
        None => {
            let name = c.take(|| format!("{at}.name"), GroupName::new(e.name.clone()));
            let bgp = convert_bgp(c, at, e);
            let groups = convert_list(c, &format!("{at}.groups"), e.groups.as_deref().unwrap_or(&[]));
            Some(GroupOrHostSpec::Group(GroupSpec {
                name: name?,
                assignment: e.assignment.clone(),
                routing: e.routing.clone(),
                bgp,
                groups,
            }))
        }
    }
}

/// Renders the current topology, as `GET /topology` answers: one map per network (each network
/// has its own copy of the tree and its own hosts), with every group's carved `cidr`, the hosts
/// in their groups, and padding groups left out.
pub fn render(ipam: &Ipam) -> TopologyRequest {
    let hosts: HostInfo =
        ipam.hosts().into_iter().map(|h| (h.name, (h.ip, h.ipv6, h.agent_port, h.tags))).collect();
    let mut networks = Vec::new();
    let mut topologies = Vec::new();
    let groups = ipam.groups();
    for n in ipam.networks() {
        let spec = ipam.spec().networks.iter().find(|s| s.name == n.name);
        networks.push(NetworkDefinition {
            name: n.name.to_string(),
            cidr: n.cidr.to_string(),
            block_mask: Some(n.block_mask),
            tenants: n.tenants.iter().map(ToString::to_string).collect(),
            classic: match spec.map(|s| s.layout) {
                Some(LayoutSpec::Classic(b)) => Some(ClassicDefinition {
                    host_bits: b.host_bits,
                    tenant_bits: b.tenant_bits,
                    segment_bits: b.segment_bits,
                    endpoint_bits: b.endpoint_bits,
                    endpoint_space_bits: b.endpoint_space_bits,
                }),
                _ => None,
            },
            nat_outgoing: spec.is_none_or(|s| s.nat_outgoing),
        });
        let mine: Vec<&GroupView> = groups.iter().filter(|g| g.network == n.name).collect();
        if let Some(root) = mine.first() {
            // A map of several elements gets an unnamed root; one element *is* the root.
            let top = mine.iter().filter(|g| g.depth == 1).count();
            let map = if root.name.as_str().is_empty() && routing_and_assignment_empty(root) && top > 1 {
                children(&mine, 0, &hosts)
            } else {
                vec![render_group(&mine, 0, &hosts)]
            };
            topologies.push(TopologyDefinition { networks: vec![n.name.to_string()], map });
        }
    }
    let no_nat = ipam.spec().no_nat.iter().map(ToString::to_string).collect();
    TopologyRequest { networks, topologies, no_nat }
}

fn routing_and_assignment_empty(g: &GroupView) -> bool {
    g.routing.is_empty() && g.assignment.is_empty() && g.bgp.is_none()
}

type HostInfo = BTreeMap<HostName, (IpAddr, Option<Ipv6Addr>, u16, BTreeMap<String, String>)>;

fn children(groups: &[&GroupView], at: usize, hosts: &HostInfo) -> Vec<GroupOrHost> {
    let depth = groups[at].depth;
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate().skip(at + 1) {
        if g.depth <= depth {
            break;
        }
        if g.depth == depth + 1 && !g.padding {
            out.push(render_group(groups, i, hosts));
        }
    }
    out
}

fn render_group(groups: &[&GroupView], at: usize, hosts: &HostInfo) -> GroupOrHost {
    let g = groups[at];
    let members = if g.leaf {
        g.hosts
            .iter()
            .map(|h| {
                let (ip, ipv6, port, tags) =
                    hosts.get(h).cloned().unwrap_or((IpAddr::from([0, 0, 0, 0]), None, 0, BTreeMap::new()));
                GroupOrHost {
                    name: h.to_string(),
                    ip: Some(ip.to_string()),
                    ipv6: ipv6.map(|a| a.to_string()),
                    agent_port: Some(port),
                    tags,
                    ..GroupOrHost::default()
                }
            })
            .collect()
    } else {
        children(groups, at, hosts)
    };
    GroupOrHost {
        name: g.name.to_string(),
        assignment: g.assignment.clone(),
        routing: g.routing.clone(),
        bgp: g.bgp.as_ref().map(BgpDefinition::from_spec),
        cidr: Some(g.cidr.to_string()),
        groups: Some(members),
        ..GroupOrHost::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bad_fields_are_named() {
        let err = parse(
            r#"{"networks":[{"name":"n 1","cidr":"10.0.0.1/8"}],
                "topologies":[{"networks":["n1"],"map":[{"groups":[{"name":"h","ip":"300.1.1.1"}]}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(err.0[0].starts_with("networks[0].name: invalid network name"), "{err}");
        assert!(err.0[1].starts_with("networks[0].cidr: CIDR \"10.0.0.1/8\" has host bits set"), "{err}");
        assert!(err.0[2].starts_with("topologies[0].map[0].groups[0].ip: malformed address"), "{err}");
    }

    /// A two-level BGP map: `root` is the spines' bgp section, `rack` the one rack's.
    fn bgp_topology(root: &str, rack: &str) -> String {
        format!(
            r#"{{"networks":[{{"name":"n","cidr":"10.1.0.0/16"}}],
                "topologies":[{{"networks":["n"],"map":[{{"name":"spines",{root}"groups":[
                    {{"name":"rack-1",{rack}"groups":[]}}]}}]}}]}}"#
        )
    }

    #[test]
    fn bgp_fields_are_checked_with_their_path() {
        const ROOT: &str =
            r#""routing":"bgp","bgp":{"asn":65000,"routers":["192.168.254.1","192.168.253.1"]},"#;
        // (root section, rack section, expected problems as substrings; none = accepted)
        let cases: &[(&str, &str, &[&str])] = &[
            (
                ROOT,
                r#""routing":"bgp","bgp":{"asn":65001,"routers":["192.168.1.1"],"uplinks":["192.168.254.11","192.168.253.11"],"host_asn":65101},"#,
                &[],
            ),
            ("", r#""routing":"static","#, &[]),
            ("", r#""routing":"foo","#, &[]),
            (
                ROOT,
                r#""routing":"bgp","#,
                &["map[0].groups[0].bgp: routing is bgp but the group has no bgp section"],
            ),
            (
                ROOT,
                r#""bgp":{"asn":65001,"routers":["192.168.1.1"]},"#,
                &["map[0].groups[0].bgp: given but routing is \"\""],
            ),
            (
                ROOT,
                r#""routing":"bgp","bgp":{"asn":0,"routers":[]},"#,
                &[
                    "groups[0].bgp.asn: AS number 0 is reserved",
                    "groups[0].bgp.routers: a bgp group needs at least one router",
                ],
            ),
            (
                ROOT,
                r#""routing":"bgp","bgp":{"asn":65001,"routers":["192.168.1.300"],"uplinks":["192.168.254.11","x"]},"#,
                &[
                    "bgp.routers[0]: malformed address \"192.168.1.300\"",
                    "bgp.uplinks[1]: malformed address \"x\"",
                ],
            ),
            (
                ROOT,
                r#""routing":"bgp","bgp":{"asn":65001,"routers":["192.168.1.1"],"uplinks":["192.168.254.11"]},"#,
                &["groups[0].bgp.uplinks: 1 given, but the parent group has 2 router(s)"],
            ),
            (
                ROOT,
                r#""routing":"bgp","bgp":{"asn":65000,"routers":["192.168.1.1","192.168.1.2"],"uplinks":["192.168.254.11","192.168.253.11"]},"#,
                &[
                    "bgp.routers: a group under a bgp group has one router (2 given)",
                    "bgp.asn: 65000 is the parent group's AS too",
                ],
            ),
            (
                "",
                r#""routing":"bgp","bgp":{"asn":65001,"routers":["192.168.1.1"],"uplinks":["192.168.254.11"]},"#,
                &["groups[0].bgp.uplinks: the parent group does not route with bgp"],
            ),
            (
                r#""routing":"bgp","bgp":{"asn":65000,"routers":["10.0.0.1"],"host_asn":65100},"#,
                "",
                &["map[0].bgp.host_asn: only a leaf group"],
            ),
            (
                ROOT,
                r#""routing":"bgp","bgp":{"asn":65001,"routers":["192.168.1.1"],"uplinks":["192.168.254.11","192.168.253.11"],"reflectors":["192.168.1.11"]},"#,
                &[],
            ),
            (
                ROOT,
                r#""routing":"bgp","bgp":{"asn":65001,"routers":["192.168.1.1"],"uplinks":["192.168.254.11","192.168.253.11"],"host_asn":65101,"reflectors":["192.168.1.11","x","192.168.1.11"]},"#,
                &[
                    "groups[0].bgp.reflectors[1]: malformed address \"x\"",
                    "groups[0].bgp.reflectors: route reflection is iBGP, but host_asn 65101 differs from asn 65001",
                    "groups[0].bgp.reflectors: 192.168.1.11 is listed twice",
                ],
            ),
            (
                r#""routing":"bgp","bgp":{"asn":65000,"routers":["10.0.0.1"],"reflectors":["10.0.0.1"]},"#,
                "",
                &["map[0].bgp.reflectors: only a leaf group's hosts have reflectors"],
            ),
        ];
        for (root, rack, expect) in cases {
            let text = bgp_topology(root, rack);
            match parse(&text) {
                Ok(_) => assert!(expect.is_empty(), "{root} {rack}: accepted, expected {expect:?}"),
                Err(p) => {
                    assert_eq!(p.0.len(), expect.len(), "{root} {rack}: {p}");
                    for (got, want) in p.0.iter().zip(expect.iter()) {
                        assert!(got.contains(want), "{root} {rack}: {got:?} lacks {want:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn bgp_fields_survive_the_round_trip() {
        let text = bgp_topology(
            r#""routing":"bgp","bgp":{"asn":65000,"routers":["192.168.254.1"]},"#,
            r#""routing":"bgp","bgp":{"asn":65001,"routers":["192.168.1.1"],"uplinks":["192.168.254.11"],"host_asn":65101},"#,
        );
        let spec = parse(&text).unwrap();
        let ipam = Ipam::new(spec).unwrap();
        let shown = render(&ipam);
        let root = &shown.topologies[0].map[0];
        assert_eq!(root.bgp.as_ref().map(|b| b.asn), Some(65000));
        let rack = &root.groups.as_ref().unwrap()[0];
        assert_eq!(rack.routing, "bgp");
        assert_eq!(
            rack.bgp,
            Some(BgpDefinition {
                asn: 65001,
                routers: vec!["192.168.1.1".into()],
                uplinks: vec!["192.168.254.11".into()],
                host_asn: Some(65101),
                reflectors: Vec::new(),
            })
        );
        // What GET /topology shows parses back to the same spec.
        assert_eq!(shown.to_spec().unwrap().topologies[0].map, parse(&text).unwrap().topologies[0].map);
    }

    /// Parses a one-network topology with the given network fields and top-level fields, and
    /// checks what comes out: the network's `nat_outgoing` and the `no_nat` list, or problems.
    fn check_nat(network: &str, top: &str, expect: Result<(bool, &[&str]), &[&str]>) {
        let text = format!(
            r#"{{"networks":[{{"name":"n","cidr":"10.1.0.0/16"{network}}}],{top}
                "topologies":[{{"networks":["n"],"map":[{{"name":"r","groups":[]}}]}}]}}"#
        );
        match (parse(&text), expect) {
            (Ok(spec), Ok((nat, no_nat))) => {
                assert_eq!(spec.networks[0].nat_outgoing, nat, "{text}");
                let got: Vec<String> = spec.no_nat.iter().map(ToString::to_string).collect();
                assert_eq!(got, no_nat, "{text}");
                // What GET /topology shows parses back to the same settings.
                let shown = render(&Ipam::new(spec.clone()).unwrap());
                let again = shown.to_spec().unwrap();
                assert_eq!((again.networks[0].nat_outgoing, &again.no_nat), (nat, &spec.no_nat));
                let json = serde_json::to_string(&shown).unwrap();
                assert_eq!(json.contains("nat_outgoing"), !nat, "only false is written: {json}");
            }
            (Err(p), Err(want)) => {
                assert_eq!(p.0.len(), want.len(), "{text}: {p}");
                for (got, w) in p.0.iter().zip(want) {
                    assert!(got.contains(w), "{got:?} lacks {w:?}");
                }
            }
            (got, want) => panic!("{text}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn nat_settings_are_checked_and_round_trip() {
        check_nat("", "", Ok((true, &[])));
        check_nat(r#","nat_outgoing":true"#, "", Ok((true, &[])));
        check_nat(r#","nat_outgoing":false"#, "", Ok((false, &[])));
        check_nat(
            "",
            r#""no_nat":["172.16.0.0/12","10.0.0.0/8","fd00::/8"],"#,
            Ok((true, &["172.16.0.0/12", "10.0.0.0/8", "fd00::/8"])),
        );
        check_nat(r#","nat_outgoing":"no""#, "", Err(&["invalid type: string \"no\", expected a boolean"]));
        check_nat(
            "",
            r#""no_nat":["10.1.2.0/24","192.168.1.1/16","x"],"#,
            Err(&[
                "no_nat[0]: 10.1.2.0/24 lies inside network n (10.1.0.0/16), which is never NATed",
                "no_nat[1]: CIDR \"192.168.1.1/16\" has host bits set",
                "no_nat[2]:",
            ]),
        );
    }

    #[test]
    fn malformed_json_and_unknown_fields() {
        assert!(parse("{").unwrap_err().0[0].contains("EOF while parsing"));
        let e = parse(r#"{"networks":[{"name":"n","cidr":"10.0.0.0/8","blockmask":29}]}"#).unwrap_err();
        assert!(e.0[0].contains("unknown field `blockmask`"), "{e}");
    }
}
