//! Direct evaluation of the rule model: whether one connection (source endpoint, destination
//! endpoint, protocol and port) is allowed. Kubernetes semantics: an endpoint is isolated in a
//! direction when a policy of its tenant selects it for that direction; then some rule of such a
//! policy must allow the traffic. A connection needs both the source's egress and the
//! destination's ingress.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{
    ICMPV6_ALWAYS_ALLOWED, Labels, Peer, PolicyRules, Port, PortRule, Protocol, Rule, Scope, Selector,
    TENANT_LABEL,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// A pod or VM (or, with `is_host`, a host itself as a traffic source or destination).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    pub id: String,
    pub tenant: String,
    /// The endpoint's labels; its segment is the `romana.io/segment` label.
    pub labels: Labels,
    pub ip: Option<IpAddr>,
    pub ports: Vec<NamedPort>,
    /// The host it runs on (for `host` and `local` peers).
    pub host: String,
    /// This is the host itself, not an endpoint on it.
    pub is_host: bool,
}

/// What decides peers: tenants' labels (namespace labels) and the endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct World {
    pub tenants: BTreeMap<String, Labels>,
}

/// One packet's worth of a connection: for ICMP and ICMPv6, `port` is `type * 256 + code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub protocol: Protocol,
    pub port: u16,
}

/// Whether `other` (not a host) is among the endpoints a `Peer::Endpoints` names: its tenant is
/// the policy's (no tenant selector) or matches the tenant selector (tenant labels plus
/// `romana.io/tenant`), and its labels match the endpoint selector.
pub fn endpoints_peer_matches(
    world: &World,
    policy_tenant: &str,
    tenants: Option<&Selector>,
    endpoints: Option<&Selector>,
    other: &Endpoint,
) -> bool {
    tenant_matches(world, policy_tenant, tenants, &other.tenant)
        && endpoints.is_none_or(|sel| sel.matches(&other.labels))
}

/// The tenant half of `endpoints_peer_matches`: the policy's own tenant without a tenant
/// selector, else a known tenant whose labels (plus `romana.io/tenant`) match it.
pub fn tenant_matches(world: &World, policy_tenant: &str, tenants: Option<&Selector>, tenant: &str) -> bool {
    match tenants {
        None => tenant == policy_tenant,
        Some(sel) => world.tenants.get(tenant).is_some_and(|l| {
            let mut l = l.clone();
            l.insert(TENANT_LABEL.into(), tenant.to_owned());
            sel.matches(&l)
        }),
    }
}

fn peer_matches(
    world: &World,
    policy_tenant: &str,
    peer: &Peer,
    target: &Endpoint,
    other: &Endpoint,
) -> bool {
    match peer {
        Peer::Endpoints { .. } | Peer::Local if other.is_host => false,
        Peer::Endpoints { tenants, endpoints } => {
            endpoints_peer_matches(world, policy_tenant, tenants.as_ref(), endpoints.as_ref(), other)
        }
        Peer::Cidr { cidr, except } => {
            other.ip.is_some_and(|ip| cidr.contains_addr(ip) && !except.iter().any(|x| x.contains_addr(ip)))
        }
        Peer::Any => true,
        Peer::Host => other.is_host && other.host == target.host,
        Peer::Local => other.host == target.host,
    }
}

fn port_matches(rule: &PortRule, probe: Probe, dst: &Endpoint) -> bool {
    rule.protocol == probe.protocol
        && match &rule.port {
            None => true,
            Some(Port::Range(a, b)) => (*a..=*b).contains(&probe.port),
            // Resolved against the destination: its port of that name and protocol.
            Some(Port::Named(n)) => {
                dst.ports.iter().any(|p| &p.name == n && p.protocol == probe.protocol && p.port == probe.port)
            }
            Some(Port::Icmp { icmp_type, code }) => {
                probe.port >> 8 == u16::from(*icmp_type)
                    && code.is_none_or(|c| probe.port & 0xff == u16::from(c))
            }
        }
}

fn rule_allows(
    world: &World,
    tenant: &str,
    rule: &Rule,
    target: &Endpoint,
    peer: &Endpoint,
    probe: Probe,
    dst: &Endpoint,
) -> bool {
    rule.peers.as_ref().is_none_or(|ps| ps.iter().any(|p| peer_matches(world, tenant, p, target, peer)))
        && rule.ports.as_ref().is_none_or(|ps| ps.iter().any(|p| port_matches(p, probe, dst)))
}

/// Whether `p` applies to `e`: its tenant's endpoints (never a host) that its target selects.
pub fn selects(p: &PolicyRules, e: &Endpoint) -> bool {
    let in_scope = match p.scope {
        Scope::Tenant => p.tenant == e.tenant,
        Scope::Cidr(c) => e.ip.is_some_and(|ip| c.contains_addr(ip)),
        Scope::All => true,
        Scope::Host => return e.is_host,
    };
    !e.is_host && in_scope && p.target.matches(&e.labels)
}

/// Whether `src` may open a connection to `dst` with `probe` under `policies`. A host (`is_host`)
/// is a target only of host-scoped policies' ingress rules, and only for connections from its own
/// endpoints: what else reaches or leaves the host itself is the host firewall's business.
/// Neighbour discovery and the other `ICMPV6_ALWAYS_ALLOWED` types pass whatever the policies.
pub fn allowed(
    policies: &[PolicyRules],
    world: &World,
    src: &Endpoint,
    dst: &Endpoint,
    probe: Probe,
) -> bool {
    if probe.protocol == Protocol::Icmpv6 && ICMPV6_ALWAYS_ALLOWED.contains(&((probe.port >> 8) as u8)) {
        return true;
    }
    let selects = |p: &PolicyRules, e: &Endpoint| selects(p, e);
    let direction =
        |target: &Endpoint, peer: &Endpoint, rules_of: &dyn Fn(&PolicyRules) -> Option<&Vec<Rule>>| {
            let mut isolated = false;
            for p in policies.iter().filter(|p| selects(p, target)) {
                if let Some(rules) = rules_of(p) {
                    isolated = true;
                    if rules.iter().any(|r| rule_allows(world, &p.tenant, r, target, peer, probe, dst)) {
                        return true;
                    }
                }
            }
            !isolated
        };
    let egress = direction(src, dst, &|p| p.egress.as_ref().filter(|_| p.scope != Scope::Host));
    let from_own_endpoint = !src.is_host && src.host == dst.host;
    egress && (dst.is_host && !from_own_endpoint || direction(dst, src, &|p| p.ingress.as_ref()))
}
