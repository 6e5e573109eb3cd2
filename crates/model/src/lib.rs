//! Domain types shared by every Romana crate; they carry their invariants so that callers cannot build bad ones.
//!
//! This crate knows nothing about storage, HTTP or the kernel. It has no serde: the boundary crates convert.

mod cidr;
mod names;

pub use cidr::{Cidr, CidrError, Family, addr_value};
pub use names::{AddressName, GroupName, HostName, NameError, NetworkName, SegmentName, TenantName};
