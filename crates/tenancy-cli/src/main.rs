//! The `tenancy` operator binary.
//!
//! Each top-level command is a variant of [`Command`] with its own module;
//! later commands (serve, tenants, config, migrate, export) slot in beside
//! `sql`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod sql;

/// Operate a multi-tenant service.
#[derive(Debug, Parser)]
#[command(name = "tenancy", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect what the query interceptor does to SQL.
    #[command(subcommand)]
    Sql(sql::SqlCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sql(cmd) => sql::run(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
