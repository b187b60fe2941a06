//! `tenancy export …` (to be implemented).

use clap::Args;

use crate::app::{CliError, Global};

/// Export arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The table.
    pub table: String,
}

/// Runs an export.
pub async fn run(_global: &Global, _args: ExportArgs) -> Result<(), CliError> {
    Err(CliError::msg("not implemented yet"))
}
