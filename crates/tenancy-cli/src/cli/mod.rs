//! The commands: their arguments (`clap`) and what they print. The work is
//! done by [`crate::ops`].

use std::path::PathBuf;

use clap::Args;

use crate::app::{AppError, Source};

pub mod audit;
pub mod config;
pub mod doctor;
pub mod domains;
pub mod jobs;
pub mod migrate;
pub mod pool;
pub mod portability;
pub mod serve;
pub mod sql;
pub mod table_export;
pub mod tenants;
pub mod usage;

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Database URL: `sqlite://FILE` or `postgres://…` [default: $DATABASE_URL, else sqlite://tenancy.db]
    #[arg(long, global = true, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Configuration file [default: tenancy.yaml if present]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Global {
    /// Where the app is.
    pub fn source(&self) -> Source {
        Source {
            database_url: self.database_url.clone(),
            config: self.config.clone(),
        }
    }
}

/// An error of a command: printed on stderr, exit status 1. Each
/// operation's error is kept as it is.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The app could not be opened, or a tenant was not found.
    #[error(transparent)]
    App(#[from] AppError),
    /// A tenant operation failed.
    #[error(transparent)]
    Tenant(#[from] crate::ops::tenants::TenantOpError),
    /// A domain operation failed.
    #[error(transparent)]
    Domain(#[from] crate::ops::domains::DomainError),
    /// A configuration operation failed.
    #[error(transparent)]
    Config(#[from] crate::ops::config::ConfigError),
    /// A pending-pool operation failed.
    #[error(transparent)]
    Pool(#[from] crate::ops::pool::PoolError),
    /// Migrations failed.
    #[error(transparent)]
    Migrate(#[from] crate::ops::migrate::MigrateError),
    /// A table export failed.
    #[error(transparent)]
    TableExport(#[from] crate::ops::table_export::TableExportError),
    /// A tenant export, import, purge or move failed.
    #[error(transparent)]
    Portability(#[from] crate::ops::portability::PortabilityError),
    /// The audit log could not be read.
    #[error(transparent)]
    Audit(#[from] crate::ops::audit::AuditError),
    /// The command line asks for something that cannot be done; the
    /// message says what to pass instead.
    #[error("{0}")]
    Usage(String),
    /// A job operation failed.
    #[error(transparent)]
    Jobs(#[from] crate::ops::jobs::JobOpError),
    /// A usage report failed.
    #[error(transparent)]
    UsageReport(#[from] crate::ops::usage::UsageError),
}

impl CliError {
    /// A usage error with a message.
    pub fn usage(m: impl std::fmt::Display) -> Self {
        Self::Usage(m.to_string())
    }
}

/// The actor of commands run from this shell: `cli:<user>`.
pub fn actor() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(user) if !user.is_empty() => {
            format!("cli:{}", user.chars().take(64).collect::<String>())
        }
        _ => "cli".to_owned(),
    }
}

/// Pretty JSON for stdout.
pub fn to_json(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| CliError::usage(format!("cannot print JSON: {e}")))
}
