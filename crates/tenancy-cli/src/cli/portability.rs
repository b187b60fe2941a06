//! `tenancy tenants export|import|move` and `delete --purge`
//! ([`crate::ops::portability`]), with progress on stderr.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::app::App;
use crate::cli::{CliError, Global, to_json};
use crate::ops::portability::archive::Manifest;
use crate::ops::portability::{self, ImportRequest, Report, Resumed};

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

/// `tenants export`: writes every table of a tenant, its record, config
/// and migration version to one archive.
pub async fn export(global: &Global, args: ExportArgs) -> Result<(), CliError> {
    let app = App::open(&global.source()).await?;
    let tenant = app.tenant(&args.tenant).await?;
    let started = Instant::now();
    let manifest = portability::export(&app, &tenant, &args.output, &Progress::default()).await?;
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
    to_json(&summary)
}

/// `tenants import`: restores an archive as a new tenant.
pub async fn import(global: &Global, args: ImportArgs) -> Result<(), CliError> {
    let app = App::open(&global.source()).await?;
    let request = ImportRequest {
        file: args.file,
        slug: args.slug,
        trust_domains: args.trust_domains,
    };
    let started = Instant::now();
    let imported =
        portability::import(&app, &crate::cli::actor(), &request, &Progress::default()).await?;
    let tenant = &imported.tenant;
    let took = started.elapsed().as_secs_f64();
    eprintln!(
        "imported tenant {} (id {}, status {}): {} tables, {} rows, verified against the manifest, in {took:.2} s",
        tenant.slug, tenant.id, tenant.status, imported.tables, imported.rows
    );
    if global.json {
        let mut out = serde_json::to_value(tenant).map_err(CliError::usage)?;
        if let serde_json::Value::Object(map) = &mut out {
            map.insert("archived_id".into(), imported.archived_id.as_str().into());
            map.insert("id_kept".into(), imported.id_kept.into());
            map.insert(
                "domains".into(),
                imported
                    .domains
                    .iter()
                    .map(|d| serde_json::json!({"domain": d.domain, "status": d.status}))
                    .collect(),
            );
        }
        println!("{}", to_json(&out)?);
    }
    Ok(())
}

/// `tenants delete TENANT --purge --yes`: every row, schema, database,
/// file, config key and placement of the tenant removed, then proved gone.
pub async fn purge(global: &Global, reference: &str) -> Result<(), CliError> {
    let app = App::open(&global.source()).await?;
    let tenant = app.tenant(reference).await?;
    let purged = portability::purge(&app, &crate::cli::actor(), &tenant).await?;
    for (table, n) in &purged.deleted {
        eprintln!("deleted {n} rows of {} from {table}", tenant.slug);
    }
    app.flush_events().await;
    println!(
        "purged tenant {} (id {}): a scan of every shared table, schema, role, database, file, placement, config key, domain and the tenant record finds nothing left",
        tenant.slug, tenant.id
    );
    Ok(())
}

/// `tenants move`: moves a tenant's database to another server, or
/// (`--resume`) finishes or rolls back an interrupted move.
pub async fn move_tenant(global: &Global, args: MoveArgs) -> Result<(), CliError> {
    let app = App::open(&global.source()).await?;
    let tenant = app.tenant(&args.tenant).await?;
    let actor = crate::cli::actor();
    let report = Progress::default();
    let to = match &args.to_server {
        Some(to) if !args.resume => to.as_str(),
        _ => {
            let resumed = portability::resume_move(&app, &actor, &tenant, &report).await?;
            // With --json the line goes to stderr, the JSON to stdout.
            let say = |line: String| {
                if global.json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            };
            let body = match &resumed {
                Resumed::NothingToResume => {
                    say(format!(
                        "tenant {} has no interrupted move (no `{}` override): nothing to resume",
                        tenant.slug,
                        portability::MOVING_KEY
                    ));
                    serde_json::json!({"tenant_id": tenant.id, "slug": tenant.slug, "outcome": "nothing_to_resume"})
                }
                Resumed::Finished { from, to } | Resumed::RolledBack { from, to } => {
                    let finished = matches!(resumed, Resumed::Finished { .. });
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
                    serde_json::json!({
                        "tenant_id": tenant.id,
                        "slug": tenant.slug,
                        "from": from,
                        "to": to,
                        "outcome": if finished { "finished" } else { "rolled_back" },
                        "server": server,
                    })
                }
            };
            if global.json {
                println!("{body}");
            }
            return Ok(());
        }
    };
    let moved = portability::move_tenant(&app, &actor, &tenant, to, &report).await?;
    eprintln!(
        "moved tenant {} from `{}` to `{}`: {} rows copied and verified; writes paused for {:.3} s",
        tenant.slug,
        moved.from,
        moved.to,
        moved.rows,
        moved.pause.as_secs_f64()
    );
    if global.json {
        let body = serde_json::json!({
            "tenant_id": tenant.id,
            "slug": tenant.slug,
            "from": moved.from,
            "to": moved.to,
            "rows": moved.rows,
            "pause_ms": moved.pause.as_secs_f64() * 1000.0,
        });
        println!("{body}");
    }
    Ok(())
}

/// Progress on a terminal (a bar), lines on stderr otherwise.
#[derive(Default)]
struct Progress {
    bar: std::sync::OnceLock<indicatif::ProgressBar>,
}

impl Report for Progress {
    fn start(&self, tables: u64) {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(tables);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} tables {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let _ = self.bar.set(bar);
        }
    }

    fn table(&self, verb: &str, name: &str, rows: u64, took: Duration) {
        let line = format!("{verb} {name}: {rows} rows in {:.2} s", took.as_secs_f64());
        match self.bar.get() {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }

    fn note(&self, line: &str) {
        match self.bar.get() {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}
