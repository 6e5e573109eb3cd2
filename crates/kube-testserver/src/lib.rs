//! A Kubernetes API server for tests: discovery, list/watch, create/replace/patch/delete of
//! generic JSON objects for namespaces, pods, nodes, services (with their status subresource),
//! events, networkpolicies and leases,
//! following the documented API contract; knows nothing of Romana.
//!
//! Simplifications versus a real kube-apiserver are listed in ARCHITECTURE.md
//! ("crates/kube-testserver").

mod defaults;
mod http;
mod ids;
mod jsonpatch;
mod patch;
mod resources;
mod selector;
mod server;
mod services;
mod shared;
mod status;
mod store;
mod watch;

pub use server::{ApiServer, Options, kubeconfig};
pub use shared::ApiRequest;
pub use status::ApiError;
