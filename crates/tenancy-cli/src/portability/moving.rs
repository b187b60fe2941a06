//! `tenancy tenants move`: a tenant to another database server, writes paused meanwhile.

use std::time::Instant;

use clap::Args;
use tenancy::TenantInfo;
use tenancy_sql::portable::{Table, TenantData};

use crate::app::{App, CliError, Global, MainPool, Migrator, TENANT_COLUMN};

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
