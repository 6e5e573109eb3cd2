//! The store: where Romana's ground truth lives. A small etcd-shaped API (keys with revisions,
//! transactions with compares, watches that resume from a revision, leases with a TTL) and its
//! backends: `MemStore` (tests), `EmbeddedStore` (the default: one crash-safe file), and etcd (in
//! `romana-store-etcd`). The same conformance suite (`conformance`) runs against each.
//!
//! Knows nothing about IPAM, policies or HTTP; values are bytes.

pub mod conformance;
mod embedded;
mod engine;
pub mod follow;
mod local;
mod mem;
pub mod private;
mod types;
mod wal;

pub use embedded::{EmbeddedOptions, EmbeddedStore, Recovery};
pub use mem::MemStore;
pub use types::*;
