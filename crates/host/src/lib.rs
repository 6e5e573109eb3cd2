//! The only crate that changes a kernel: reads Romana's marked objects over netlink into a
//! `HostState` and applies a `Plan` step by step; plumbs endpoints for the CNI path; sets the
//! forwarding sysctls; reads and writes our nftables table (`nft.rs`, through libnftables where it
//! loads: `nftlib.rs`), and asks whether egress NAT's chain can load here (`nat.rs`). Knows nothing of IPAM,
//! policy or romanad.

mod bpf;
mod endpoint;
mod fastpath;
mod fastprog;
mod kernel;
pub mod nat;
mod netns;
pub mod nft;
mod nft_error;
mod nftlib;
pub mod nftnl;
pub mod nftread;
mod nl;
mod sysctl;
mod vm;

pub use bpf::BpfError;
pub use endpoint::{
    Attachment, EndpointError, EndpointSpec, IPV6_GATEWAY, PlumbTimes, PodAddress, attach, check, detach,
    endpoint_links, host_link_name,
};
pub use fastpath::{
    Blockers, DELIVER, FastPath, FastPathView, Program, Programs, SEND, detach_marked, fast_path_blockers,
    tcx_program_names,
};
pub use kernel::{GatewayFlavor, HostError, Kernel};
pub use netns::{NetnsError, in_netns, in_netns_path, named};
pub use sysctl::{SysctlError, enable_forwarding};
pub use vm::{VmError, attach_vm, detach_vm};
