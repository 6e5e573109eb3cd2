//! Romana's wire formats. The only crate (with the store's records) that derives serde: the cores
//! know nothing of JSON, and conversions here name the field that was wrong.

pub mod agent;
pub mod diagnose;
pub mod netpol;
pub mod policy;
pub mod query;
pub mod reach;
pub mod records;
pub mod rest;
pub mod route_wire;
pub mod topology;
pub mod underlay;
pub mod vip;
pub mod watch;

/// Everything wrong with a request body, each problem prefixed with the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for Problems {}
