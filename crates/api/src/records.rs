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
    /// The IPv6 underlay address beside an IPv4 `ip`; absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
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

/// `auth/users/<name>`: a user or service account. `roles` are `admin`, `service`, `tenant`
/// (romana-auth's `Role` names); a record naming another role is unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Hosts a service user acts for (an agent); empty for admins, tenants and controllers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// `auth/keys/<kid>`: a verifying key as published: public only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub kid: String,
    /// base64url Ed25519 public key.
    pub public: String,
    pub created: u64,
    /// When its replica stopped signing with it (rotation, or migration of an old record); it is
    /// deleted a refresh token's lifetime later, when every token it signed has expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<u64>,
    /// Verifies nothing: a key whose private half was in the store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

/// `auth/keys/<kid>` as read: a key record of any version (before `KeyRecord`, records held the
/// private key as base64url PKCS#8 in `pkcs8`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredKeyRecord {
    #[serde(default)]
    pub public: Option<String>,
    #[serde(default)]
    pub pkcs8: Option<String>,
    pub created: u64,
    #[serde(default)]
    pub retired: Option<u64>,
    #[serde(default)]
    pub revoked: bool,
}
