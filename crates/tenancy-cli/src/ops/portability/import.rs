//! Import: an archive back into a tenant, all or nothing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tenancy::{NewTenant, TenantId, TenantInfo, TenantStatus};
use tenancy_sql::portable::{Session, Table};

use crate::app::{App, TENANT_COLUMN};
use crate::ops::portability::archive::{self, ArchivedTable, Manifest};

use super::purge::{remove_everything, scan};
use super::{MOVING_KEY, PortabilityError, Report};

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// An archive written by [`export`](super::export).
    pub file: PathBuf,
    /// The imported tenant's slug [default: the archived tenant's].
    pub slug: Option<String>,
    /// Keep the archive's verified domains verified (the operator vouches
    /// for the archive); otherwise every imported domain is pending, with a
    /// new token, until its TXT record is seen.
    pub trust_domains: bool,
}

/// What an import made.
#[derive(Debug)]
pub struct Imported {
    /// The new tenant, in its archived status.
    pub tenant: TenantInfo,
    /// The archive's tenant id.
    pub archived_id: TenantId,
    /// Whether the new tenant kept the archived id.
    pub id_kept: bool,
    /// The domains it got.
    pub domains: Vec<tenancy::TenantDomain>,
    /// The archive's tables.
    pub tables: usize,
    /// The rows imported.
    pub rows: u64,
}

/// Restores an archive as a new tenant, all or nothing, verified against
/// its manifest. Recorded as `tenant.import`; a refusal or failure as
/// `tenant.import_failed`, with the reason.
pub async fn import(
    app: &App,
    actor: &str,
    request: &ImportRequest,
    report: &dyn Report,
) -> Result<Imported, PortabilityError> {
    let result = import_into(app, actor, request, report).await;
    match &result {
        Ok(imported) => {
            app.audit(
                tenancy::audit::NewAuditEntry::new(actor, "tenant.import")
                    .tenant(imported.tenant.id.clone())
                    .change(None, crate::ops::tenants::audit_value(&imported.tenant)),
            )
            .await;
        }
        Err(e) => {
            // Nothing was kept, so the entry names no tenant.
            app.audit(
                tenancy::audit::NewAuditEntry::new(actor, "tenant.import_failed").change(
                    None,
                    Some(serde_json::json!({
                        "file": request.file.display().to_string(),
                        "error": e.to_string(),
                    })),
                ),
            )
            .await;
        }
    }
    result
}

/// Why the archive's tenant id cannot be kept here, if it cannot: ids and
/// slugs are one namespace (a lookup tries the id, then the slug), so an
/// archived id must be nobody's id and nobody's slug.
async fn id_taken(app: &App, id: &TenantId) -> Result<Option<String>, PortabilityError> {
    let store = app.tenancy.store();
    if let Some(other) = store.get(id).await.map_err(PortabilityError::failed)? {
        return Ok(Some(format!("is the id of tenant {}", other.slug)));
    }
    if let Some(other) = store
        .get_by_slug(id.as_str())
        .await
        .map_err(PortabilityError::failed)?
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
async fn check_slug_free(app: &App, slug: &str) -> Result<(), PortabilityError> {
    let store = app.tenancy.store();
    if store
        .get_by_slug(slug)
        .await
        .map_err(PortabilityError::failed)?
        .is_some()
    {
        return Err(PortabilityError::refused(format!(
            "slug \"{slug}\" is already used by another tenant: pass --slug with a free one; nothing was imported"
        )));
    }
    if let Ok(as_id) = TenantId::new(slug)
        && let Some(other) = store.get(&as_id).await.map_err(PortabilityError::failed)?
    {
        return Err(PortabilityError::refused(format!(
            "slug \"{slug}\" is the id of tenant {}: ids and slugs are one namespace (`{slug}` would keep reaching that tenant); \
             pass --slug with a free one; nothing was imported",
            other.slug
        )));
    }
    Ok(())
}

async fn import_into(
    app: &App,
    actor: &str,
    args: &ImportRequest,
    report: &dyn Report,
) -> Result<Imported, PortabilityError> {
    let manifest = archive::read_and_verify(&args.file)?;
    if manifest.migration_version != app.migration_version {
        return Err(PortabilityError::refused(format!(
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
    let mut new =
        NewTenant::new(&slug, manifest.tenant.name.clone()).map_err(PortabilityError::failed)?;
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

    let tenant = app
        .tenancy
        .store()
        .create(new)
        .await
        .map_err(PortabilityError::failed)?;
    let (tenant, domains) = match restore(
        app,
        actor,
        &manifest,
        &args.file,
        &tenant,
        args.trust_domains,
        report,
    )
    .await
    {
        Ok(done) => done,
        Err(e) => {
            // Leave nothing behind: no rows, schema, database, file, config
            // or record.
            if let Err(cleanup) = remove_everything(app, actor, &tenant).await {
                report.note(&format!(
                    "warning: could not remove what the failed import made for {}: {cleanup}",
                    tenant.slug
                ));
            }
            return Err(match e {
                PortabilityError::App(e) => {
                    PortabilityError::failed(format!("import failed, nothing was kept: {e}"))
                }
                PortabilityError::Archive(e) => {
                    PortabilityError::Archive(format!("import failed, nothing was kept: {e}"))
                }
                PortabilityError::Refused(e) => {
                    PortabilityError::Refused(format!("import failed, nothing was kept: {e}"))
                }
                PortabilityError::Failed(e) => {
                    PortabilityError::Failed(format!("import failed, nothing was kept: {e}"))
                }
            });
        }
    };
    if let Some(why) = &id_refused {
        report.note(&format!(
            "warning: the archive's tenant id \"{archived_id}\" {why} here: imported under the new id {}",
            tenant.id
        ));
    }
    for d in domains.iter().filter(|d| !d.is_verified()) {
        report.note(&format!(
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
        ));
    }
    let rows: u64 = manifest.tables.iter().map(|t| t.digest.rows).sum();
    app.flush_events().await;
    Ok(Imported {
        tenant,
        archived_id: archived_id.clone(),
        id_kept: id_refused.is_none(),
        domains,
        tables: manifest.tables.len(),
        rows,
    })
}

/// Fills the new tenant from the archive; returns it (in the archived
/// status) and the domains it got.
async fn restore(
    app: &App,
    actor: &str,
    manifest: &Manifest,
    file: &Path,
    tenant: &TenantInfo,
    trust_domains: bool,
    report: &dyn Report,
) -> Result<(TenantInfo, Vec<tenancy::TenantDomain>), PortabilityError> {
    app.tenancy
        .isolation()
        .provision(tenant)
        .await
        .map_err(PortabilityError::failed)?;
    let data = app.tenant_data(&tenant.id, TENANT_COLUMN).await?;
    let mut session = data.write().await.map_err(PortabilityError::failed)?;
    let version = session
        .migration_version()
        .await
        .map_err(PortabilityError::failed)?
        .unwrap_or(app.migration_version);
    if version != manifest.migration_version {
        return Err(PortabilityError::refused(format!(
            "the new tenant's {} is at migration version {version}, the archive at {}",
            if data.is_shared() {
                "database"
            } else {
                "schema or database"
            },
            manifest.migration_version
        )));
    }
    let targets = session.tables().await.map_err(PortabilityError::failed)?;
    let mut pairs: Vec<(&ArchivedTable, Table)> = Vec::new();
    for archived in &manifest.tables {
        let target = targets
            .iter()
            .find(|t| t.name == archived.table.name)
            .cloned()
            .ok_or_else(|| {
                PortabilityError::failed(format!(
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
        session
            .clear_tables(&own)
            .await
            .map_err(PortabilityError::failed)?;
    }

    report.start(pairs.len() as u64);
    let shared = data.is_shared();
    let session_cell = &mut session;
    let pairs_ref = &pairs;
    archive::for_each_table(file, async |name, reader| {
        let Some((archived, target)) = pairs_ref.iter().find(|(a, _)| a.file == name) else {
            return Err(PortabilityError::archive(format!("unexpected entry {name}")));
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
                    PortabilityError::failed(format!(
                        "{text}: under row_level all tenants share these tables and their keys, \
                         and the archived rows' keys are taken (typically by the tenant the archive was \
                         exported from); import into another database, or purge that tenant first"
                    ))
                } else {
                    PortabilityError::failed(text)
                }
            })?;
        if digest != archived.digest {
            return Err(PortabilityError::archive(format!(
                "table `{}` changed while it was read ({} rows, SHA-256 {}; the manifest says {} rows, {})",
                target.name, digest.rows, digest.sha256, archived.digest.rows, archived.digest.sha256
            )));
        }
        report.table("imported", &target.name, digest.rows, started.elapsed());
        Ok(())
    })
    .await?;
    report.finish();
    verify_counts(&mut session, &pairs).await?;
    session.commit().await.map_err(PortabilityError::failed)?;

    for (key, value) in &manifest.config {
        if key == MOVING_KEY {
            // The pause of a move in progress where it was exported: not
            // state of the tenant.
            continue;
        }
        app.tenancy
            .overrides()
            .set(&tenant.id, key, value.clone())
            .await
            .map_err(PortabilityError::failed)?;
    }
    // Domains come along when no other tenant has them now, pending (with
    // a token of ours) unless the operator trusts the archive.
    let mut domains = Vec::new();
    if app.tenancy.domain_store().is_some() {
        for archived in &manifest.domains {
            match crate::ops::domains::import(app, actor, &tenant.id, archived, trust_domains).await
            {
                Ok(added) => domains.push(added),
                Err(crate::ops::domains::DomainError::Store(tenancy::StoreError::DomainTaken(
                    name,
                ))) => {
                    report.note(&format!(
                        "warning: domain {name} belongs to another tenant here: not imported"
                    ));
                }
                Err(e) => return Err(PortabilityError::refused(e)),
            }
        }
    }
    let store = app.tenancy.store();
    let active = store
        .set_status(&tenant.id, TenantStatus::Active, None)
        .await
        .map_err(PortabilityError::failed)?;
    let lifecycle = app.tenancy.lifecycle();
    let restored = match manifest.tenant.status {
        TenantStatus::Suspended => lifecycle
            .suspend(&tenant.id, manifest.tenant.status_reason.as_deref())
            .await
            .map_err(PortabilityError::failed)?,
        TenantStatus::Inactive => store
            .set_status(
                &tenant.id,
                TenantStatus::Inactive,
                manifest.tenant.status_reason.as_deref(),
            )
            .await
            .map_err(PortabilityError::failed)?,
        TenantStatus::Active | TenantStatus::Provisioning => active,
    };
    Ok((restored, domains))
}

/// Every table holds exactly the rows the manifest says.
async fn verify_counts(
    session: &mut Session,
    pairs: &[(&ArchivedTable, Table)],
) -> Result<(), PortabilityError> {
    for (archived, target) in pairs {
        let n = session
            .row_count(target)
            .await
            .map_err(PortabilityError::failed)?;
        if n != archived.digest.rows {
            return Err(PortabilityError::failed(format!(
                "table `{}` holds {n} rows of the tenant after the import, the manifest says {}",
                target.name, archived.digest.rows
            )));
        }
    }
    Ok(())
}
