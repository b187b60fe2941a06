//! The `tenancy` operator binary: parses the command line and hands each
//! command to [`tenancy_cli::cli`], and `serve` to [`tenancy_cli::http`].
//!
//! Every command takes the global options `--database-url`, `--config` and
//! `--json` (see [`cli::Global`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tenancy_cli::{cli, http};

/// Operate a multi-tenant service.
#[derive(Debug, Parser)]
#[command(name = "tenancy", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server: admin API, gateway resolve endpoint, CRUD resources.
    Serve(cli::serve::ServeArgs),
    /// Create, inspect and change tenants.
    #[command(subcommand)]
    Tenants(cli::tenants::TenantsCommand),
    /// Read and set per-tenant configuration.
    #[command(subcommand)]
    Config(cli::config::ConfigCommand),
    /// Add, list, verify and remove tenant domains.
    #[command(subcommand)]
    Domains(cli::domains::DomainsCommand),
    /// Export one tenant's rows of a table.
    Export(cli::table_export::ExportArgs),
    /// Apply the application's migrations: to every tenant schema or
    /// database, or to the shared tables under row level.
    Migrate(cli::migrate::MigrateArgs),
    /// Check that the live database isolates its tenants (exit 0: clean,
    /// 1: findings, 2: could not check).
    Doctor(cli::doctor::DoctorArgs),
    /// Show the audit log of admin actions, newest first.
    Audit(cli::audit::AuditArgs),
    /// Inspect, retry and cancel background jobs.
    #[command(subcommand)]
    Jobs(cli::jobs::JobsCommand),
    /// What tenants used, per hour: requests, rows, jobs, storage.
    Usage(cli::usage::UsageArgs),
    /// Inspect what the query interceptor does to SQL.
    #[command(subcommand)]
    Sql(cli::sql::SqlCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sql(cmd) = cli.command {
        return cli::sql::run(cmd);
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
    let global = &cli.global;
    if let Command::Doctor(args) = cli.command {
        return runtime.block_on(cli::doctor::run(global, args));
    }
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let options = http::ServeOptions {
                    bind: args.bind,
                    admin_token: args.admin_token,
                };
                Ok(http::run(&global.source(), options).await?)
            }
            command => Ok(run(global, command).await?),
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

/// Runs a command other than `serve`.
async fn run(global: &cli::Global, command: Command) -> Result<(), cli::CliError> {
    match command {
        Command::Tenants(cmd) => cli::tenants::run(global, cmd).await,
        Command::Config(cmd) => cli::config::run(global, cmd).await,
        Command::Domains(cmd) => cli::domains::run(global, cmd).await,
        Command::Export(args) => cli::table_export::run(global, args).await,
        Command::Migrate(args) => cli::migrate::run(global, args).await,
        Command::Audit(args) => cli::audit::run(global, args).await,
        Command::Jobs(cmd) => cli::jobs::run(global, cmd).await,
        Command::Usage(args) => cli::usage::run(global, args).await,
        Command::Serve(_) | Command::Sql(_) | Command::Doctor(_) => Ok(()),
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
