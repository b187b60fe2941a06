//! `tenancy tenants pool status|fill|prune`: the pending pool.

use crate::app::App;
use crate::cli::{CliError, Global};
use crate::ops::pool::pool_of;
use clap::{Args, Subcommand};

/// Pending pool commands.
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Ready and provisioning members against lifecycle.pending_pool.
    Status,
    /// Provision members now, until the pool holds its target (or --size).
    Fill(FillArgs),
    /// Remove members beyond the target and abandoned half-provisioned ones
    /// (--all: every member), with their schema or database.
    Prune(PruneArgs),
}

/// `pool fill`.
#[derive(Debug, Args)]
pub struct FillArgs {
    /// Members to hold [default: lifecycle.pending_pool].
    #[arg(long)]
    pub size: Option<usize>,
}

/// `pool prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every member (before changing strategy or turning the pool off).
    #[arg(long)]
    pub all: bool,
}

/// Runs a pool command.
pub async fn run(global: &Global, cmd: PoolCommand) -> Result<(), CliError> {
    let app = App::open(&global.source()).await?;
    let pool = pool_of(&app)?;
    match cmd {
        PoolCommand::Status => {}
        PoolCommand::Fill(args) => {
            let size = args.size.unwrap_or_else(|| pool.target());
            let started = std::time::Instant::now();
            let added = pool
                .fill_to(size)
                .await
                .map_err(crate::ops::pool::PoolError::from)?;
            if !global.json {
                println!(
                    "added {} member(s) in {:.2} s",
                    added.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        PoolCommand::Prune(args) => {
            let report = pool
                .prune(args.all)
                .await
                .map_err(crate::ops::pool::PoolError::from)?;
            if !global.json {
                println!("removed {} member(s)", report.removed.len());
                for id in &report.removed {
                    println!("  {id}");
                }
            }
        }
    }
    let status = pool
        .status()
        .await
        .map_err(crate::ops::pool::PoolError::from)?;
    if global.json {
        let members = pool
            .members()
            .await
            .map_err(crate::ops::pool::PoolError::from)?;
        let mut value = serde_json::to_value(&status).map_err(CliError::usage)?;
        value["members"] = serde_json::to_value(&members).map_err(CliError::usage)?;
        println!("{}", crate::cli::to_json(&value)?);
    } else {
        println!(
            "pending pool ({} strategy): {} ready, {} provisioning, target {}",
            status.strategy, status.ready, status.provisioning, status.target
        );
    }
    Ok(())
}
