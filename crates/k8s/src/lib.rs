//! romana-k8s: the Kubernetes controller. Pure cores (`map`, `state`, `plan`, `lease`,
//! `intake`) and thin adapters (`watch` for the API server, `romanad` for romanad, `leader` for
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
pub mod watch;
