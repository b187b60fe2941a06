//! Test support shared by the tenancy-core test binaries.

#![allow(dead_code, clippy::unwrap_used)]

mod tenants;
#[allow(unused_imports)]
pub use tenants::*;
