//! Whole-tenant data portability: [`export`](export::export) a tenant to
//! one archive, [`import`](import::import) an archive as a new tenant,
//! [`purge`](purge::purge) a tenant and every trace of it, and
//! [`move`](moving::move_tenant) a tenant's database to another server.

use std::time::Duration;

use crate::app::AppError;

pub mod archive;
mod export;
mod import;
mod moving;
mod purge;

pub use export::export;
pub use import::{ImportRequest, Imported, import};
pub use moving::{MOVING_KEY, MoveOutcome, Resumed, move_tenant, resume_move};
pub use purge::{Purged, purge};

/// Why an export, import, purge or move failed.
#[derive(Debug, thiserror::Error)]
pub enum PortabilityError {
    /// The app could not find the tenant or open its data.
    #[error(transparent)]
    App(#[from] AppError),
    /// The archive is not one `tenancy tenants export` wrote, or was
    /// changed since: nothing of it was kept.
    #[error("{0}")]
    Archive(String),
    /// The operation does not apply (a tenant still provisioning, a slug
    /// taken, another migration version, another strategy); the message
    /// says what to do instead.
    #[error("{0}")]
    Refused(String),
    /// Reading, writing or the database failed; the message says what was
    /// kept and what to do.
    #[error("{0}")]
    Failed(String),
}

impl PortabilityError {
    pub(crate) fn archive(m: impl std::fmt::Display) -> Self {
        Self::Archive(m.to_string())
    }

    pub(crate) fn refused(m: impl std::fmt::Display) -> Self {
        Self::Refused(m.to_string())
    }

    pub(crate) fn failed(m: impl std::fmt::Display) -> Self {
        Self::Failed(m.to_string())
    }
}

/// What a long operation tells its caller while it runs.
pub trait Report: Send + Sync {
    /// `tables` tables are about to be read or written.
    fn start(&self, tables: u64);
    /// One table is done (`verb`: `exported`, `imported`, `copied`…).
    fn table(&self, verb: &str, name: &str, rows: u64, took: Duration);
    /// The tables are done.
    fn finish(&self);
    /// A line for the operator: a warning, or what to do next.
    fn note(&self, line: &str);
}
