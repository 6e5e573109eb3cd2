//! Query strings romanad reads (and the one small body of Romana 2.0's `DELETE /policies`), so
//! that every wire shape, even a query, is a type here and romanad derives no serde of its own.

use serde::{Deserialize, Serialize};

/// `GET /watch?from=R&prefix=P`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// Text, parsed by romanad: so that any number (even past `i64`) gets an error body naming it.
    #[serde(default)]
    pub from: Option<String>,
    /// Below the store prefix, e.g. `ipam/`, `policies/`; empty for everything the caller may read.
    #[serde(default)]
    pub prefix: String,
}

/// `POST /addresses?RequestToken=T` (Romana 2.0's spelling; `request_token` also read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenQuery {
    #[serde(rename = "RequestToken", alias = "request_token")]
    pub request_token: Option<String>,
}

/// Romana 2.0's `DELETE /address?addressName=N`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseQuery {
    #[serde(rename = "addressName")]
    pub address_name: Option<String>,
}

/// `DELETE /blackouts?cidr=C`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CidrQuery {
    pub cidr: Option<String>,
}

/// Romana 2.0's `DELETE /policies` with a body `{"id": ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyIdRequest {
    pub id: String,
}
