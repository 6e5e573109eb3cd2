//! romana-k8s: the Kubernetes controller. Pure cores (`map`, `state`, `plan`, `lease`,
//! `intake`, `svc`, `vip_plan`, `write`) and thin adapters (`watch` for the API server, `svc_report` for
//! Services' VIP outcome and Events, `romanad` for romanad, `leader` for
//! the Lease, `serve` for /metrics), joined by `controller`'s loop.

pub mod controller;
pub mod intake;
pub mod leader;
pub mod lease;
pub mod map;
pub mod metrics;
pub mod permissions;
pub mod plan;
pub mod romanad;
pub mod serve;
pub mod state;
pub mod svc;
pub mod svc_report;
pub mod vip_plan;
pub mod watch;
pub mod write;
