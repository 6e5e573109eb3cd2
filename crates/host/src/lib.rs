//! The only crate that changes a kernel: reads Romana's marked objects over netlink into a
//! `HostState` and applies a `Plan` step by step. Knows nothing of IPAM, policy or romanad.

mod kernel;
mod netns;

pub use kernel::{GatewayFlavor, HostError, Kernel};
pub use netns::{NetnsError, in_netns};
