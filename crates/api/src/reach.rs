//! The wire form of `GET /endpoints/{name}/reach`: who can reach an endpoint, and whom it can
//! reach, on which ports, as the policy evaluator decides it (policies and tenant isolation).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An endpoint's effective ingress and egress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReachInfo {
    pub endpoint: String,
    pub tenant: String,
    pub segment: String,
    pub host: String,
    pub ip: String,
    /// Whether some policy isolates the endpoint in each direction (without one, everything is
    /// allowed in that direction).
    pub isolated_ingress: bool,
    pub isolated_egress: bool,
    /// The policies that select the endpoint (implicit isolation policies too, as `romana-isolation-*`).
    pub policies: Vec<SelectingPolicy>,
    /// Who can open connections to the endpoint: peers with at least one allowed port. A
    /// connection needs the peer's egress and the endpoint's ingress.
    pub ingress: Vec<ReachPeer>,
    /// Whom the endpoint can open connections to (the far side's ingress included).
    pub egress: Vec<ReachPeer>,
    /// Stored objects left out because they no longer compile (each names the object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectingPolicy {
    pub id: String,
    pub tenant: String,
    /// `ingress`, `egress`, or both: the directions it isolates the endpoint in.
    pub directions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReachPeer {
    /// `endpoint`, `host` (the endpoint's own host), `cidr` (an address in a CIDR a rule names)
    /// or `outside` (any other address).
    pub kind: String,
    /// The endpoint's name, the host's name, the CIDR, or `*`.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// What is allowed, one entry per protocol: `TCP 80`, `TCP 8000-8080, 9090`, `UDP all`,
    /// `ICMP echo`.
    pub ports: Vec<String>,
}
