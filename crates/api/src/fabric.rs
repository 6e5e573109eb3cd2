//! `GET /fabric` as it arrives: per prefix group, what it announces and the routes its router
//! needs (the route manager's fabric view). Read by the agent and the CLI to render BIRD.

use serde::{Deserialize, Serialize};

use crate::rest::RouteInfo;

/// One prefix group of one network in the fabric view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricGroup {
    pub network: String,
    /// The group's path: `/` for the root, then `/zone-a/rack-1`.
    pub group: String,
    pub cidr: String,
    /// What the group announces to its parent; absent while no host sits below it.
    #[serde(default)]
    pub announce: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RouteInfo>,
}

/// Parses `GET /fabric`'s answer.
pub fn parse(value: serde_json::Value) -> Result<Vec<FabricGroup>, String> {
    serde_json::from_value(value).map_err(|e| format!("fabric view: {e}"))
}
