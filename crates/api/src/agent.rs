//! The agent's local API on its Unix socket (`/run/romana/agent.sock`): what romana-cni sends for
//! ADD, DEL, CHECK, GC and STATUS, and what comes back. Errors carry CNI error codes so the plugin
//! passes them through unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// CNI error codes the agent answers with (CNI spec, "Error" section).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Container unknown or does not exist (e.g. its network namespace is gone).
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, ...).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (netlink, files).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (stdin is not the expected JSON).
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config (unknown tenant or segment, bad field).
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: romanad or the agent is unreachable or busy; nothing was changed.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (cannot serve ADD now).
    pub const NOT_AVAILABLE: u32 = 50;
    /// Anything else (CHECK found a difference, a foreign route holds the address...).
    pub const OTHER: u32 = 999;
}

/// ADD and CHECK: one interface of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// The CNI network name (`name` in the config); part of the address name, so GC is per network.
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// The container's network namespace file (`CNI_NETNS`).
    pub netns: String,
    pub tenant: String,
    #[serde(default)]
    pub segment: String,
    /// Labels policies select the endpoint by (registered with romanad before ADD answers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// CHECK: the address the runtime was given (from `prevResult`; the first of `ips`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// CHECK: every address `prevResult` gave this interface (a dual-stack pod's two). Empty from
    /// a plugin that sends `ip` only; then `ip` alone is compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// The Kubernetes pod kubelet started (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID` in
    /// `CNI_ARGS`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// The runtime gave the labels itself (`ROMANA_LABELS` in `CNI_ARGS`, even empty): the
    /// endpoint is registered with them and no pod record is waited for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runtime_labels: bool,
}

/// A Kubernetes pod as kubelet names it to the CNI plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// `K8S_POD_UID`; empty when the runtime does not pass it (then any record of the name is it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

impl PodRef {
    /// `namespace/name`, as `EndpointInfo::pod` holds it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What ADD configured: enough for every CNI result version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub host_link: String,
    pub host_mac: String,
    pub ifname: String,
    pub pod_mac: String,
    pub netns: String,
    pub ip: String,
    pub prefix_len: u8,
    pub gateway: String,
    /// The IPAM address name (`cni:<network>:<container id>:<ifname>`).
    pub address_name: String,
    /// Every address of the pod, `ip` first (a dual-stack pod: IPv4 then IPv6). An agent older
    /// than dual-stack sends none: then `ip`, `prefix_len` and `gateway` are the only one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<AttachedIp>,
}

/// One address of an attached pod, with its route length and next hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedIp {
    pub ip: String,
    pub prefix_len: u8,
    pub gateway: String,
}

impl Attached {
    /// The pod's addresses: `ips`, or the single `ip` of an agent that sends no `ips`.
    pub fn addresses(&self) -> Vec<AttachedIp> {
        if self.ips.is_empty() {
            vec![AttachedIp {
                ip: self.ip.clone(),
                prefix_len: self.prefix_len,
                gateway: self.gateway.clone(),
            }]
        } else {
            self.ips.clone()
        }
    }
}

/// DEL: idempotent; `netns` may be empty (the runtime already removed the namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachRequest {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub netns: String,
}

/// GC (CNI 1.1): everything of `network` on this host not in `valid` goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    pub network: String,
    pub valid: Vec<ValidAttachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidAttachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// IPAM address names released.
    pub released: Vec<String>,
    /// Host links removed.
    pub links_removed: Vec<String>,
}

/// Every error the agent's socket answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentError {
    pub code: u32,
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// The IPAM address name of one container interface on one CNI network.
pub fn address_name(network: &str, container_id: &str, ifname: &str) -> String {
    format!("cni:{network}:{container_id}:{ifname}")
}

/// The name of a dual-stack endpoint's IPv6 address (and of its IPv6 endpoint record): its
/// address name with the IPAM's `#v6` (`romana_ipam::V6_SUFFIX`).
pub fn v6_address_name(name: &str) -> String {
    format!("{name}{}", romana_ipam::V6_SUFFIX)
}

/// The endpoint's own address name for `name`, which may be its IPv6 address's (`#v6`).
pub fn stack_base(name: &str) -> &str {
    name.strip_suffix(romana_ipam::V6_SUFFIX).unwrap_or(name)
}

/// The prefix of every address name of `network`, for GC.
pub fn address_prefix(network: &str) -> String {
    format!("cni:{network}:")
}
