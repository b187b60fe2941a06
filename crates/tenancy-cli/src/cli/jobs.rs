//! `tenancy jobs`: the background job queue, for operators.

use clap::{Args, Subcommand};
use tenancy_sql::jobs::{JobRecord, JobState};

use crate::app::App;
use crate::cli::{CliError, Global, actor, to_json};
use crate::ops::jobs as ops;

/// `tenancy jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first.
    List(ListArgs),
    /// One job, whole (payload, result, last error).
    Show(IdArgs),
    /// Queue a dead or cancelled job again, its attempts reset.
    Retry(IdArgs),
    /// Cancel a queued or running job.
    Cancel(IdArgs),
    /// Jobs by kind and state.
    Stats,
}

/// `tenancy jobs list [--tenant T] [--state S] [--limit N]`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant's (id or slug).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only in this state: queued, running, done, dead, cancelled, dropped.
    #[arg(long)]
    pub state: Option<JobState>,
    /// At most this many (1–1000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// A job's id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The job's id.
    pub id: i64,
}

/// Runs `tenancy jobs …`.
pub async fn run(global: &Global, command: JobsCommand) -> Result<(), CliError> {
    let app = App::open(&global.source()).await?;
    match command {
        JobsCommand::List(args) => {
            let jobs =
                ops::list(&app, args.tenant.as_deref(), args.state, Some(args.limit)).await?;
            if global.json {
                println!("{}", to_json(&serde_json::json!({ "items": jobs }))?);
            } else if jobs.is_empty() {
                println!("no jobs");
            } else {
                for job in &jobs {
                    println!("{}", line(job));
                }
            }
        }
        JobsCommand::Show(args) => print_job(global, &ops::show(&app, args.id).await?)?,
        JobsCommand::Retry(args) => print_job(global, &ops::retry(&app, &actor(), args.id).await?)?,
        JobsCommand::Cancel(args) => {
            print_job(global, &ops::cancel(&app, &actor(), args.id).await?)?
        }
        JobsCommand::Stats => {
            let stats = ops::stats(&app).await?;
            if global.json {
                println!("{}", to_json(&stats)?);
            } else if stats.counts.is_empty() {
                println!("no jobs");
            } else {
                for (kind, state, n) in &stats.counts {
                    println!("{kind:<24} {state:<10} {n:>10}");
                }
            }
        }
    }
    Ok(())
}

fn line(job: &JobRecord) -> String {
    format!(
        "{:>8}  {:<10} {:<24} {:<26} attempts {}/{}{}",
        job.id,
        job.state,
        job.kind,
        job.tenant_id,
        job.attempts,
        job.max_attempts,
        job.last_error
            .as_deref()
            .map(|e| format!("  last error: {}", e.chars().take(80).collect::<String>()))
            .unwrap_or_default()
    )
}

fn print_job(global: &Global, job: &JobRecord) -> Result<(), CliError> {
    if global.json {
        println!("{}", to_json(job)?);
    } else {
        println!("{}", line(job));
        println!("payload: {}", job.payload);
        if let Some(result) = &job.result {
            println!("result: {result}");
        }
    }
    Ok(())
}
