//! Pure mapping of Kubernetes objects to what romanad holds: Namespace -> tenant, Pod -> pod
//! record, Node -> host, NetworkPolicy -> romanad's NetworkPolicy. No I/O, no clock.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy as K8sNetpol;
use romana_api::netpol::NetworkPolicy;
use romana_api::rest::{EndpointPort, PodInfo, TenantRequest};

/// The label (tenants) and tag (hosts) that mark what this controller owns: resync deletes only
/// objects carrying it, never what an operator made by hand.
pub const MANAGED_BY: &str = "romana.io/managed-by";
pub const MANAGER: &str = "romana-k8s";
pub const ISOLATION_ANNOTATION: &str = "romana.io/isolation";
pub const SEGMENT_ANNOTATION: &str = "romana.io/segment";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The host tag holding a node's IPv6 InternalIP when it also has an IPv4 one (a host record
/// holds one address: the IPv4 one).
pub const IPV6_TAG: &str = "romana.io/ipv6";

/// Why an object cannot be mapped (it is logged and skipped; the others go on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("{kind} without metadata.name")]
    NoName { kind: &'static str },
    #[error("{kind} {name} without metadata.namespace")]
    NoNamespace { kind: &'static str, name: String },
    #[error("namespace {name}: annotation {ISOLATION_ANNOTATION}={value:?} is not none, tenant or segment")]
    Isolation { name: String, value: String },
    #[error("node {name} has no InternalIP address")]
    NoInternalIp { name: String },
    #[error("pod {namespace}/{name}: containerPort {port_name} has port {port}, outside 1-65535")]
    Port { namespace: String, name: String, port_name: String, port: i32 },
    #[error("network policy {namespace}/{name} cannot be read: {detail}")]
    Netpol { namespace: String, name: String, detail: String },
}

/// A namespace's tenant: labels are the namespace's plus the ownership mark.
pub fn tenant(ns: &Namespace) -> Result<TenantRequest, MapError> {
    let name =
        ns.metadata.name.clone().filter(|n| !n.is_empty()).ok_or(MapError::NoName { kind: "namespace" })?;
    let isolation = ns
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ISOLATION_ANNOTATION))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let isolation = match isolation.as_str() {
        "" | "none" => "none".to_owned(),
        "tenant" | "segment" => isolation,
        _ => return Err(MapError::Isolation { name, value: isolation }),
    };
    let mut labels: BTreeMap<String, String> = ns.metadata.labels.clone().unwrap_or_default();
    labels.insert(MANAGED_BY.into(), MANAGER.into());
    Ok(TenantRequest { name, external_id: ns.metadata.uid.clone().unwrap_or_default(), labels, isolation })
}

/// A pod's record; `None` for host-network pods (CNI never sees them).
pub fn pod(p: &Pod) -> Result<Option<PodInfo>, MapError> {
    let name = p.metadata.name.clone().filter(|n| !n.is_empty()).ok_or(MapError::NoName { kind: "pod" })?;
    let namespace = p
        .metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| MapError::NoNamespace { kind: "pod", name: name.clone() })?;
    let spec = p.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Ok(None);
    }
    let mut ports = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for cp in c.ports.iter().flatten() {
            let Some(port_name) = cp.name.clone().filter(|n| !n.is_empty()) else { continue };
            let port =
                u16::try_from(cp.container_port).ok().filter(|p| *p > 0).ok_or_else(|| MapError::Port {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    port_name: port_name.clone(),
                    port: cp.container_port,
                })?;
            let protocol = cp.protocol.clone().unwrap_or_else(|| "TCP".into()).to_ascii_uppercase();
            ports.push(EndpointPort { name: port_name, protocol, port });
        }
    }
    ports.sort_by(|a, b| (&a.name, &a.protocol, a.port).cmp(&(&b.name, &b.protocol, b.port)));
    ports.dedup();
    let segment = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SEGMENT_ANNOTATION))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Ok(Some(PodInfo {
        namespace,
        name,
        uid: p.metadata.uid.clone().unwrap_or_default(),
        host: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ports,
        segment,
    }))
}

/// What a node's host should be: its IP and tags (ownership mark included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDesired {
    pub name: String,
    pub ip: String,
    pub tags: BTreeMap<String, String>,
}

/// A node's host: the IPv4 InternalIP (or the IPv6 one when it has no IPv4; with both, the IPv6
/// one goes into the tag `romana.io/ipv6`), and topology tags from the zone, region and rack labels.
pub fn host(n: &Node, rack_label: &str) -> Result<HostDesired, MapError> {
    let name = n.metadata.name.clone().filter(|n| !n.is_empty()).ok_or(MapError::NoName { kind: "node" })?;
    let internal: Vec<std::net::IpAddr> = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.trim().parse().ok())
        .collect();
    let v4 = internal.iter().find(|a| a.is_ipv4());
    let v6 = internal.iter().find(|a| a.is_ipv6());
    let ip = v4.or(v6).ok_or_else(|| MapError::NoInternalIp { name: name.clone() })?;
    let mut tags = BTreeMap::new();
    let labels = n.metadata.labels.clone().unwrap_or_default();
    for (label, tag) in [(ZONE_LABEL, "zone"), (REGION_LABEL, "region"), (rack_label, "rack")] {
        if let Some(v) = labels.get(label) {
            tags.insert(tag.to_owned(), v.clone());
        }
    }
    if let (Some(_), Some(v6)) = (v4, v6) {
        tags.insert(IPV6_TAG.into(), v6.to_string());
    }
    tags.insert(MANAGED_BY.into(), MANAGER.into());
    Ok(HostDesired { name, ip: ip.to_string(), tags })
}

/// A NetworkPolicy as romanad stores it (the same reading `POST /networkpolicies` makes of the
/// JSON), with the JSON to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetpolDesired {
    pub policy: NetworkPolicy,
    pub json: serde_json::Value,
    /// `metadata.uid`, for the Event that reports a refusal.
    pub uid: String,
}

pub fn netpol(np: &K8sNetpol) -> Result<NetpolDesired, MapError> {
    let name = np
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(MapError::NoName { kind: "networkpolicy" })?;
    let namespace = np
        .metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| MapError::NoNamespace { kind: "networkpolicy", name: name.clone() })?;
    let json = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": name, "namespace": namespace },
        "spec": np.spec.clone().unwrap_or_default(),
    });
    let policy: NetworkPolicy = serde_json::from_value(json.clone()).map_err(|e| MapError::Netpol {
        namespace,
        name,
        detail: e.to_string(),
    })?;
    Ok(NetpolDesired { policy, json, uid: np.metadata.uid.clone().unwrap_or_default() })
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
