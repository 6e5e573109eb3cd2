//! The topology request (`POST /topology`, topology files): Romana 2.0's `TopologyUpdateRequest`
//! JSON, plus a `classic` network option, converted to and from `romana_ipam::spec`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use romana_ipam::spec::{
    ClassicBits, DEFAULT_AGENT_PORT, GroupOrHostSpec, GroupSpec, HostSpec, LayoutSpec, MapSpec, NetworkSpec,
    TopologySpec,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_port: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assignment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub routing: String,
    /// Output only: the group's carved prefix. Ignored on input, as in Romana 2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// `None` for hosts; `Some(vec![])` for an empty leaf group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<GroupOrHost>>,
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
                networks.push(NetworkSpec { name, cidr, block_mask: n.block_mask, tenants, layout });
            }
        }
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
            let map = convert_list(&mut c, &format!("topologies[{i}].map"), &t.map);
            topologies.push(MapSpec { networks: nets, map });
        }
        if c.0.is_empty() { Ok(TopologySpec { networks, topologies }) } else { Err(Problems(c.0)) }
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
            if e.groups.is_some() {
                c.0.push(format!("{at}: a host (with ip) cannot have groups"));
            }
            let (name, ip) = (name?, ip?);
            // Romana 2.0's GET /topology wrote a host's tags as `assignment`; accept both.
            let mut tags = e.assignment.clone();
            tags.extend(e.tags.clone());
            Some(GroupOrHostSpec::Host(HostSpec {
                name,
                ip,
                agent_port: e.agent_port.unwrap_or(DEFAULT_AGENT_PORT),
                tags,
            }))
        }
        None => {
            let name = c.take(|| format!("{at}.name"), GroupName::new(e.name.clone()))?;
            let groups = convert_list(c, &format!("{at}.groups"), e.groups.as_deref().unwrap_or(&[]));
            Some(GroupOrHostSpec::Group(GroupSpec {
                name,
                assignment: e.assignment.clone(),
                routing: e.routing.clone(),
                groups,
            }))
        }
    }
}

/// Renders the current topology, as `GET /topology` answers: one map per network (each network
/// has its own copy of the tree and its own hosts), with every group's carved `cidr`, the hosts
/// in their groups, and padding groups left out.
pub fn render(ipam: &Ipam) -> TopologyRequest {
    let hosts: BTreeMap<HostName, (IpAddr, u16, BTreeMap<String, String>)> =
        ipam.hosts().into_iter().map(|h| (h.name, (h.ip, h.agent_port, h.tags))).collect();
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
    TopologyRequest { networks, topologies }
}

fn routing_and_assignment_empty(g: &GroupView) -> bool {
    g.routing.is_empty() && g.assignment.is_empty()
}

type HostInfo = BTreeMap<HostName, (IpAddr, u16, BTreeMap<String, String>)>;

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
                let (ip, port, tags) =
                    hosts.get(h).cloned().unwrap_or((IpAddr::from([0, 0, 0, 0]), 0, BTreeMap::new()));
                GroupOrHost {
                    name: h.to_string(),
                    ip: Some(ip.to_string()),
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

    #[test]
    fn malformed_json_and_unknown_fields() {
        assert!(parse("{").unwrap_err().0[0].contains("EOF while parsing"));
        let e = parse(r#"{"networks":[{"name":"n","cidr":"10.0.0.0/8","blockmask":29}]}"#).unwrap_err();
        assert!(e.0[0].contains("unknown field `blockmask`"), "{e}");
    }
}
