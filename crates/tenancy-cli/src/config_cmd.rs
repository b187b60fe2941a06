//! `tenancy config …` (to be implemented).

use clap::Subcommand;

use crate::app::{CliError, Global};

/// Config commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The effective config of a tenant.
    List,
}

/// Runs a config command.
pub async fn run(_global: &Global, _cmd: ConfigCommand) -> Result<(), CliError> {
    Err(CliError::msg("not implemented yet"))
}
