//! Records as romanad persists them in the store, one small key each. Their JSON is a stored
//! format: add fields with defaults, never rename.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `ipam/blocks/<network>/<cidr>`: a block, its owner and its addresses (ip -> name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub network: String,
    pub cidr: String,
    pub tenant: String,
    pub segment: String,
    pub host: String,
    pub addresses: BTreeMap<String, String>,
}

/// `ipam/names/<name>`: which address a name holds (makes names unique across replicas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub ip: String,
    pub network: String,
    pub block: String,
}

/// `ipam/hosts/<name>`: a host and where it sits in each network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub ip: String,
    pub agent_port: u16,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `topology` or `dynamic`.
    pub origin: String,
    /// network -> group path.
    #[serde(default)]
    pub placements: BTreeMap<String, String>,
}

/// `tenants/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub name: String,
    #[serde(default)]
    pub external_id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub number: u32,
    /// Next segment number to hand out; segment numbers are never reused.
    #[serde(default)]
    pub next_segment: u32,
    /// `none` (also when absent), `tenant` or `segment`.
    #[serde(default)]
    pub isolation: String,
}

/// `tenants/<tenant>/segments/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub name: String,
    pub tenant: String,
    #[serde(default)]
    pub external_id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub number: u32,
}

/// `ipam/tokens/<token>`: the address name a retried POST with this request token created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
}
