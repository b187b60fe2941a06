//! `tenancy doctor`'s checks: catalog queries that tell whether a live
//! database isolates its tenants as its strategy says (SPEC G1), and the
//! Citus readiness report (SPEC G2). Every check only reads catalogs (and,
//! on SQLite, file modes): the doctor changes nothing.
//!
//! The vocabulary (check ids, severities, the report) is
//! [`tenancy_core::doctor`].

pub use tenancy_core::doctor::{Check, Finding, Report, Severity};

#[cfg(feature = "postgres")]
pub mod citus;
#[cfg(feature = "postgres")]
mod pg_database;
#[cfg(feature = "postgres")]
pub use pg_database::check_databases;
