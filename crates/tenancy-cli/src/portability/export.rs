//! `tenancy tenants export`: a tenant, its data and settings, to one archive.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use tenancy::{TenantInfo, TenantStatus};
use tenancy_sql::portable::{LineLimit, MAX_ROW_BYTES};

use crate::app::{App, CliError, Global, TENANT_COLUMN};
use crate::archive::{self, ArchiveWriter, ArchivedTable, Manifest, Source};

use super::Progress;

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
    crate::app::to_json(&summary)
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
