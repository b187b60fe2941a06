//! `tenancy tenants …` (to be implemented).

use clap::Subcommand;

use crate::app::{CliError, Global};

/// Tenant commands.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List tenants.
    List,
}

/// Runs a tenants command.
pub async fn run(_global: &Global, _cmd: TenantsCommand) -> Result<(), CliError> {
    Err(CliError::msg("not implemented yet"))
}
