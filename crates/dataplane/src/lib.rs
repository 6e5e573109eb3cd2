//! Pure host dataplane core: from what an agent knows about its host to the kernel objects the
//! host should have, and from what the kernel has to the plan that converges it. No netlink, no
//! clock, no I/O: the agent observes, calls [`compile`] and [`diff`], and applies the [`Plan`].

mod compile;
pub mod fastpath;
mod plan;
mod state;

pub use compile::{CompileError, HostView, LocalEndpoint, PeerRoute, compile};
pub use plan::{Plan, Step, diff, reachable};
pub use state::{HostState, LINK_PREFIX, LinkKind, LinkName, LinkNameError, NextHop, ROUTE_PROTOCOL};
