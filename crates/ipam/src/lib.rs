//! Romana's IPAM core: topology-aware address allocation that aggregates by prefix group.
//!
//! Pure: no I/O, no clock, no randomness that reaches an output; the same calls give the same
//! addresses. Networks are carved into prefix groups by a topology map (or laid out with the
//! classic host/tenant/segment bit fields), hosts join groups, blocks of addresses belong to a
//! (tenant, segment) on one host, and routes aggregate along the tree.
//!
//! ```
//! use romana_ipam::{AllocRequest, Ipam, spec::*};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = TopologySpec {
//!     networks: vec![NetworkSpec {
//!         name: "net1".parse()?, cidr: "10.0.0.0/16".parse()?, block_mask: Some(29),
//!         tenants: vec![], layout: LayoutSpec::Blocks, nat_outgoing: true,
//!     }],
//!     topologies: vec![MapSpec { networks: vec!["net1".parse()?], map: vec![GroupOrHostSpec::Group(GroupSpec::default())] }],
//!     no_nat: vec![],
//! };
//! let mut ipam = Ipam::new(spec)?;
//! ipam.add_host(HostSpec::new("h1".parse()?, "192.168.0.1".parse()?))?;
//! let a = ipam.allocate(&AllocRequest { name: "pod1".parse()?, host: "h1".parse()?, tenant: "t".parse()?, segment: "".parse()? })?;
//! assert_eq!(a.ip.to_string(), "10.0.0.0");
//! # Ok(()) }
//! ```

mod aggregate;
mod alloc;
mod blackout;
mod block;
mod block_index;
mod chunked;
mod classic;
mod error;
mod host_registry;
mod hosts;
mod ids;
mod merge;
mod names;
mod route_plan;
mod route_stamps;
mod routes;
pub mod spec;
mod stack;
mod state;
mod topology;
mod view;

pub use aggregate::{aggregate, lookup as route_lookup};
pub use alloc::{AllocRequest, Allocation, AllocationsCursor, Released};
pub use classic::ClassicAddress;
pub use error::{IpamError, TopologyProblem};
pub use host_registry::HostOrigin;
pub use hosts::{HostPlacement, ReleasedAddress};
pub use merge::TopologyChange;
pub use route_plan::RoutePlan;
pub use routes::{GroupRoutes, HostRoutes, Route, RouteTarget};
pub use stack::{V6_SUFFIX, stack_name};
pub use state::Ipam;
pub use topology::{MAX_DEPTH, default_block_mask};
pub use view::{BlockView, GroupView, HostView, NetworkView};
