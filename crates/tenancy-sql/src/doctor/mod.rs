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
#[cfg(feature = "postgres")]
mod pg;
#[cfg(feature = "postgres")]
pub use pg::{check_row_level, check_schemas};
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub use sqlite::{check_file_mode, check_sqlite_files, check_sqlite_row_level, sqlite_file_of};
