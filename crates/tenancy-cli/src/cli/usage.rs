//! `tenancy usage`: what tenants used, per hour (SPEC E4).

use clap::Args;

use crate::app::App;
use crate::cli::{CliError, Global, to_json};
use crate::ops::usage as ops;

/// `tenancy usage [--tenant T] [--from D] [--to D] [--json|--csv]`
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this tenant's (id or slug) [default: every tenant].
    #[arg(long)]
    pub tenant: Option<String>,
    /// Start: a date (2026-12-01) or an RFC 3339 time [default: 30 days before `to`].
    #[arg(long)]
    pub from: Option<String>,
    /// End: a date (its whole day is included) or an RFC 3339 time [default: now].
    #[arg(long)]
    pub to: Option<String>,
    /// Print the rows as CSV (`tenant_id,hour,metric,value`), for a billing system.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

/// Runs `tenancy usage`.
pub async fn run(global: &Global, args: UsageArgs) -> Result<(), CliError> {
    let (from, to) = ops::range(args.from.as_deref(), args.to.as_deref())?;
    let app = App::open(&global.source()).await?;
    let report = ops::report(&app, args.tenant.as_deref(), from, to).await?;
    if args.csv {
        print!("{}", ops::csv(&report));
    } else if global.json {
        println!("{}", to_json(&report)?);
    } else if report.totals.is_empty() {
        println!("no usage from {from} to {to}");
    } else {
        println!("usage from {from} to {to} (totals)");
        for (tenant, metrics) in &report.totals {
            println!("{tenant}");
            for (metric, value) in metrics {
                println!("  {metric:<16} {value:>14}");
            }
        }
        if report.truncated {
            println!("(the rows stop at the report limit: narrow the range)");
        }
    }
    Ok(())
}
