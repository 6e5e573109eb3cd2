//! Helpers shared by the policy crate's tests.
#![allow(dead_code)]

pub mod interp;
