//! Whole-tenant data portability: `tenancy tenants export`,
//! `import`, and `delete --purge`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use tenancy::config::DeprovisionPolicy;
use tenancy::{NewTenant, TenantId, TenantInfo, TenantStatus};
use tenancy_sql::portable::{LineLimit, MAX_ROW_BYTES, Session, Table, TenantData};

use crate::app::{App, CliError, Global, MainPool, Migrator, TENANT_COLUMN};
use crate::archive::{self, ArchiveWriter, ArchivedTable, Manifest, Source};

/// `tenants export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "ID|SLUG")]
    pub tenant: String,
    /// The archive to write (a tar file; written as FILE.partial, renamed when complete).
    #[arg(long, short)]
    pub output: PathBuf,
}

/// `tenants import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An archive written by `tenancy tenants export`.
    pub file: PathBuf,
    /// The imported tenant's slug [default: the archived tenant's].
    #[arg(long)]
    pub slug: Option<String>,
    /// Keep the archive's verified domains verified (you vouch for the
    /// archive); without it every imported domain is pending, with a new
    /// token, until `tenancy domains verify` sees its TXT record.
    #[arg(long)]
    pub trust_domains: bool,
}

/// Progress on a terminal, lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(tables: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(tables);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} tables {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Self { bar }
    }

    fn table(&self, verb: &str, name: &str, rows: u64, took: std::time::Duration) {
        let line = format!("{verb} {name}: {rows} rows in {:.2} s", took.as_secs_f64());
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Writes every table of a tenant, its record, config and migration version
/// to one archive.
pub async fn export(global: &Global, args: ExportArgs) -> Result<(), CliError> {
    let app = App::open(global).await?;
    let tenant = app.tenant(&args.tenant).await?;
    if tenant.status == TenantStatus::Provisioning {
        return Err(CliError::msg(format!(
            "tenant {} is still provisioning: export it once it is active",
            tenant.slug
        )));
    }
    let started = Instant::now();
    let manifest = export_to(&app, &tenant, &args.output).await?;
    let rows: u64 = manifest.tables.iter().map(|t| t.digest.rows).sum();
    let took = started.elapsed().as_secs_f64();
    eprintln!(
        "exported tenant {} ({} tables, {rows} rows, migration version {}) to {} in {took:.2} s",
        tenant.slug,
        manifest.tables.len(),
        manifest.migration_version,
        args.output.display()
    );
    if global.json {
        println!("{}", summary_json(&manifest, &args.output, took)?);
    }
    Ok(())
}

#[derive(Serialize)]
struct Summary<'a> {
    tenant_id: &'a str,
    slug: &'a str,
    file: &'a Path,
    migration_version: i64,
    tables: Vec<TableSummary<'a>>,
    rows: u64,
    seconds: f64,
}

#[derive(Serialize)]
struct TableSummary<'a> {
    name: &'a str,
    rows: u64,
    sha256: &'a str,
}

fn summary_json(manifest: &Manifest, file: &Path, seconds: f64) -> Result<String, CliError> {
    let summary = Summary {
        tenant_id: manifest.tenant.id.as_str(),
        slug: manifest.tenant.slug.as_str(),
        file,
        migration_version: manifest.migration_version,
        tables: manifest
            .tables
            .iter()
            .map(|t| TableSummary {
                name: &t.table.name,
                rows: t.digest.rows,
                sha256: &t.digest.sha256,
            })
            .collect(),
        rows: manifest.tables.iter().map(|t| t.digest.rows).sum(),
        seconds,
    };
    crate::tenants::to_json(&summary)
}

/// The export itself (also used by `move`).
pub async fn export_to(app: &App, tenant: &TenantInfo, path: &Path) -> Result<Manifest, CliError> {
    let data = app.tenant_data(&tenant.id, TENANT_COLUMN).await?;
    let mut session = data.read().await.map_err(CliError::msg)?;
    let tables = session.tables().await.map_err(CliError::msg)?;
    let migration_version = session
        .migration_version()
        .await
        .map_err(CliError::msg)?
        .unwrap_or(app.migration_version);
    let config = app
        .tenancy
        .config_store()
        .overrides(&tenant.id)
        .await
        .map_err(CliError::msg)?;

    let mut out = ArchiveWriter::create(path)?;
    let progress = Progress::new(tables.len() as u64);
    let mut archived = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        let file = format!("tables/{:04}.ndjson", i + 1);
        let started = Instant::now();
        let start = out.begin_entry()?;
        // A row over the import's bound would make an archive no import
        // reads: refused here, the table named.
        let mut body = LineLimit::new(out.body(), MAX_ROW_BYTES);
        let digest = session
            .export_table(&table, None, &mut body)
            .await
            .map_err(|e| CliError::msg(format!("cannot export table `{}`: {e}", table.name)))?;
        out.end_entry(start, &file)?;
        progress.table("exported", &table.name, digest.rows, started.elapsed());
        archived.push(ArchivedTable {
            table,
            file,
            digest,
        });
    }
    progress.finish();
    drop(session);
    let manifest = Manifest {
        format: archive::FORMAT.into(),
        created_at: chrono::Utc::now(),
        source: Source {
            database: data.database_kind().into(),
            strategy: app.strategy().into(),
            tenancy_version: env!("CARGO_PKG_VERSION").into(),
        },
        tenant: tenant.clone(),
        config: config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        domains: match app.tenancy.domain_store() {
            Some(store) => store
                .list_domains(&tenant.id)
                .await
                .map_err(CliError::msg)?,
            None => Vec::new(),
        },
        migration_version,
        tables: archived,
    };
    out.finish(&manifest)?;
    Ok(manifest)
}

/// Restores an archive as a new tenant. A refusal or failure is recorded
/// in the audit log (`tenant.import_failed`, with the reason).
pub async fn import(global: &Global, args: ImportArgs) -> Result<(), CliError> {
    let app = App::open(global).await?;
    let result = import_into(&app, global, &args).await;
    if let Err(e) = &result {
        // Nothing was kept, so the entry names no tenant.
        app.audit(
            tenancy::audit::NewAuditEntry::new(crate::app::cli_actor(), "tenant.import_failed")
                .change(
                    None,
                    Some(serde_json::json!({
                        "file": args.file.display().to_string(),
                        "error": e.to_string(),
                    })),
                ),
        )
        .await;
    }
    result
}

/// Why the archive's tenant id cannot be kept here, if it cannot: ids and
/// slugs are one namespace (a lookup tries the id, then the slug), so an
/// archived id must be nobody's id and nobody's slug.
async fn id_taken(app: &App, id: &TenantId) -> Result<Option<String>, CliError> {
    let store = app.tenancy.store();
    if let Some(other) = store.get(id).await.map_err(CliError::msg)? {
        return Ok(Some(format!("is the id of tenant {}", other.slug)));
    }
    if let Some(other) = store
        .get_by_slug(id.as_str())
        .await
        .map_err(CliError::msg)?
    {
        return Ok(Some(format!("is the slug of tenant {}", other.slug)));
    }
    if let Err(e) = tenancy_sql::ident::tenant_object_name(id) {
        return Ok(Some(format!("cannot be used here ({e})")));
    }
    // A tenant deleted under the `keep` policy (or a pending pool member)
    // leaves rows, a schema, a database or archives under its id: a new
    // tenant with that id would take them over, and a failed import would
    // remove them.
    let traces = scan(app, id).await?;
    if !traces.is_empty() {
        return Ok(Some(format!("still has data here ({})", traces.join("; "))));
    }
    Ok(None)
}

/// Refuses a slug that is any tenant's slug or id.
async fn check_slug_free(app: &App, slug: &str) -> Result<(), CliError> {
    let store = app.tenancy.store();
    if store
        .get_by_slug(slug)
        .await
        .map_err(CliError::msg)?
        .is_some()
    {
        return Err(CliError::msg(format!(
            "slug \"{slug}\" is already used by another tenant: pass --slug with a free one; nothing was imported"
        )));
    }
    if let Ok(as_id) = TenantId::new(slug)
        && let Some(other) = store.get(&as_id).await.map_err(CliError::msg)?
    {
        return Err(CliError::msg(format!(
            "slug \"{slug}\" is the id of tenant {}: ids and slugs are one namespace (`{slug}` would keep reaching that tenant); \
             pass --slug with a free one; nothing was imported",
            other.slug
        )));
    }
    Ok(())
}

async fn import_into(app: &App, global: &Global, args: &ImportArgs) -> Result<(), CliError> {
    let manifest = archive::read_and_verify(&args.file)?;
    if manifest.migration_version != app.migration_version {
        return Err(CliError::msg(format!(
            "{} is at migration version {}, but tenants here are at version {}: \
             bring both to the same version (`tenancy migrate`) before importing; nothing was imported",
            args.file.display(),
            manifest.migration_version,
            app.migration_version
        )));
    }
    let slug = args
        .slug
        .clone()
        .unwrap_or_else(|| manifest.tenant.slug.to_string());
    let mut new = NewTenant::new(&slug, manifest.tenant.name.clone()).map_err(CliError::msg)?;
    check_slug_free(app, &slug).await?;
    // Keep the archived id when nobody has it as id or slug, so references
    // to it elsewhere stay right; else the store makes a new one.
    let archived_id = &manifest.tenant.id;
    let id_refused = id_taken(app, archived_id).await?;
    if id_refused.is_none() {
        new = new.id(archived_id.clone());
    }
    if let Some(plan) = &manifest.tenant.plan {
        new = new.plan(plan.clone());
    }
    new = new.metadata(manifest.tenant.metadata.clone());

    let started = Instant::now();
    let tenant = app
        .tenancy
        .store()
        .create(new)
        .await
        .map_err(CliError::msg)?;
    let (tenant, domains) =
        match restore(app, &manifest, &args.file, &tenant, args.trust_domains).await {
            Ok(done) => done,
            Err(e) => {
                // Leave nothing behind: no rows, schema, database, file, config
                // or record.
                if let Err(cleanup) = remove_everything(app, &tenant).await {
                    eprintln!(
                        "warning: could not remove what the failed import made for {}: {cleanup}",
                        tenant.slug
                    );
                }
                return Err(CliError::msg(format!(
                    "import failed, nothing was kept: {e}"
                )));
            }
        };
    if let Some(why) = &id_refused {
        eprintln!(
            "warning: the archive's tenant id \"{archived_id}\" {why} here: imported under the new id {}",
            tenant.id
        );
    }
    for d in domains.iter().filter(|d| !d.is_verified()) {
        eprintln!(
            "domain {} imported as pending: publish TXT {} = \"{}\" and run `tenancy domains verify {}`{}",
            d.domain,
            d.domain.challenge_name(),
            d.token,
            d.domain,
            if args.trust_domains {
                ""
            } else {
                " (or import with --trust-domains to keep an archive's verified domains verified)"
            }
        );
    }
    let rows: u64 = manifest.tables.iter().map(|t| t.digest.rows).sum();
    let took = started.elapsed().as_secs_f64();
    eprintln!(
        "imported tenant {} (id {}, status {}): {} tables, {rows} rows, verified against the manifest, in {took:.2} s",
        tenant.slug,
        tenant.id,
        tenant.status,
        manifest.tables.len()
    );
    if global.json {
        let mut out = serde_json::to_value(&tenant).map_err(CliError::msg)?;
        if let serde_json::Value::Object(map) = &mut out {
            map.insert("archived_id".into(), archived_id.as_str().into());
            map.insert("id_kept".into(), id_refused.is_none().into());
            map.insert(
                "domains".into(),
                domains
                    .iter()
                    .map(|d| serde_json::json!({"domain": d.domain, "status": d.status}))
                    .collect(),
            );
        }
        println!("{}", crate::tenants::to_json(&out)?);
    }
    app.audit(
        tenancy::audit::NewAuditEntry::new(crate::app::cli_actor(), "tenant.import")
            .tenant(tenant.id.clone())
            .change(None, crate::app::audit_value(&tenant)),
    )
    .await;
    app.flush_events().await;
    Ok(())
}

/// Fills the new tenant from the archive; returns it (in the archived
/// status) and the domains it got.
async fn restore(
    app: &App,
    manifest: &Manifest,
    file: &Path,
    tenant: &TenantInfo,
    trust_domains: bool,
) -> Result<(TenantInfo, Vec<tenancy::TenantDomain>), CliError> {
    app.tenancy
        .isolation()
        .provision(tenant)
        .await
        .map_err(CliError::msg)?;
    let data = app.tenant_data(&tenant.id, TENANT_COLUMN).await?;
    let mut session = data.write().await.map_err(CliError::msg)?;
    let version = session
        .migration_version()
        .await
        .map_err(CliError::msg)?
        .unwrap_or(app.migration_version);
    if version != manifest.migration_version {
        return Err(CliError::msg(format!(
            "the new tenant's {} is at migration version {version}, the archive at {}",
            if data.is_shared() {
                "database"
            } else {
                "schema or database"
            },
            manifest.migration_version
        )));
    }
    let targets = session.tables().await.map_err(CliError::msg)?;
    let mut pairs: Vec<(&ArchivedTable, Table)> = Vec::new();
    for archived in &manifest.tables {
        let target = targets
            .iter()
            .find(|t| t.name == archived.table.name)
            .cloned()
            .ok_or_else(|| {
                CliError::msg(format!(
                    "table `{}` of the archive does not exist here{}",
                    archived.table.name,
                    if data.is_shared() {
                        " with a tenant_id column"
                    } else {
                        " in the new tenant's schema or database"
                    }
                ))
            })?;
        pairs.push((archived, target));
    }
    if !data.is_shared() {
        // A fresh schema or database holds only what migrations seeded;
        // the archive is the tenant's whole state.
        let own: Vec<Table> = pairs.iter().map(|(_, t)| t.clone()).collect();
        session.clear_tables(&own).await.map_err(CliError::msg)?;
    }

    let progress = Progress::new(pairs.len() as u64);
    let shared = data.is_shared();
    let session_cell = &mut session;
    let pairs_ref = &pairs;
    archive::for_each_table(file, async |name, reader| {
        let Some((archived, target)) = pairs_ref.iter().find(|(a, _)| a.file == name) else {
            return Err(CliError::msg(format!("unexpected entry {name}")));
        };
        let started = Instant::now();
        let digest = session_cell
            .import_table(target, &archived.table.columns, reader)
            .await
            .map_err(|e| {
                let text = e.to_string();
                let duplicate = text.contains("UNIQUE constraint failed")
                    || text.contains("duplicate key value");
                if duplicate && shared {
                    CliError::msg(format!(
                        "{text}: under row_level all tenants share these tables and their keys, \
                         and the archived rows' keys are taken (typically by the tenant the archive was \
                         exported from); import into another database, or purge that tenant first"
                    ))
                } else {
                    CliError::msg(text)
                }
            })?;
        if digest != archived.digest {
            return Err(CliError::msg(format!(
                "table `{}` changed while it was read ({} rows, SHA-256 {}; the manifest says {} rows, {})",
                target.name, digest.rows, digest.sha256, archived.digest.rows, archived.digest.sha256
            )));
        }
        progress.table("imported", &target.name, digest.rows, started.elapsed());
        Ok(())
    })
    .await?;
    progress.finish();
    verify_counts(&mut session, &pairs).await?;
    session.commit().await.map_err(CliError::msg)?;

    for (key, value) in &manifest.config {
        if key == crate::serve::MOVING_KEY {
            // The pause of a move in progress where it was exported: not
            // state of the tenant.
            continue;
        }
        app.tenancy
            .overrides()
            .set(&tenant.id, key, value.clone())
            .await
            .map_err(CliError::msg)?;
    }
    // Domains come along when no other tenant has them now, pending (with
    // a token of ours) unless the operator trusts the archive.
    let mut domains = Vec::new();
    if app.tenancy.domain_store().is_some() {
        let actor = crate::app::cli_actor();
        for archived in &manifest.domains {
            match crate::domains::import(app, &actor, &tenant.id, archived, trust_domains).await {
                Ok(added) => domains.push(added),
                Err(crate::domains::DomainError::Store(tenancy::StoreError::DomainTaken(name))) => {
                    eprintln!(
                        "warning: domain {name} belongs to another tenant here: not imported"
                    );
                }
                Err(e) => return Err(CliError::msg(e)),
            }
        }
    }
    let store = app.tenancy.store();
    let active = store
        .set_status(&tenant.id, TenantStatus::Active, None)
        .await
        .map_err(CliError::msg)?;
    let lifecycle = app.tenancy.lifecycle();
    let restored = match manifest.tenant.status {
        TenantStatus::Suspended => lifecycle
            .suspend(&tenant.id, manifest.tenant.status_reason.as_deref())
            .await
            .map_err(CliError::msg)?,
        TenantStatus::Inactive => store
            .set_status(
                &tenant.id,
                TenantStatus::Inactive,
                manifest.tenant.status_reason.as_deref(),
            )
            .await
            .map_err(CliError::msg)?,
        TenantStatus::Active | TenantStatus::Provisioning => active,
    };
    Ok((restored, domains))
}

/// Every table holds exactly the rows the manifest says.
async fn verify_counts(
    session: &mut Session,
    pairs: &[(&ArchivedTable, Table)],
) -> Result<(), CliError> {
    for (archived, target) in pairs {
        let n = session.row_count(target).await.map_err(CliError::msg)?;
        if n != archived.digest.rows {
            return Err(CliError::msg(format!(
                "table `{}` holds {n} rows of the tenant after the import, the manifest says {}",
                target.name, archived.digest.rows
            )));
        }
    }
    Ok(())
}

/// `tenants delete TENANT --purge --yes`: every row, schema, database,
/// file, config key and placement of the tenant removed, then proved gone.
pub async fn purge(global: &Global, reference: &str) -> Result<(), CliError> {
    let app = App::open(global).await?;
    let tenant = app.tenant(reference).await?;
    let deleted = remove_everything(&app, &tenant).await?;
    let leftovers = scan(&app, &tenant.id).await?;
    for (table, n) in &deleted {
        eprintln!("deleted {n} rows of {} from {table}", tenant.slug);
    }
    if !leftovers.is_empty() {
        return Err(CliError::msg(format!(
            "tenant {} was deleted but a scan still finds: {}",
            tenant.slug,
            leftovers.join("; ")
        )));
    }
    app.audit(
        tenancy::audit::NewAuditEntry::new(crate::app::cli_actor(), "tenant.purge")
            .tenant(tenant.id.clone())
            .change(crate::app::audit_value(&tenant), None),
    )
    .await;
    app.flush_events().await;
    println!(
        "purged tenant {} (id {}): a scan of every shared table, schema, role, database, file, placement, config key, domain and the tenant record finds nothing left",
        tenant.slug, tenant.id
    );
    Ok(())
}

/// Deletes the tenant's rows from shared tables, drops its schema,
/// database or file (and archived copies), its config and its record.
async fn remove_everything(app: &App, tenant: &TenantInfo) -> Result<Vec<(String, u64)>, CliError> {
    let mut deleted = Vec::new();
    // Shared tables hold rows under every strategy (the built-in tables and
    // any table with the tenant column in the main database).
    let shared = main_data(app, &tenant.id)?;
    let mut session = shared.write().await.map_err(CliError::msg)?;
    deleted.extend(session.delete_rows().await.map_err(CliError::msg)?);
    session.commit().await.map_err(CliError::msg)?;
    drop_archives(app, &tenant.id).await?;
    if let Some(domains) = app.tenancy.domain_store() {
        for d in domains
            .list_domains(&tenant.id)
            .await
            .map_err(CliError::msg)?
        {
            crate::domains::remove(app, &crate::app::cli_actor(), d.domain.as_str())
                .await
                .map_err(CliError::msg)?;
        }
    }
    app.tenancy
        .lifecycle()
        .delete_with_policy(&tenant.id, DeprovisionPolicy::Drop)
        .await
        .map_err(CliError::msg)?;
    Ok(deleted.into_iter().filter(|(_, n)| *n > 0).collect())
}

/// The main database as shared tables of `tenant`.
fn main_data(app: &App, tenant: &TenantId) -> Result<TenantData, CliError> {
    match &app.main {
        MainPool::Postgres(pool) => {
            TenantData::pg_shared(pool.clone(), tenant.clone(), TENANT_COLUMN)
                .map(|d| app.signed(d))
        }
        MainPool::Sqlite(pool) => {
            TenantData::sqlite_shared(pool.clone(), tenant.clone(), TENANT_COLUMN)
        }
    }
    .map_err(CliError::msg)
}

/// Drops schemas, databases and files archived by earlier deactivations.
async fn drop_archives(app: &App, tenant: &TenantId) -> Result<(), CliError> {
    for name in archived_objects(app, tenant).await? {
        match (&app.main, &app.migrator) {
            (MainPool::Postgres(pool), Some(Migrator::PgSchema(_))) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    tenancy_sql::ident::quote_ident(&name).map_err(CliError::msg)?
                )))
                .execute(pool)
                .await
                .map_err(CliError::msg)?;
            }
            (_, Some(Migrator::PgDatabase(dbs))) => {
                dbs.drop_named(&name).await.map_err(CliError::msg)?;
            }
            (_, Some(Migrator::SqliteDatabase(files))) => {
                let path = files.dir().join(&name);
                std::fs::remove_file(&path)
                    .map_err(|e| CliError::msg(format!("cannot remove {}: {e}", path.display())))?;
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
async fn archived_objects(app: &App, tenant: &TenantId) -> Result<Vec<String>, CliError> {
    let sqlite_files = matches!(app.migrator, Some(Migrator::SqliteDatabase(_)));
    let is_archive = |name: &str| {
        let stem = if sqlite_files {
            name.strip_suffix(".db")
        } else {
            Some(name)
        };
        stem.is_some_and(|stem| tenancy_sql::ident::is_archive_of(stem, tenant))
    };
    let names: Vec<String> = match (&app.main, &app.migrator) {
        (MainPool::Postgres(pool), Some(Migrator::PgSchema(_))) => sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'archived\\_%'",
        )
        .fetch_all(pool)
        .await
        .map_err(CliError::msg)?,
        (_, Some(Migrator::PgDatabase(dbs))) => {
            dbs.database_names().await.map_err(CliError::msg)?
        }
        (_, Some(Migrator::SqliteDatabase(files))) => match std::fs::read_dir(files.dir()) {
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
async fn scan(app: &App, tenant: &TenantId) -> Result<Vec<String>, CliError> {
    let mut found = Vec::new();
    if app
        .tenancy
        .store()
        .get(tenant)
        .await
        .map_err(CliError::msg)?
        .is_some()
    {
        found.push("the tenant record".to_owned());
    }
    let cache = app.tenancy.config_store();
    cache.invalidate(tenant).await;
    let config = cache.overrides(tenant).await.map_err(CliError::msg)?;
    if !config.is_empty() {
        found.push(format!("{} config keys", config.len()));
    }
    if let Some(domains) = app.tenancy.domain_store() {
        let left = domains.list_domains(tenant).await.map_err(CliError::msg)?;
        if !left.is_empty() {
            found.push(format!("{} domains", left.len()));
        }
    }
    let shared = main_data(app, tenant)?;
    let mut session = shared.read().await.map_err(CliError::msg)?;
    for table in session.tables().await.map_err(CliError::msg)? {
        let n = session.row_count(&table).await.map_err(CliError::msg)?;
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
                .map_err(CliError::msg)?;
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
            .map_err(CliError::msg)?;
            if placed {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM tenancy_placements WHERE tenant_id = $1",
                )
                .bind(tenant.as_str())
                .fetch_one(pool)
                .await
                .map_err(CliError::msg)?;
                if n > 0 {
                    found.push("a database placement".to_owned());
                }
            }
        }
        (MainPool::Sqlite(_), _) => {}
    }
    if let (Some(Migrator::PgDatabase(dbs)), Some(own)) = (&app.migrator, &own) {
        for name in dbs.database_names().await.map_err(CliError::msg)? {
            if &name == own {
                found.push(format!("database {name}"));
            }
        }
    }
    if let (Some(Migrator::SqliteDatabase(files)), Some(own)) = (&app.migrator, &own)
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

/// `tenants move`.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "ID|SLUG")]
    pub tenant: String,
    /// The server to move it to (a name in lifecycle.database_servers).
    #[arg(long, value_name = "NAME", required_unless_present = "resume")]
    pub to_server: Option<String>,
    /// Finish or roll back a move that was interrupted (a crash, a lost
    /// connection) and left the tenant's writes paused: finished when its
    /// placement had switched already, else rolled back to where it was.
    #[arg(long, conflicts_with = "to_server")]
    pub resume: bool,
}

/// How often a move tries to clear its write pause before giving up.
const CLEAR_ATTEMPTS: u32 = 5;

/// Clears the write pause of a move (the `tenancy.moving` override),
/// retried with backoff (0.1 s, 0.2 s, 0.4 s, …): a pause left behind
/// answers 503 for good. Says so on stderr at each failed attempt.
async fn clear_pause(app: &App, tenant: &TenantInfo) -> Result<(), CliError> {
    let overrides = app.tenancy.overrides();
    let mut delay = std::time::Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match overrides.delete(&tenant.id, crate::serve::MOVING_KEY).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < CLEAR_ATTEMPTS => {
                eprintln!(
                    "warning: cannot clear the write pause of tenant {} (attempt {attempt} of {CLEAR_ATTEMPTS}): {e}; retrying in {:.1} s",
                    tenant.slug,
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => {
                return Err(CliError::msg(format!(
                    "the writes of tenant {} stay paused (every write is answered 503): clearing the `{}` override failed {CLEAR_ATTEMPTS} times: {e}; \
                     once the store answers, run `tenancy tenants move {} --resume`",
                    tenant.slug,
                    crate::serve::MOVING_KEY,
                    tenant.slug
                )));
            }
        }
    }
}

/// Moves a tenant's database to another server: writes pause, the data is
/// copied and verified, the placement switches (every `tenancy serve`
/// routes to the new server at once), writes resume; a failure at any step
/// leaves the tenant on its server.
pub async fn move_tenant(global: &Global, args: MoveArgs) -> Result<(), CliError> {
    let app = App::open(global).await?;
    let Some(Migrator::PgDatabase(dbs)) = app.migrator.clone() else {
        return Err(CliError::msg(format!(
            "tenants move applies to the `database` strategy on PostgreSQL with lifecycle.database_servers; \
             under `{}` on {} there is no server to move to (use `tenancy tenants export` and `import` to copy a tenant elsewhere)",
            app.strategy(),
            match app.main {
                MainPool::Postgres(_) => "PostgreSQL",
                MainPool::Sqlite(_) => "SQLite",
            }
        )));
    };
    let tenant = app.tenant(&args.tenant).await?;
    let to = match &args.to_server {
        Some(to) if !args.resume => to.as_str(),
        _ => return resume_move(&app, &dbs, &tenant, global).await,
    };
    let from = dbs
        .move_check(&tenant.id, to)
        .await
        .map_err(CliError::msg)?;
    let overrides = app.tenancy.overrides();

    // The new database is made and migrated before the pause: only the
    // copy itself pauses writes.
    let target_pool = dbs.create_on(&tenant.id, to).await.map_err(CliError::msg)?;
    let started = Instant::now();
    let flagged = overrides
        .set(
            &tenant.id,
            crate::serve::MOVING_KEY,
            serde_json::json!({"from": from, "to": to, "since": chrono::Utc::now()}),
        )
        .await
        .map_err(CliError::msg);
    let moved = async {
        flagged?;
        dbs.pause_writes(&tenant.id).await.map_err(CliError::msg)?;
        copy_and_switch(&app, &dbs, &tenant, to, target_pool).await
    }
    .await;
    match moved {
        Ok(rows) => {
            let cleared = clear_pause(&app, &tenant).await;
            let pause = started.elapsed();
            if let Err(e) = dbs.drop_on(&tenant.id, &from).await {
                eprintln!("warning: the copy on `{from}` could not be dropped: {e}");
            }
            if let Err(e) = cleared {
                app.audit(
                    tenancy::audit::NewAuditEntry::new(crate::app::cli_actor(), "tenant.move")
                        .tenant(tenant.id.clone())
                        .change(
                            Some(serde_json::json!({ "server": from })),
                            Some(serde_json::json!({ "server": to, "rows": rows, "writes_paused": true })),
                        ),
                )
                .await;
                return Err(CliError::msg(format!(
                    "tenant {} moved from `{from}` to `{to}` ({rows} rows copied and verified), but {e}",
                    tenant.slug
                )));
            }
            eprintln!(
                "moved tenant {} from `{from}` to `{to}`: {rows} rows copied and verified; writes paused for {:.3} s",
                tenant.slug,
                pause.as_secs_f64()
            );
            if global.json {
                let body = serde_json::json!({
                    "tenant_id": tenant.id,
                    "slug": tenant.slug,
                    "from": from,
                    "to": to,
                    "rows": rows,
                    "pause_ms": pause.as_secs_f64() * 1000.0,
                });
                println!("{body}");
            }
            app.audit(
                tenancy::audit::NewAuditEntry::new(crate::app::cli_actor(), "tenant.move")
                    .tenant(tenant.id.clone())
                    .change(
                        Some(serde_json::json!({ "server": from })),
                        Some(serde_json::json!({ "server": to, "rows": rows })),
                    ),
            )
            .await;
            Ok(())
        }
        Err(e) => {
            // Back to the source: the copy dropped, writes resumed.
            if let Err(cleanup) = dbs.drop_on(&tenant.id, to).await {
                eprintln!("warning: the partial copy on `{to}` could not be dropped: {cleanup}");
            }
            if let Err(resume) = dbs.resume_writes(&tenant.id, &from).await {
                eprintln!(
                    "warning: writes of {} could not be resumed on `{from}`: {resume}",
                    tenant.slug
                );
            }
            let cleared = clear_pause(&app, &tenant).await;
            Err(CliError::msg(format!(
                "move of tenant {} failed, it stays on `{from}` with its data unchanged: {e}{}",
                tenant.slug,
                match cleared {
                    Ok(()) => String::new(),
                    Err(paused) => format!("; and {paused}"),
                }
            )))
        }
    }
}

/// The `tenancy.moving` override a move sets: where from, where to.
#[derive(Debug, serde::Deserialize)]
struct MovingFlag {
    from: String,
    to: String,
}

/// `tenants move TENANT --resume`: finishes a move whose placement switched
/// already (the pause cleared, the source copy dropped if it is still
/// there), else rolls it back (the partial copy dropped, writes resumed on
/// the source, the pause cleared). Says which.
async fn resume_move(
    app: &App,
    dbs: &tenancy_sql::PgDatabaseIsolation,
    tenant: &TenantInfo,
    global: &Global,
) -> Result<(), CliError> {
    let say = |line: String| {
        if global.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let Some(flag) = app
        .tenancy
        .config_store()
        .overrides(&tenant.id)
        .await
        .map_err(CliError::msg)?
        .get(crate::serve::MOVING_KEY)
        .cloned()
    else {
        say(format!(
            "tenant {} has no interrupted move (no `{}` override): nothing to resume",
            tenant.slug,
            crate::serve::MOVING_KEY
        ));
        if global.json {
            println!(
                "{}",
                serde_json::json!({"tenant_id": tenant.id, "slug": tenant.slug, "outcome": "nothing_to_resume"})
            );
        }
        return Ok(());
    };
    let flag: MovingFlag = serde_json::from_value(flag.clone()).map_err(|e| {
        CliError::msg(format!(
            "the `{}` override of tenant {} is {flag}, not a move ({e}): check the servers by hand, \
             then remove it with `tenancy config unset {} {}`",
            crate::serve::MOVING_KEY,
            tenant.slug,
            tenant.slug,
            crate::serve::MOVING_KEY
        ))
    })?;
    let (from, to) = (flag.from.as_str(), flag.to.as_str());
    if from == to {
        return Err(CliError::msg(format!(
            "the `{}` override of tenant {} says it moves from `{from}` to itself: check the servers by hand, \
             then remove it with `tenancy config unset {} {}`; nothing was changed",
            crate::serve::MOVING_KEY,
            tenant.slug,
            tenant.slug,
            crate::serve::MOVING_KEY
        )));
    }
    let placed = dbs.placement_of(&tenant.id).await.map_err(CliError::msg)?;
    let finished = placed.as_deref() == Some(to);
    if finished {
        // The data is on `to` and every instance routes there: only the
        // pause and the source copy are left.
        dbs.drop_on(&tenant.id, from).await.map_err(|e| {
            CliError::msg(format!(
                "cannot drop the source copy of tenant {} on `{from}`: {e}; run --resume again",
                tenant.slug
            ))
        })?;
    } else if placed.as_deref() == Some(from) || placed.is_none() {
        // The copy never took over: drop it, writes back on the source.
        dbs.drop_on(&tenant.id, to).await.map_err(|e| {
            CliError::msg(format!(
                "cannot drop the partial copy of tenant {} on `{to}`: {e}; run --resume again",
                tenant.slug
            ))
        })?;
        dbs.resume_writes(&tenant.id, from).await.map_err(|e| {
            CliError::msg(format!(
                "cannot resume the writes of tenant {} on `{from}`: {e}; run --resume again",
                tenant.slug
            ))
        })?;
    } else {
        return Err(CliError::msg(format!(
            "tenant {} is placed on `{}`, but its interrupted move went from `{from}` to `{to}`: \
             check the servers by hand; nothing was changed",
            tenant.slug,
            placed.as_deref().unwrap_or_default()
        )));
    }
    clear_pause(app, tenant).await?;
    let (done, server) = if finished {
        ("finished", to)
    } else {
        ("rolled back", from)
    };
    say(format!(
        "interrupted move of tenant {} from `{from}` to `{to}` {done}: it is on `{server}`, writes resumed{}",
        tenant.slug,
        if finished {
            format!(", the copy on `{from}` dropped")
        } else {
            format!(", the partial copy on `{to}` dropped")
        }
    ));
    if global.json {
        println!(
            "{}",
            serde_json::json!({
                "tenant_id": tenant.id,
                "slug": tenant.slug,
                "from": from,
                "to": to,
                "outcome": if finished { "finished" } else { "rolled_back" },
                "server": server,
            })
        );
    }
    app.audit(
        tenancy::audit::NewAuditEntry::new(crate::app::cli_actor(), "tenant.move_resume")
            .tenant(tenant.id.clone())
            .change(
                Some(serde_json::json!({ "from": from, "to": to })),
                Some(serde_json::json!({ "server": server, "outcome": done })),
            ),
    )
    .await;
    Ok(())
}

/// Copies every table to `to`, checks the copy byte for byte, switches the
/// placement. Returns the rows copied.
async fn copy_and_switch(
    app: &App,
    dbs: &tenancy_sql::PgDatabaseIsolation,
    tenant: &TenantInfo,
    to: &str,
    target_pool: sqlx::PgPool,
) -> Result<u64, CliError> {
    use std::io::{BufReader, BufWriter, Seek, Write};
    let source = app.tenant_data(&tenant.id, TENANT_COLUMN).await?;
    let target = TenantData::pg_database(target_pool.clone(), tenant.id.clone(), TENANT_COLUMN)
        .map_err(CliError::msg)?;
    let mut read = source.read().await.map_err(CliError::msg)?;
    let tables = read.tables().await.map_err(CliError::msg)?;
    let mut write = target.write().await.map_err(CliError::msg)?;
    let targets = write.tables().await.map_err(CliError::msg)?;
    let own: Vec<Table> = targets
        .iter()
        .filter(|t| tables.iter().any(|s| s.name == t.name))
        .cloned()
        .collect();
    write.clear_tables(&own).await.map_err(CliError::msg)?;
    let mut copied = Vec::new();
    for table in &tables {
        let target_table = targets
            .iter()
            .find(|t| t.name == table.name)
            .ok_or_else(|| CliError::msg(format!("table `{}` is missing on `{to}`", table.name)))?;
        let spool = tempfile::tempfile().map_err(CliError::msg)?;
        let mut out = BufWriter::with_capacity(1 << 20, spool);
        let digest = read
            .export_table(table, None, &mut out)
            .await
            .map_err(CliError::msg)?;
        out.flush().map_err(CliError::msg)?;
        let mut spool = out.into_inner().map_err(CliError::msg)?;
        spool.rewind().map_err(CliError::msg)?;
        let imported = write
            .import_table(
                target_table,
                &table.columns,
                &mut BufReader::with_capacity(1 << 20, spool),
            )
            .await
            .map_err(CliError::msg)?;
        if imported != digest {
            return Err(CliError::msg(format!(
                "table `{}` changed while copied",
                table.name
            )));
        }
        copied.push((target_table.clone(), digest));
    }
    write.commit().await.map_err(CliError::msg)?;
    drop(read);
    // The copy, read back from the new server, is the source byte for byte.
    let mut check = target.read().await.map_err(CliError::msg)?;
    for (table, digest) in &copied {
        let again = check
            .export_table(table, None, &mut std::io::sink())
            .await
            .map_err(CliError::msg)?;
        if &again != digest {
            return Err(CliError::msg(format!(
                "verification failed: table `{}` reads back as {} rows ({}) on `{to}`, {} rows ({}) on the source",
                table.name, again.rows, again.sha256, digest.rows, digest.sha256
            )));
        }
    }
    drop(check);
    target_pool.close().await;
    dbs.switch_placement(tenant, to)
        .await
        .map_err(CliError::msg)?;
    Ok(copied.iter().map(|(_, d)| d.rows).sum())
}
