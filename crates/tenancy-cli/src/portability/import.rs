//! `tenancy tenants import`: an archive back into a tenant, all or nothing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use tenancy::{NewTenant, TenantId, TenantInfo, TenantStatus};
use tenancy_sql::portable::{Session, Table};

use crate::app::{App, CliError, Global, TENANT_COLUMN};
use crate::archive::{self, ArchivedTable, Manifest};

use super::Progress;
use super::purge::{remove_everything, scan};

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
        println!("{}", crate::app::to_json(&out)?);
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
