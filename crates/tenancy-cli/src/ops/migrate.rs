//! Applying the application's migrations to every tenant: in parallel
//! with a bound, one tenant's failure reported without stopping the
//! others, resumable (each tenant records its version; a re-run does only
//! what is missing).

use std::sync::Arc;

use serde::Serialize;
use tenancy::{ListQuery, TenantId};
use tokio::sync::Semaphore;

use crate::app::App;

/// Why the migrations could not be run (a tenant's own failure is in the
/// [`Summary`] instead).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No migrations directory is configured.
    #[error(
        "no migrations directory: pass --dir DIR or set lifecycle.migrations_dir (TENANCY__LIFECYCLE__MIGRATIONS_DIR)"
    )]
    NoDirectory,
    /// The migrations directory could not be read.
    #[error(transparent)]
    Migrations(#[from] tenancy_sql::DbError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] tenancy::StoreError),
    /// The pending pool failed.
    #[error(transparent)]
    Pool(#[from] tenancy::pool::PoolError),
    /// A migration task panicked or was cancelled.
    #[error("a migration task failed: {0}")]
    Task(String),
}

/// What a run reports while it goes.
pub trait Progress: Send + Sync + 'static {
    /// `tenants` are about to be migrated.
    fn start(&self, tenants: u64);
    /// The tenant `slug` is done.
    fn tenant(&self, slug: &str, result: &Result<tenancy_sql::Applied, tenancy_sql::DbError>);
}

/// The outcome for one tenant.
#[derive(Debug, Serialize)]
pub struct TenantOutcome {
    /// The tenant's id (a pending pool member's).
    pub id: String,
    /// The tenant's slug (`(pending pool)` for a member).
    pub slug: String,
    /// Its version before.
    pub from: i64,
    /// Its version after.
    pub to: i64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a run did, each list sorted by slug.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Tenants moved to a later version.
    pub migrated: Vec<TenantOutcome>,
    /// Tenants that were current already.
    pub current: Vec<TenantOutcome>,
    /// Tenants that failed (each stays at its previous version).
    pub failed: Vec<TenantOutcome>,
    /// The latest version of the migrations.
    pub latest_version: i64,
    /// Row level: what happened to the shared tables of the main database
    /// (there are no per-tenant migrations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedOutcome>,
}

/// The shared tables' migration under row level.
#[derive(Debug, Serialize)]
pub struct SharedOutcome {
    /// Version before.
    pub from: i64,
    /// Version after.
    pub to: i64,
    /// Migrations applied now.
    pub applied: usize,
}

/// Migrates every tenant (and ready pending-pool member) of `app` to the
/// latest migration, `jobs` at a time. `verify` opens every schema even
/// when the version index records it as current (schema strategy).
pub async fn migrate_all(
    app: &App,
    jobs: usize,
    verify: bool,
    progress: Arc<dyn Progress>,
) -> Result<Summary, MigrateError> {
    let dir = app.config.lifecycle.migrations_dir.clone();
    let Some(migrator) = app.migrator.clone() else {
        // Row level: opening the app set up row-level security (the request
        // role, tenancy_register_table) and applied the migrations to the
        // shared tables, as the owner role.
        let latest = match &dir {
            Some(dir) => tenancy_sql::Migrations::from_dir(dir)?.latest(),
            None => 0,
        };
        let applied = app.shared_applied.unwrap_or(tenancy_sql::Applied {
            from: latest,
            to: latest,
            count: 0,
        });
        progress.start(0);
        return Ok(Summary {
            latest_version: latest,
            shared: Some(SharedOutcome {
                from: applied.from,
                to: applied.to,
                applied: applied.count,
            }),
            ..Summary::default()
        });
    };
    let Some(dir) = dir else {
        return Err(MigrateError::NoDirectory);
    };
    let latest = tenancy_sql::Migrations::from_dir(&dir)?.latest();
    let mut tenants = all_tenants(app).await?;
    // Ready pending-pool members too: a claimed one must be current.
    if let Some(pool) = app.tenancy.pending_pool() {
        let members = pool.members().await?;
        tenants.extend(members.into_iter().filter(|m| m.ready).map(|m| Target {
            id: m.id,
            slug: "(pending pool)".into(),
            pending: true,
        }));
    }
    // Schema strategy: one query says which schemas are already current.
    let mut already = Vec::new();
    if let (crate::app::TenantMigrator::PgSchema(schemas), false) = (&migrator, verify) {
        let recorded = schemas.recorded_versions().await?;
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

    progress.start(total);
    let limit = Arc::new(Semaphore::new(jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for tenant in tenants {
        let (migrator, limit, progress) = (migrator.clone(), limit.clone(), progress.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = migrator.migrate_tenant(&tenant.id).await;
            progress.tenant(&tenant.slug, &result);
            (tenant, result)
        });
    }
    let mut summary = Summary {
        latest_version: latest,
        current: already,
        ..Summary::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let (tenant, result) = joined.map_err(|e| MigrateError::Task(e.to_string()))?;
        if tenant.pending
            && let (Ok(applied), Some(pool)) = (&result, app.tenancy.pending_pool())
        {
            // Claims then know the member is current and skip the check.
            pool.record_migrated(&tenant.id, applied.to).await?;
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
    for list in [
        &mut summary.migrated,
        &mut summary.current,
        &mut summary.failed,
    ] {
        list.sort_by(|a, b| a.slug.cmp(&b.slug));
    }
    for list in [
        &mut summary.migrated,
        &mut summary.current,
        &mut summary.failed,
    ] {
        list.sort_by(|a, b| a.slug.cmp(&b.slug));
    }
    Ok(summary)
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
async fn all_tenants(app: &App) -> Result<Vec<Target>, MigrateError> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = app
            .tenancy
            .store()
            .list(ListQuery::all().page(offset, ListQuery::MAX_LIMIT))
            .await?;
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
