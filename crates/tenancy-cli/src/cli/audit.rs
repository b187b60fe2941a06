//! `tenancy audit`: the audit log of admin actions.

use clap::Args;
use tenancy::audit::AuditQuery;

use crate::app::App;
use crate::cli::{CliError, Global};

/// `tenancy audit [--tenant T] [--limit N] [--before ID]`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this tenant's entries (id or slug; the id of a deleted tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// At most this many entries, newest first (1–1000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Only entries older than this id (the next page).
    #[arg(long)]
    pub before: Option<i64>,
}

/// Prints the entries, newest first: one line each, or JSON with `--json`.
pub async fn run(global: &Global, args: AuditArgs) -> Result<(), CliError> {
    let app = App::open(&global.source()).await?;
    let mut query = AuditQuery::default().limit(args.limit);
    query.before = args.before;
    let items = crate::ops::audit::entries(&app, query, args.tenant.as_deref()).await?;
    if global.json {
        let body = serde_json::json!({ "items": items, "next_before": items.last().map(|e| e.id) });
        println!("{body}");
        return Ok(());
    }
    if items.is_empty() {
        println!("no audit entries");
    }
    for e in &items {
        println!(
            "{:>6}  {}  {:<16} {:<18} {}",
            e.id,
            e.at.format("%Y-%m-%dT%H:%M:%SZ"),
            e.actor,
            e.action,
            e.tenant_id.as_ref().map_or("-", |t| t.as_str())
        );
    }
    Ok(())
}
