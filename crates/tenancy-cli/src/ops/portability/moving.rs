//! Move: a tenant to another database server, writes paused meanwhile.

use std::time::Instant;

use tenancy::TenantInfo;
use tenancy_sql::portable::{Table, TenantData};

use super::{PortabilityError, Report};
use crate::app::{App, MainPool, TENANT_COLUMN, TenantMigrator};

/// The config override a move sets while a tenant's data is copied: its
/// writes are answered 503 meanwhile.
pub const MOVING_KEY: &str = "tenancy.moving";

/// A finished move.
#[derive(Debug)]
pub struct MoveOutcome {
    /// The server the tenant was on.
    pub from: String,
    /// The server it is on now.
    pub to: String,
    /// Rows copied and verified.
    pub rows: u64,
    /// How long its writes were paused.
    pub pause: std::time::Duration,
}

/// What [`resume_move`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Resumed {
    /// There was no interrupted move.
    NothingToResume,
    /// The placement had switched: the move was finished (the pause
    /// cleared, the source copy dropped).
    Finished {
        /// The server the tenant was on.
        from: String,
        /// The server it is on now.
        to: String,
    },
    /// The placement had not switched: the move was rolled back (the
    /// partial copy dropped, writes resumed on the source).
    RolledBack {
        /// The server the tenant is on (again).
        from: String,
        /// The server the move went to.
        to: String,
    },
}

/// How often a move tries to clear its write pause before giving up.
const CLEAR_ATTEMPTS: u32 = 5;

/// Clears the write pause of a move (the `tenancy.moving` override),
/// retried with backoff (0.1 s, 0.2 s, 0.4 s, …): a pause left behind
/// answers 503 for good. Says so at each failed attempt.
async fn clear_pause(
    app: &App,
    tenant: &TenantInfo,
    report: &dyn Report,
) -> Result<(), PortabilityError> {
    let overrides = app.tenancy.overrides();
    let mut delay = std::time::Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match overrides.delete(&tenant.id, MOVING_KEY).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < CLEAR_ATTEMPTS => {
                report.note(&format!(
                    "warning: cannot clear the write pause of tenant {} (attempt {attempt} of {CLEAR_ATTEMPTS}): {e}; retrying in {:.1} s",
                    tenant.slug,
                    delay.as_secs_f64()
                ));
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => {
                return Err(PortabilityError::refused(format!(
                    "the writes of tenant {} stay paused (every write is answered 503): clearing the `{}` override failed {CLEAR_ATTEMPTS} times: {e}; \
                     once the store answers, run `tenancy tenants move {} --resume`",
                    tenant.slug, MOVING_KEY, tenant.slug
                )));
            }
        }
    }
}

/// Moves a tenant's database to another server: writes pause, the data is
/// copied and verified, the placement switches (every `tenancy serve`
/// routes to the new server at once), writes resume; a failure at any step
/// leaves the tenant on its server.
/// Recorded as `tenant.move`.
pub async fn move_tenant(
    app: &App,
    actor: &str,
    tenant: &TenantInfo,
    to: &str,
    report: &dyn Report,
) -> Result<MoveOutcome, PortabilityError> {
    let dbs = servers(app)?;
    let from = dbs
        .move_check(&tenant.id, to)
        .await
        .map_err(PortabilityError::failed)?;
    let overrides = app.tenancy.overrides();

    // The new database is made and migrated before the pause: only the
    // copy itself pauses writes.
    let target_pool = dbs
        .create_on(&tenant.id, to)
        .await
        .map_err(PortabilityError::failed)?;
    let started = Instant::now();
    let flagged = overrides
        .set(
            &tenant.id,
            MOVING_KEY,
            serde_json::json!({"from": from, "to": to, "since": chrono::Utc::now()}),
        )
        .await
        .map_err(PortabilityError::failed);
    let moved = async {
        flagged?;
        dbs.pause_writes(&tenant.id)
            .await
            .map_err(PortabilityError::failed)?;
        copy_and_switch(app, &dbs, tenant, to, target_pool).await
    }
    .await;
    match moved {
        Ok(rows) => {
            let cleared = clear_pause(app, tenant, report).await;
            let pause = started.elapsed();
            if let Err(e) = dbs.drop_on(&tenant.id, &from).await {
                report.note(&format!(
                    "warning: the copy on `{from}` could not be dropped: {e}"
                ));
            }
            if let Err(e) = cleared {
                app.audit(
                    tenancy::audit::NewAuditEntry::new(actor, "tenant.move")
                        .tenant(tenant.id.clone())
                        .change(
                            Some(serde_json::json!({ "server": from })),
                            Some(serde_json::json!({ "server": to, "rows": rows, "writes_paused": true })),
                        ),
                )
                .await;
                return Err(PortabilityError::refused(format!(
                    "tenant {} moved from `{from}` to `{to}` ({rows} rows copied and verified), but {e}",
                    tenant.slug
                )));
            }
            app.audit(
                tenancy::audit::NewAuditEntry::new(actor, "tenant.move")
                    .tenant(tenant.id.clone())
                    .change(
                        Some(serde_json::json!({ "server": from })),
                        Some(serde_json::json!({ "server": to, "rows": rows })),
                    ),
            )
            .await;
            Ok(MoveOutcome {
                from,
                to: to.to_owned(),
                rows,
                pause,
            })
        }
        Err(e) => {
            // Back to the source: the copy dropped, writes resumed.
            if let Err(cleanup) = dbs.drop_on(&tenant.id, to).await {
                report.note(&format!(
                    "warning: the partial copy on `{to}` could not be dropped: {cleanup}"
                ));
            }
            if let Err(resume) = dbs.resume_writes(&tenant.id, &from).await {
                report.note(&format!(
                    "warning: writes of {} could not be resumed on `{from}`: {resume}",
                    tenant.slug
                ));
            }
            let cleared = clear_pause(app, tenant, report).await;
            Err(PortabilityError::failed(format!(
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

/// The database servers of the `database` strategy, or why a move does not apply.
fn servers(app: &App) -> Result<tenancy_sql::PgDatabaseIsolation, PortabilityError> {
    let Some(TenantMigrator::PgDatabase(dbs)) = app.migrator.clone() else {
        return Err(PortabilityError::refused(format!(
            "tenants move applies to the `database` strategy on PostgreSQL with lifecycle.database_servers; \
             under `{}` on {} there is no server to move to (use `tenancy tenants export` and `import` to copy a tenant elsewhere)",
            app.strategy(),
            match app.main {
                MainPool::Postgres(_) => "PostgreSQL",
                MainPool::Sqlite(_) => "SQLite",
            }
        )));
    };
    Ok(dbs)
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
pub async fn resume_move(
    app: &App,
    actor: &str,
    tenant: &TenantInfo,
    report: &dyn Report,
) -> Result<Resumed, PortabilityError> {
    let dbs = servers(app)?;
    let Some(flag) = app
        .tenancy
        .config_store()
        .overrides(&tenant.id)
        .await
        .map_err(PortabilityError::failed)?
        .get(MOVING_KEY)
        .cloned()
    else {
        return Ok(Resumed::NothingToResume);
    };
    let flag: MovingFlag = serde_json::from_value(flag.clone()).map_err(|e| {
        PortabilityError::failed(format!(
            "the `{}` override of tenant {} is {flag}, not a move ({e}): check the servers by hand, \
             then remove it with `tenancy config unset {} {}`",
            MOVING_KEY,
            tenant.slug,
            tenant.slug,
            MOVING_KEY
        ))
    })?;
    let (from, to) = (flag.from.as_str(), flag.to.as_str());
    if from == to {
        return Err(PortabilityError::refused(format!(
            "the `{}` override of tenant {} says it moves from `{from}` to itself: check the servers by hand, \
             then remove it with `tenancy config unset {} {}`; nothing was changed",
            MOVING_KEY, tenant.slug, tenant.slug, MOVING_KEY
        )));
    }
    let placed = dbs
        .placement_of(&tenant.id)
        .await
        .map_err(PortabilityError::failed)?;
    let finished = placed.as_deref() == Some(to);
    if finished {
        // The data is on `to` and every instance routes there: only the
        // pause and the source copy are left.
        dbs.drop_on(&tenant.id, from).await.map_err(|e| {
            PortabilityError::failed(format!(
                "cannot drop the source copy of tenant {} on `{from}`: {e}; run --resume again",
                tenant.slug
            ))
        })?;
    } else if placed.as_deref() == Some(from) || placed.is_none() {
        // The copy never took over: drop it, writes back on the source.
        dbs.drop_on(&tenant.id, to).await.map_err(|e| {
            PortabilityError::failed(format!(
                "cannot drop the partial copy of tenant {} on `{to}`: {e}; run --resume again",
                tenant.slug
            ))
        })?;
        dbs.resume_writes(&tenant.id, from).await.map_err(|e| {
            PortabilityError::failed(format!(
                "cannot resume the writes of tenant {} on `{from}`: {e}; run --resume again",
                tenant.slug
            ))
        })?;
    } else {
        return Err(PortabilityError::refused(format!(
            "tenant {} is placed on `{}`, but its interrupted move went from `{from}` to `{to}`: \
             check the servers by hand; nothing was changed",
            tenant.slug,
            placed.as_deref().unwrap_or_default()
        )));
    }
    clear_pause(app, tenant, report).await?;
    let (done, server) = if finished {
        ("finished", to)
    } else {
        ("rolled back", from)
    };
    app.audit(
        tenancy::audit::NewAuditEntry::new(actor, "tenant.move_resume")
            .tenant(tenant.id.clone())
            .change(
                Some(serde_json::json!({ "from": from, "to": to })),
                Some(serde_json::json!({ "server": server, "outcome": done })),
            ),
    )
    .await;
    let (from, to) = (from.to_owned(), to.to_owned());
    Ok(if finished {
        Resumed::Finished { from, to }
    } else {
        Resumed::RolledBack { from, to }
    })
}

/// Copies every table to `to`, checks the copy byte for byte, switches the
/// placement. Returns the rows copied.
async fn copy_and_switch(
    app: &App,
    dbs: &tenancy_sql::PgDatabaseIsolation,
    tenant: &TenantInfo,
    to: &str,
    target_pool: sqlx::PgPool,
) -> Result<u64, PortabilityError> {
    use std::io::{BufReader, BufWriter, Seek, Write};
    let source = app.tenant_data(&tenant.id, TENANT_COLUMN).await?;
    let target = TenantData::pg_database(target_pool.clone(), tenant.id.clone(), TENANT_COLUMN)
        .map_err(PortabilityError::failed)?;
    let mut read = source.read().await.map_err(PortabilityError::failed)?;
    let tables = read.tables().await.map_err(PortabilityError::failed)?;
    let mut write = target.write().await.map_err(PortabilityError::failed)?;
    let targets = write.tables().await.map_err(PortabilityError::failed)?;
    let own: Vec<Table> = targets
        .iter()
        .filter(|t| tables.iter().any(|s| s.name == t.name))
        .cloned()
        .collect();
    write
        .clear_tables(&own)
        .await
        .map_err(PortabilityError::failed)?;
    let mut copied = Vec::new();
    for table in &tables {
        let target_table = targets
            .iter()
            .find(|t| t.name == table.name)
            .ok_or_else(|| {
                PortabilityError::failed(format!("table `{}` is missing on `{to}`", table.name))
            })?;
        let spool = tempfile::tempfile().map_err(PortabilityError::failed)?;
        let mut out = BufWriter::with_capacity(1 << 20, spool);
        let digest = read
            .export_table(table, None, &mut out)
            .await
            .map_err(PortabilityError::failed)?;
        out.flush().map_err(PortabilityError::failed)?;
        let mut spool = out.into_inner().map_err(PortabilityError::failed)?;
        spool.rewind().map_err(PortabilityError::failed)?;
        let imported = write
            .import_table(
                target_table,
                &table.columns,
                &mut BufReader::with_capacity(1 << 20, spool),
            )
            .await
            .map_err(PortabilityError::failed)?;
        if imported != digest {
            return Err(PortabilityError::refused(format!(
                "table `{}` changed while copied",
                table.name
            )));
        }
        copied.push((target_table.clone(), digest));
    }
    write.commit().await.map_err(PortabilityError::failed)?;
    drop(read);
    // The copy, read back from the new server, is the source byte for byte.
    let mut check = target.read().await.map_err(PortabilityError::failed)?;
    for (table, digest) in &copied {
        let again = check
            .export_table(table, None, &mut std::io::sink())
            .await
            .map_err(PortabilityError::failed)?;
        if &again != digest {
            return Err(PortabilityError::refused(format!(
                "verification failed: table `{}` reads back as {} rows ({}) on `{to}`, {} rows ({}) on the source",
                table.name, again.rows, again.sha256, digest.rows, digest.sha256
            )));
        }
    }
    drop(check);
    target_pool.close().await;
    dbs.switch_placement(tenant, to)
        .await
        .map_err(PortabilityError::failed)?;
    Ok(copied.iter().map(|(_, d)| d.rows).sum())
}
