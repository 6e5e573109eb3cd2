//! romanad's objects (tenants, Romana policies, NetworkPolicies, endpoints) as the policy core's
//! inputs: the rule model of every policy plus the implicit isolation policies, the tenants'
//! labels, and the endpoints with their segment as a label. Pure. A stored policy that no longer
//! compiles is left out and reported; it never takes the others down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use romana_api::netpol::NetworkPolicy;
use romana_api::policy::Policy;
use romana_api::rest::{EndpointInfo, Tenant};

use crate::eval::{Endpoint, NamedPort, World};
use crate::isolation::{Isolation, implicit_policies};
use crate::model::{PolicyRules, Protocol, SEGMENT_LABEL};
use crate::{from_k8s, from_romana};

/// An endpoint record as the evaluator's endpoint, or the problem when its address is
/// unreadable.
pub fn endpoint(e: &EndpointInfo) -> Result<Endpoint, String> {
    let ip: IpAddr =
        e.ip.parse().map_err(|_| format!("endpoint {}: address {:?} is unreadable", e.name, e.ip))?;
    let mut labels = e.labels.clone();
    if !e.segment.is_empty() {
        labels.insert(SEGMENT_LABEL.to_owned(), e.segment.clone());
    }
    let ports = e
        .ports
        .iter()
        .filter_map(|p| {
            Protocol::parse(&p.protocol).map(|protocol| NamedPort {
                name: p.name.clone(),
                protocol,
                port: p.port,
            })
        })
        .collect();
    Ok(Endpoint {
        id: e.name.clone(),
        tenant: e.tenant.clone(),
        labels,
        ip: Some(ip),
        ports,
        host: e.host.clone(),
        is_host: false,
    })
}

/// A Romana policy's rules, or why it is left out.
pub fn romana_rules(p: &Policy) -> Result<Vec<PolicyRules>, String> {
    from_romana(p).map_err(|e| format!("policy {}: {e}", p.id))
}

/// A NetworkPolicy's rules, or why it is left out.
pub fn netpol_rules(np: &NetworkPolicy) -> Result<PolicyRules, String> {
    from_k8s(np).map_err(|e| format!("networkpolicy {}/{}: {e}", np.metadata.namespace, np.metadata.name))
}

/// The tenants' labels and their isolation as implicit policies (segments from the tenants'
/// records and from the endpoints' segment labels), with problems.
pub fn tenancy(tenants: &[Tenant], endpoints: &[Endpoint]) -> (World, Vec<PolicyRules>, Vec<String>) {
    let mut world = World::default();
    let mut problems = Vec::new();
    let mut modes = BTreeMap::new();
    let mut segments: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in tenants {
        world.tenants.insert(t.name.clone(), t.labels.clone());
        match Isolation::parse(&t.isolation) {
            Some(m) => {
                modes.insert(t.name.clone(), m);
            }
            None => {
                problems.push(format!("tenant {}: unknown isolation {:?}; none applied", t.name, t.isolation))
            }
        }
        segments.entry(t.name.clone()).or_default().extend(t.segments.iter().map(|s| s.name.clone()));
    }
    for e in endpoints {
        if let Some(s) = e.labels.get(SEGMENT_LABEL) {
            segments.entry(e.tenant.clone()).or_default().insert(s.clone());
        }
    }
    (world, implicit_policies(&modes, &segments), problems)
}
