//! Purge: a tenant and every trace of it, proved gone.

use tenancy::config::DeprovisionPolicy;
use tenancy::{TenantId, TenantInfo};
use tenancy_sql::portable::TenantData;

use super::PortabilityError;
use crate::app::{App, MainPool, TENANT_COLUMN, TenantMigrator};

/// What a purge removed.
#[derive(Debug)]
pub struct Purged {
    /// Rows deleted from shared tables, per table (tables with none left out).
    pub deleted: Vec<(String, u64)>,
}

/// Removes every row, schema, database, file, config key, domain and
/// placement of `tenant` (whatever `lifecycle.deprovision_policy` says),
/// then scans to prove it gone. Recorded as `tenant.purge`.
pub async fn purge(
    app: &App,
    actor: &str,
    tenant: &TenantInfo,
) -> Result<Purged, PortabilityError> {
    let deleted = remove_everything(app, actor, tenant).await?;
    let leftovers = scan(app, &tenant.id).await?;
    if !leftovers.is_empty() {
        return Err(PortabilityError::failed(format!(
            "tenant {} was deleted but a scan still finds: {}",
            tenant.slug,
            leftovers.join("; ")
        )));
    }
    app.audit(
        tenancy::audit::NewAuditEntry::new(actor, "tenant.purge")
            .tenant(tenant.id.clone())
            .change(crate::ops::tenants::audit_value(tenant), None),
    )
    .await;
    Ok(Purged { deleted })
}

/// Deletes the tenant's rows from shared tables, drops its schema,
/// database or file (and archived copies), its config and its record.
pub(super) async fn remove_everything(
    app: &App,
    actor: &str,
    tenant: &TenantInfo,
) -> Result<Vec<(String, u64)>, PortabilityError> {
    let mut deleted = Vec::new();
    // Shared tables hold rows under every strategy (the built-in tables and
    // any table with the tenant column in the main database).
    let shared = main_data(app, &tenant.id)?;
    let mut session = shared.write().await.map_err(PortabilityError::failed)?;
    deleted.extend(
        session
            .delete_rows()
            .await
            .map_err(PortabilityError::failed)?,
    );
    session.commit().await.map_err(PortabilityError::failed)?;
    // Its background jobs, whatever their state.
    let jobs = app
        .jobs
        .purge_tenant(&tenant.id)
        .await
        .map_err(PortabilityError::failed)?;
    deleted.push(("tenancy_jobs".to_owned(), jobs));
    // Its metered usage.
    let usage = app
        .usage
        .purge_tenant(&tenant.id)
        .await
        .map_err(PortabilityError::failed)?;
    deleted.push(("tenancy_usage".to_owned(), usage));
    drop_archives(app, &tenant.id).await?;
    if let Some(domains) = app.tenancy.domain_store() {
        for d in domains
            .list_domains(&tenant.id)
            .await
            .map_err(PortabilityError::failed)?
        {
            crate::ops::domains::remove(app, actor, d.domain.as_str())
                .await
                .map_err(PortabilityError::failed)?;
        }
    }
    app.tenancy
        .lifecycle()
        .delete_with_policy(&tenant.id, DeprovisionPolicy::Drop)
        .await
        .map_err(PortabilityError::failed)?;
    Ok(deleted.into_iter().filter(|(_, n)| *n > 0).collect())
}

/// The main database as shared tables of `tenant`.
fn main_data(app: &App, tenant: &TenantId) -> Result<TenantData, PortabilityError> {
    match &app.main {
        MainPool::Postgres(pool) => {
            TenantData::pg_shared(pool.clone(), tenant.clone(), TENANT_COLUMN)
                .map(|d| app.signed(d))
        }
        MainPool::Sqlite(pool) => {
            TenantData::sqlite_shared(pool.clone(), tenant.clone(), TENANT_COLUMN)
        }
    }
    .map_err(PortabilityError::failed)
}

/// Drops schemas, databases and files archived by earlier deactivations.
async fn drop_archives(app: &App, tenant: &TenantId) -> Result<(), PortabilityError> {
    for name in archived_objects(app, tenant).await? {
        match (&app.main, &app.migrator) {
            (MainPool::Postgres(pool), Some(TenantMigrator::PgSchema(_))) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    tenancy_sql::ident::quote_ident(&name).map_err(PortabilityError::failed)?
                )))
                .execute(pool)
                .await
                .map_err(PortabilityError::failed)?;
            }
            (_, Some(TenantMigrator::PgDatabase(dbs))) => {
                dbs.drop_named(&name)
                    .await
                    .map_err(PortabilityError::failed)?;
            }
            (_, Some(TenantMigrator::SqliteFiles(files))) => {
                let path = files.dir().join(&name);
                std::fs::remove_file(&path).map_err(|e| {
                    PortabilityError::failed(format!("cannot remove {}: {e}", path.display()))
                })?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Names of archived copies of the tenant's schema, databases or files:
/// exactly the names the isolation strategy gave them
/// ([`tenancy_sql::ident::archive_name`], plus `.db` for SQLite files), the
/// id part equal to this tenant's id. Tenant `x_acme`'s archive
/// `archived_<time>_x_acme` is never tenant `acme`'s.
async fn archived_objects(app: &App, tenant: &TenantId) -> Result<Vec<String>, PortabilityError> {
    let sqlite_files = matches!(app.migrator, Some(TenantMigrator::SqliteFiles(_)));
    let is_archive = |name: &str| {
        let stem = if sqlite_files {
            name.strip_suffix(".db")
        } else {
            Some(name)
        };
        stem.is_some_and(|stem| tenancy_sql::ident::is_archive_of(stem, tenant))
    };
    let names: Vec<String> = match (&app.main, &app.migrator) {
        (MainPool::Postgres(pool), Some(TenantMigrator::PgSchema(_))) => sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'archived\\_%'",
        )
        .fetch_all(pool)
        .await
        .map_err(PortabilityError::failed)?,
        (_, Some(TenantMigrator::PgDatabase(dbs))) => dbs
            .database_names()
            .await
            .map_err(PortabilityError::failed)?,
        (_, Some(TenantMigrator::SqliteFiles(files))) => match std::fs::read_dir(files.dir()) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    };
    Ok(names.into_iter().filter(|n| is_archive(n)).collect())
}

/// What is left of a tenant anywhere: empty when it is gone.
pub(super) async fn scan(app: &App, tenant: &TenantId) -> Result<Vec<String>, PortabilityError> {
    let mut found = Vec::new();
    if app
        .tenancy
        .store()
        .get(tenant)
        .await
        .map_err(PortabilityError::failed)?
        .is_some()
    {
        found.push("the tenant record".to_owned());
    }
    let cache = app.tenancy.config_store();
    cache.invalidate(tenant).await;
    let mut left = |n: usize, what: &str| {
        if n > 0 {
            found.push(format!("{n} {what}"));
        }
    };
    let config = cache.overrides(tenant).await;
    left(
        config.map_err(PortabilityError::failed)?.len(),
        "config keys",
    );
    if let Some(domains) = app.tenancy.domain_store() {
        let domains = domains.list_domains(tenant).await;
        left(domains.map_err(PortabilityError::failed)?.len(), "domains");
    }
    let shared = main_data(app, tenant)?;
    let mut session = shared.read().await.map_err(PortabilityError::failed)?;
    for table in session.tables().await.map_err(PortabilityError::failed)? {
        let n = session
            .row_count(&table)
            .await
            .map_err(PortabilityError::failed)?;
        if n > 0 {
            found.push(format!("{n} rows in {}", table.name));
        }
    }
    drop(session);
    let own = tenancy_sql::ident::tenant_object_name(tenant).ok();
    match (&app.main, &app.migrator) {
        (MainPool::Postgres(pool), _) => {
            if let Some(own) = &own {
                let (schema, role): (bool, bool) = sqlx::query_as(
                    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                            EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
                )
                .bind(own)
                .fetch_one(pool)
                .await
                .map_err(PortabilityError::failed)?;
                if schema {
                    found.push(format!("schema {own}"));
                }
                if role {
                    found.push(format!("role {own}"));
                }
            }
            let placed: bool = sqlx::query_scalar(
                "SELECT to_regclass('tenancy_placements') IS NOT NULL \
                 AND EXISTS (SELECT 1 FROM pg_class WHERE relname = 'tenancy_placements')",
            )
            .fetch_one(pool)
            .await
            .map_err(PortabilityError::failed)?;
            if placed {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM tenancy_placements WHERE tenant_id = $1",
                )
                .bind(tenant.as_str())
                .fetch_one(pool)
                .await
                .map_err(PortabilityError::failed)?;
                if n > 0 {
                    found.push("a database placement".to_owned());
                }
            }
        }
        (MainPool::Sqlite(_), _) => {}
    }
    if let (Some(TenantMigrator::PgDatabase(dbs)), Some(own)) = (&app.migrator, &own) {
        for name in dbs
            .database_names()
            .await
            .map_err(PortabilityError::failed)?
        {
            if &name == own {
                found.push(format!("database {name}"));
            }
        }
    }
    if let (Some(TenantMigrator::SqliteFiles(files)), Some(own)) = (&app.migrator, &own)
        && let Ok(entries) = std::fs::read_dir(files.dir())
    {
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{own}.db")) {
                found.push(format!("file {}", entry.path().display()));
            }
        }
    }
    for name in archived_objects(app, tenant).await? {
        found.push(format!("archived copy {name}"));
    }
    Ok(found)
}
