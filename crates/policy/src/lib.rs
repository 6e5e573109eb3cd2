//! Romana's policy core, pure: the rule model (`model.rs`), the Kubernetes NetworkPolicy front
//! end (`k8s.rs`), the Romana policy front end (`romana.rs`), and a direct evaluator (`eval.rs`) that says whether a connection is allowed.
//! The evaluator is the oracle the nftables compiler is checked against.

pub mod eval;
pub mod k8s;
pub mod model;
pub mod romana;

pub use eval::{Endpoint, NamedPort, Probe, World, allowed};
pub use k8s::from_k8s;
pub use model::{
    Labels, Operator, Peer, PolicyRules, Port, PortRule, Protocol, Requirement, Rule, SEGMENT_LABEL,
    Selector, TENANT_LABEL,
};
pub use romana::from_romana;
