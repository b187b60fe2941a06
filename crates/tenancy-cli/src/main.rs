//! The `tenancy` operator binary.
//!
//! Each top-level command is a variant of [`Command`] with its own module.
//! Every command takes the global options `--database-url`, `--config` and
//! `--json` (see [`app::Global`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod app;
mod archive;
mod audit_cmd;
mod config_cmd;
mod domains;
mod export;
mod impersonation;
mod migrate;
mod pool;
mod portability;
mod serve;
mod sql;
mod tenants;

/// Operate a multi-tenant service.
#[derive(Debug, Parser)]
#[command(name = "tenancy", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: app::Global,
    #[command(subcommand)]
    command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server: admin API, gateway resolve endpoint, CRUD resources.
    Serve(serve::ServeArgs),
    /// Create, inspect and change tenants.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// Read and set per-tenant configuration.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Add, list, verify and remove tenant domains.
    #[command(subcommand)]
    Domains(domains::DomainsCommand),
    /// Export one tenant's rows of a table.
    Export(export::ExportArgs),
    /// Apply the application's migrations to every tenant schema or database.
    Migrate(migrate::MigrateArgs),
    /// Show the audit log of admin actions, newest first.
    Audit(audit_cmd::AuditArgs),
    /// Inspect what the query interceptor does to SQL.
    #[command(subcommand)]
    Sql(sql::SqlCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sql(cmd) = cli.command {
        return sql::run(cmd);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(&cli.global, args).await,
            Command::Tenants(cmd) => tenants::run(&cli.global, cmd).await,
            Command::Config(cmd) => config_cmd::run(&cli.global, cmd).await,
            Command::Domains(cmd) => domains::run(&cli.global, cmd).await,
            Command::Export(args) => export::run(&cli.global, args).await,
            Command::Migrate(args) => migrate::run(&cli.global, args).await,
            Command::Audit(args) => audit_cmd::run(&cli.global, args).await,
            Command::Sql(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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
