//! `tenancy doctor`: checks the live database against the configured
//! strategy (SPEC G1) and reports the Citus readiness of its schema (G2).
//! It reads catalogs, file modes and the store; it changes nothing.

use tenancy::doctor::{Check, Finding, Report, Severity};
use tenancy_sql::doctor;

use crate::app::{App, MainPool, TENANT_COLUMN, TenantMigrator};
use crate::ops::tenants::{TenantOpError, list_all};

/// Why the doctor could not check (its exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The tenants could not be listed.
    #[error("cannot list the tenants: {0}")]
    Tenants(#[from] TenantOpError),
    /// The pending pool could not be listed.
    #[error("cannot list the pending pool: {0}")]
    Pool(tenancy::pool::PoolError),
    /// A catalog could not be read.
    #[error("cannot read the database's catalogs: {0}")]
    Catalog(#[from] tenancy_sql::DbError),
    /// The check asked for does not apply to this database.
    #[error("{0}")]
    Unsupported(String),
}

/// Runs every check that applies to `app`'s database and strategy, and
/// `database_url` (the main SQLite file's mode). Findings sorted, most
/// severe first.
pub async fn examine(app: &App, database_url: &str) -> Result<Report, DoctorError> {
    let mut report = Report::default();
    let (mut tenants, _) = list_all(app, true).await?;
    // Pending-pool members own a schema, database or file too: listed as
    // tenants being provisioned, so their storage is no orphan (and not
    // required yet).
    if let Some(pool) = app.tenancy.pending_pool() {
        let now = chrono::Utc::now();
        for member in pool.members().await.map_err(DoctorError::Pool)? {
            if let Ok(new) = tenancy::NewTenant::new("pending-pool-member", "(pending pool)") {
                tenants.push(new.id(member.id).into_info(now));
            }
        }
    }
    match (&app.main, &app.migrator) {
        (MainPool::Postgres(pool), None) => {
            report.count("tenants", tenants.len() as u64);
            doctor::check_row_level(pool, TENANT_COLUMN, &mut report).await?;
        }
        (MainPool::Postgres(pool), Some(TenantMigrator::PgSchema(_))) => {
            doctor::check_schemas(pool, &tenants, &mut report).await?;
        }
        (MainPool::Postgres(pool), Some(TenantMigrator::PgDatabase(dbs))) => {
            report.count("tenants", tenants.len() as u64);
            doctor::check_databases(pool, dbs.servers(), &tenants, &mut report).await?;
        }
        (MainPool::Sqlite(pool), None) => {
            report.count("tenants", tenants.len() as u64);
            // The tables the interceptor scopes: the configured resources'.
            let resources = &app.config.server.resources;
            let scoped: Vec<String> = if resources.is_empty() {
                vec!["notes".to_owned()]
            } else {
                resources
                    .iter()
                    .map(|r| r.table.clone().unwrap_or_else(|| r.name.clone()))
                    .collect()
            };
            doctor::check_sqlite_row_level(pool, TENANT_COLUMN, &scoped, &mut report).await?;
        }
        (MainPool::Sqlite(_), Some(TenantMigrator::SqliteFiles(files))) => {
            doctor::check_sqlite_files(files.dir(), &tenants, &mut report);
        }
        (MainPool::Sqlite(_), Some(_))
        | (MainPool::Postgres(_), Some(TenantMigrator::SqliteFiles(_))) => {
            return Err(DoctorError::Unsupported(
                "the database and the strategy do not match: nothing to check".into(),
            ));
        }
    }
    if let Some(path) = doctor::sqlite_file_of(database_url) {
        doctor::check_file_mode(&path, &mut report);
    }
    domain_orphans(app, &mut report).await?;
    open_tenant_routes(app, &mut report);
    report.sort();
    Ok(report)
}

/// The Citus readiness of the main database's schema (PostgreSQL only).
pub async fn citus(app: &App) -> Result<doctor::citus::CitusReport, DoctorError> {
    match &app.main {
        MainPool::Postgres(pool) => Ok(doctor::citus::citus_report(pool, TENANT_COLUMN).await?),
        MainPool::Sqlite(_) => Err(DoctorError::Unsupported(
            "--citus reads a PostgreSQL schema: pass --database-url postgres://…".into(),
        )),
    }
}

/// `domain_orphan`: a domain whose tenant is gone (the store deletes a
/// tenant's domains with it, so one is left only by hand or with SQLite's
/// foreign keys off); its host would resolve to nobody, or to a tenant
/// re-created with the same id.
async fn domain_orphans(app: &App, report: &mut Report) -> Result<(), DoctorError> {
    const ORPHANS: &str = "SELECT d.domain, d.tenant_id FROM tenancy_domains d \
        WHERE NOT EXISTS (SELECT 1 FROM tenancy_tenants t WHERE t.id = d.tenant_id) ORDER BY d.domain";
    const TOTAL: &str = "SELECT count(*) FROM tenancy_domains";
    // The same two queries on either database.
    macro_rules! read {
        ($pool:expr) => {
            (
                sqlx::query_as(ORPHANS)
                    .fetch_all($pool)
                    .await
                    .map_err(tenancy_sql::DbError::from)?,
                sqlx::query_scalar(TOTAL)
                    .fetch_one($pool)
                    .await
                    .map_err(tenancy_sql::DbError::from)?,
            )
        };
    }
    let (orphans, total): (Vec<(String, String)>, i64) = match &app.main {
        MainPool::Postgres(pool) => read!(pool),
        MainPool::Sqlite(pool) => read!(pool),
    };
    report.count("domains", total.max(0) as u64);
    for (domain, tenant) in orphans {
        report.push(Finding::new(
            Check::DomainOrphan,
            &domain,
            format!("the domain {domain} belongs to tenant {tenant}, which no longer exists"),
            format!(
                "DELETE FROM tenancy_domains WHERE domain = '{}';",
                domain.replace('\'', "''")
            ),
        ));
    }
    Ok(())
}

/// `open_tenant_routes`: `tenancy serve` verifies no token, so anyone who
/// names a tenant reaches its data.
fn open_tenant_routes(app: &App, report: &mut Report) {
    let auth = &app.config.auth;
    if auth.requires_token() {
        return;
    }
    let (detail, fix) = if auth.is_configured() {
        (
            "auth.required is false: a request without a token reaches the tenant it names through /api and /resolve",
            "remove auth.required: false (TENANCY__AUTH__REQUIRED=true)",
        )
    } else {
        (
            "no authentication is configured: any caller naming a tenant (header, subdomain, path or domain) \
             reaches its data through /api and /resolve",
            "list your identity provider in auth.issuers, or set auth.jwt_secret, auth.jwt_public_key_pem or \
             auth.jwt_public_key_file (TENANCY__AUTH__JWT_SECRET)",
        )
    };
    report.push(Finding::new(
        Check::OpenTenantRoutes,
        "tenancy serve",
        detail,
        fix,
    ));
}

/// The findings `tenancy serve` prints at start: the critical ones.
pub fn critical(report: &Report) -> impl Iterator<Item = &Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Critical)
}
