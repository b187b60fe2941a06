//! `tenancy migrate`: apply the application's migrations to every tenant,
//! in parallel with a bound, one tenant's failure reported
//! without stopping the others, resumable (each tenant records its
//! version; a re-run does only what is missing).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;
use tenancy::{ListQuery, TenantId};
use tokio::sync::Semaphore;

use crate::app::{App, CliError, Global};

/// `tenancy migrate` options.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Directory of `<version>_<name>.sql` files [default: lifecycle.migrations_dir]
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Tenants migrated at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Open every schema to check its version, even those the version index
    /// records as current (schema strategy).
    #[arg(long)]
    pub verify: bool,
}

/// The outcome for one tenant.
#[derive(Debug, Serialize)]
struct TenantOutcome {
    id: String,
    slug: String,
    from: i64,
    to: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The summary printed at the end.
#[derive(Debug, Default, Serialize)]
struct Summary {
    migrated: Vec<TenantOutcome>,
    current: Vec<TenantOutcome>,
    failed: Vec<TenantOutcome>,
    latest_version: i64,
}

/// Runs `tenancy migrate`.
pub async fn run(global: &Global, args: MigrateArgs) -> Result<(), CliError> {
    let app = App::open_with_migrations(global, args.dir).await?;
    let Some(dir) = app.config.lifecycle.migrations_dir.clone() else {
        return Err(CliError::msg(
            "no migrations directory: pass --dir DIR or set lifecycle.migrations_dir (TENANCY__LIFECYCLE__MIGRATIONS_DIR)",
        ));
    };
    let latest = tenancy_sql::Migrations::from_dir(&dir)
        .map_err(CliError::msg)?
        .latest();
    let Some(migrator) = app.migrator.clone() else {
        return Err(CliError::msg(format!(
            "isolation strategy `{}` keeps all tenants in shared tables: apply {} to the main database with your \
             usual migration tool; per-tenant migrations apply to the schema and database strategies",
            app.config.lifecycle.isolation_strategy,
            dir.display()
        )));
    };
    let mut tenants = all_tenants(&app).await?;
    // Ready pending-pool members too: a claimed one must be current.
    if let Some(pool) = app.tenancy.pending_pool() {
        let members = pool.members().await.map_err(CliError::msg)?;
        tenants.extend(members.into_iter().filter(|m| m.ready).map(|m| Target {
            id: m.id,
            slug: "(pending pool)".into(),
            pending: true,
        }));
    }
    // Schema strategy: one query says which schemas are already current.
    let mut already = Vec::new();
    if let (crate::app::Migrator::PgSchema(schemas), false) = (&migrator, args.verify) {
        let recorded = schemas.recorded_versions().await.map_err(CliError::msg)?;
        tenants.retain(|t| {
            let current = recorded.get(t.id.as_str()) == Some(&latest);
            if current {
                already.push(TenantOutcome {
                    id: t.id.to_string(),
                    slug: t.slug.clone(),
                    from: latest,
                    to: latest,
                    error: None,
                });
            }
            !current
        });
    }
    let total = tenants.len() as u64;

    let progress = Progress::new(total);
    let limit = Arc::new(Semaphore::new(usize::from(args.jobs)));
    let mut tasks = tokio::task::JoinSet::new();
    for tenant in tenants {
        let (migrator, limit, progress) = (migrator.clone(), limit.clone(), progress.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = migrator.migrate_tenant(&tenant.id).await;
            progress.tick(&tenant, &result);
            (tenant, result)
        });
    }
    let mut summary = Summary {
        latest_version: latest,
        current: already,
        ..Summary::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let (tenant, result) =
            joined.map_err(|e| CliError::msg(format!("a migration task failed: {e}")))?;
        if tenant.pending
            && let (Ok(applied), Some(pool)) = (&result, app.tenancy.pending_pool())
        {
            // Claims then know the member is current and skip the check.
            pool.record_migrated(&tenant.id, applied.to)
                .await
                .map_err(CliError::msg)?;
        }
        let mut outcome = TenantOutcome {
            id: tenant.id.to_string(),
            slug: tenant.slug.clone(),
            from: 0,
            to: 0,
            error: None,
        };
        match result {
            Ok(applied) => {
                outcome.from = applied.from;
                outcome.to = applied.to;
                if applied.count > 0 {
                    summary.migrated.push(outcome);
                } else {
                    summary.current.push(outcome);
                }
            }
            Err(e) => {
                outcome.error = Some(e.to_string());
                summary.failed.push(outcome);
            }
        }
    }
    progress.finish();
    for list in [
        &mut summary.migrated,
        &mut summary.current,
        &mut summary.failed,
    ] {
        list.sort_by(|a, b| a.slug.cmp(&b.slug));
    }
    if global.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).map_err(CliError::msg)?
        );
    } else {
        println!(
            "migrated: {}, already current: {}, failed: {} (latest version {latest})",
            summary.migrated.len(),
            summary.current.len(),
            summary.failed.len()
        );
        for f in &summary.failed {
            println!(
                "  failed {} ({}): {}",
                f.slug,
                f.id,
                f.error.as_deref().unwrap_or_default()
            );
        }
    }
    if summary.failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::msg(format!(
            "{} tenant(s) failed to migrate and stay at their previous version; fix the cause and re-run `tenancy migrate` (only what is missing is applied)",
            summary.failed.len()
        )))
    }
}

/// One schema or database to migrate.
struct Target {
    id: TenantId,
    slug: String,
    /// A pending pool member, not a tenant.
    pending: bool,
}

/// Every tenant, whatever its status: a suspended tenant's schema must not
/// fall behind.
async fn all_tenants(app: &App) -> Result<Vec<Target>, CliError> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = app
            .tenancy
            .store()
            .list(ListQuery::all().page(offset, ListQuery::MAX_LIMIT))
            .await
            .map_err(CliError::msg)?;
        let n = page.items.len() as u64;
        out.extend(
            page.items
                .into_iter()
                .filter(|t| t.status != tenancy::TenantStatus::Provisioning)
                .map(|t| Target {
                    id: t.id,
                    slug: t.slug.to_string(),
                    pending: false,
                }),
        );
        offset += n;
        if n == 0 || offset >= page.total {
            return Ok(out);
        }
    }
}

/// A bar on a terminal, a line per tenant otherwise.
#[derive(Clone)]
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    done: Arc<std::sync::atomic::AtomicU64>,
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tenants {msg}")
            {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            done: Arc::default(),
            total,
        }
    }

    fn tick(&self, tenant: &Target, result: &Result<tenancy_sql::Applied, tenancy_sql::DbError>) {
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                if result.is_err() {
                    bar.set_message(format!("(failed: {})", tenant.slug));
                }
            }
            None => match result {
                Ok(a) if a.count > 0 => eprintln!(
                    "[{n}/{}] {}: {} -> {}",
                    self.total, tenant.slug, a.from, a.to
                ),
                Ok(a) => eprintln!("[{n}/{}] {}: current at {}", self.total, tenant.slug, a.to),
                Err(e) => eprintln!("[{n}/{}] {}: FAILED: {e}", self.total, tenant.slug),
            },
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
