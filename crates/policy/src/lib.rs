//! Romana's policy core, pure: the rule model (`model.rs`), the Kubernetes NetworkPolicy front
//! end (`k8s.rs`), the Romana policy front end (`romana.rs`), default tenant isolation
//! (`isolation.rs`), a direct evaluator (`eval.rs`) that says whether a connection is allowed,
//! and the nftables side: the compiler (`firewall.rs`) into a ruleset (`ruleset.rs`), the
//! kernel's table read back (`nftjson.rs`) and the smallest transaction between them
//! (`nftplan.rs`), and egress NAT's chain in the same table (`nat.rs`). The evaluator is the oracle the compiler is checked against.

pub mod cluster;
mod endpoint_index;
pub mod eval;
pub mod firewall;
pub mod incremental;
pub mod isolation;
pub mod k8s;
pub mod model;
pub mod nat;
pub mod nftjson;
pub mod nftplan;
pub mod nftread;
pub mod romana;
pub mod ruleset;
pub mod vip;

pub use eval::{Endpoint, NamedPort, Probe, World, allowed};
pub use firewall::{FirewallInput, compile};
pub use isolation::{Isolation, implicit_policies};
pub use k8s::from_k8s;
pub use model::{
    Labels, Operator, Peer, PolicyRules, Port, PortRule, Protocol, Requirement, Rule, SEGMENT_LABEL, Scope,
    Selector, TENANT_LABEL,
};
pub use nftplan::{NftPlan, Observed, plan};
pub use romana::from_romana;
pub use ruleset::Ruleset;
