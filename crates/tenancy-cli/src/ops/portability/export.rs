//! Export: a tenant, its data and settings, to one archive.

use std::path::Path;
use std::time::Instant;

use tenancy::{TenantInfo, TenantStatus};
use tenancy_sql::portable::{LineLimit, MAX_ROW_BYTES};

use crate::app::{App, TENANT_COLUMN};
use crate::ops::portability::archive::{self, ArchiveWriter, ArchivedTable, Manifest, Source};

use super::{PortabilityError, Report};

/// Writes every table of `tenant`, its record, config, domains and
/// migration version to one archive at `path` (written as `FILE.partial`,
/// renamed when complete).
pub async fn export(
    app: &App,
    tenant: &TenantInfo,
    path: &Path,
    report: &dyn Report,
) -> Result<Manifest, PortabilityError> {
    if tenant.status == TenantStatus::Provisioning {
        return Err(PortabilityError::refused(format!(
            "tenant {} is still provisioning: export it once it is active",
            tenant.slug
        )));
    }
    export_to(app, tenant, path, report).await
}

/// The export itself.
async fn export_to(
    app: &App,
    tenant: &TenantInfo,
    path: &Path,
    report: &dyn Report,
) -> Result<Manifest, PortabilityError> {
    let data = app.tenant_data(&tenant.id, TENANT_COLUMN).await?;
    let mut session = data.read().await.map_err(PortabilityError::failed)?;
    let tables = session.tables().await.map_err(PortabilityError::failed)?;
    let migration_version = session
        .migration_version()
        .await
        .map_err(PortabilityError::failed)?
        .unwrap_or(app.migration_version);
    let config = app
        .tenancy
        .config_store()
        .overrides(&tenant.id)
        .await
        .map_err(PortabilityError::failed)?;

    let mut out = ArchiveWriter::create(path)?;
    report.start(tables.len() as u64);
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
            .map_err(|e| {
                PortabilityError::failed(format!("cannot export table `{}`: {e}", table.name))
            })?;
        out.end_entry(start, &file)?;
        report.table("exported", &table.name, digest.rows, started.elapsed());
        archived.push(ArchivedTable {
            table,
            file,
            digest,
        });
    }
    report.finish();
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
                .map_err(PortabilityError::failed)?,
            None => Vec::new(),
        },
        migration_version,
        tables: archived,
    };
    out.finish(&manifest)?;
    Ok(manifest)
}
