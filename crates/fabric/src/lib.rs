//! The BGP fabric, pure: the route manager's fabric view and the topology's BGP parameters as
//! BIRD configuration (`bird.rs`) for hosts and routers, and the agent's decision of what to do
//! with a rendered file (`plan.rs`). No I/O: the agent and the CLI fetch, write and exec.

pub mod bird;
pub mod plan;
pub mod reflect;
pub mod view;
pub mod vip;

use std::net::IpAddr;

pub use bird::{Options, render_host, render_host_with, render_router};
pub use plan::{BirdStep, decide};
pub use view::Fabric;
pub use vip::HostVip;

/// What cannot be rendered, with the data that says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FabricError {
    #[error("{what}: malformed {value}")]
    Malformed { what: String, value: String },
    #[error("host {0:?} is in no leaf group of the topology")]
    UnknownHost(String),
    #[error("no prefix group {0:?} in the topology (give its path, e.g. /rack-1)")]
    UnknownGroup(String),
    #[error("prefix group {0:?} does not route with bgp (its routing is not \"bgp\")")]
    NotBgp(String),
    #[error("group {group} has routers {routers:?}; say which one with --router")]
    WhichRouter { group: String, routers: Vec<IpAddr> },
    #[error("{router} is not a router of group {group} (its routers: {routers:?})")]
    NotARouter { group: String, router: IpAddr, routers: Vec<IpAddr> },
    #[error("{what}: {addr} is IPv6; BGP sessions are rendered over IPv4 only for now")]
    Ipv6Session { what: String, addr: IpAddr },
    #[error(
        "reflector {reflector} of group {group} is neither one of its routers {routers:?} nor one of its hosts {hosts:?}"
    )]
    ReflectorOutside { group: String, reflector: IpAddr, routers: Vec<IpAddr>, hosts: Vec<String> },
    #[error("group {group} names routers and hosts as reflectors; name one kind")]
    ReflectorMixed { group: String },
    #[error(
        "group {group} has reflectors, but its hosts speak AS {host_asn} and its routers AS {asn}: route reflection is iBGP"
    )]
    ReflectorAsn { group: String, asn: u32, host_asn: u32 },
}
