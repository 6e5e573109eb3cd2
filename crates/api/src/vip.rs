//! VIPs on the wire: `POST /vips` (`VipRequest`), the stored and listed record (`VipInfo`, with
//! romanad's assignment), the forwarded ports, and the external ranges addresses are drawn from
//! (`PUT /config/vips`, `VipConfig`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A forwarded port: traffic to the VIP on `port` goes to `target_port` of an endpoint (the same
/// port when 0).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VipPort {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    pub port: u16,
    #[serde(default)]
    pub target_port: u16,
}

/// `POST /vips`: an external address for a service. Without `address` romanad draws the lowest
/// free one from the configured external ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VipRequest {
    #[serde(default)]
    pub address: String,
    /// The service's name (a Kubernetes Service's, or any name).
    pub service: String,
    /// The tenant whose endpoints serve it (a Kubernetes namespace).
    pub tenant: String,
    /// The labels that select the service's endpoints among the tenant's; empty means
    /// `app=<service>`.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Forwarded ports; empty forwards every port unchanged.
    #[serde(default)]
    pub ports: Vec<VipPort>,
    /// The preferred host: it serves the VIP whenever it is alive.
    #[serde(default)]
    pub host: String,
    /// Who asks, when it is the Kubernetes controller: `k8s:<tenant>/<service>` (the only form
    /// accepted), which marks the VIP as the controller's to change and delete. Empty: made by
    /// hand (`api`), which the controller never touches.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
}

/// A VIP as stored under `vips/<address>` and listed: the request (with the selector filled in)
/// and romanad's assignment, which the leader replica rewrites as hosts live and die.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VipInfo {
    pub address: String,
    pub service: String,
    pub tenant: String,
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<VipPort>,
    /// The preferred host, or empty.
    #[serde(default)]
    pub host: String,
    /// Who made it (`api`, or `k8s:<namespace>/<service>` for the controller's).
    #[serde(default)]
    pub origin: String,
    /// Where it is served now (empty: no live host has an endpoint of the service).
    #[serde(default)]
    pub assigned: String,
    /// The host that announces it with a longer AS path, ready to take over the moment the
    /// fabric withdraws the assigned host's route (empty when there is no second such host).
    #[serde(default)]
    pub standby: String,
    /// The endpoints' addresses on the assigned host and on the standby, by host: what each
    /// DNATs to.
    #[serde(default)]
    pub backends: BTreeMap<String, Vec<String>>,
    /// When the assignment last changed (ms since the Unix epoch, romanad's clock).
    #[serde(default)]
    pub since_ms: u64,
}

/// `PUT /config/vips`: the external ranges VIPs are drawn from (and that routers accept /32s in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    #[serde(default)]
    pub ranges: Vec<String>,
}
