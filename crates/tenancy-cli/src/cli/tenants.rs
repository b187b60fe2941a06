//! `tenancy tenants …`: create, inspect and change tenants. `--json`
//! prints the tenant (or `{"items": […], "total": N}` for `list`) on stdout.

use clap::{Args, Subcommand};
use serde_json::json;
use tenancy::{NewTenant, Slug, TenantInfo, TenantUpdate};

use crate::app::{App, json_or_string};
use crate::cli::{CliError, Global, to_json};
use crate::ops::tenants::{self, Change};

/// Tenant commands.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant (provisioned by the isolation strategy, then active).
    Create(CreateArgs),
    /// List active tenants (all with --all).
    List(ListArgs),
    /// Show one tenant.
    Show(TenantArg),
    /// Change a tenant's name, slug or plan.
    Update(UpdateArgs),
    /// Suspend a tenant: it is refused service, its data is kept.
    Suspend(SuspendArgs),
    /// Make a tenant active again.
    Activate(TenantArg),
    /// Switch a tenant off (applies lifecycle.deprovision_policy).
    Deactivate(TenantArg),
    /// Delete a tenant and its config overrides (applies
    /// lifecycle.deprovision_policy to its data; --purge --yes removes everything).
    Delete(DeleteArgs),
    /// Write every table, the record, config and migration version of a tenant to one archive.
    Export(crate::cli::portability::ExportArgs),
    /// Restore an archive as a new tenant (any strategy, same migration version), verified.
    Import(crate::cli::portability::ImportArgs),
    /// Move a tenant's database to another server (database strategy, lifecycle.database_servers).
    Move(crate::cli::portability::MoveArgs),
    /// The pending pool (lifecycle.pending_pool): provisioned tenants waiting for a signup.
    #[command(subcommand)]
    Pool(crate::cli::pool::PoolCommand),
}

/// `tenants delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "ID|SLUG")]
    pub tenant: String,
    /// Remove every row, schema, database, file, config key and placement of the
    /// tenant (whatever lifecycle.deprovision_policy says), then scan to prove it.
    #[arg(long)]
    pub purge: bool,
    /// Confirm --purge: it cannot be undone.
    #[arg(long, requires = "purge")]
    pub yes: bool,
}

/// `tenants create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Unique handle: 2-63 lower-case letters, digits and '-', starting with a letter.
    #[arg(long)]
    pub slug: String,
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// Commercial plan (selects plan-wide defaults such as rate limits).
    #[arg(long)]
    pub plan: Option<String>,
    /// Metadata: a JSON object.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Put the tenant on a trial of this many days.
    #[arg(long, conflicts_with = "trial_ends_at")]
    pub trial_days: Option<u32>,
    /// Put the tenant on a trial ending at this time (RFC 3339, e.g. 2026-12-31T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub trial_ends_at: Option<String>,
}

/// A trial end from `--trial-days` or `--trial-ends-at`.
fn trial_end(
    days: Option<u32>,
    at: Option<&str>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, CliError> {
    if let Some(days) = days {
        return Ok(Some(
            chrono::Utc::now() + chrono::Duration::days(i64::from(days)),
        ));
    }
    at.map(|raw| {
        chrono::DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| {
                CliError::usage(format!(
                    "--trial-ends-at \"{}\" is not an RFC 3339 time (2026-12-31T00:00:00Z): {e}",
                    raw.escape_debug()
                ))
            })
    })
    .transpose()
}

/// `tenants list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Include inactive, suspended and provisioning tenants.
    #[arg(long)]
    pub all: bool,
}

/// A tenant named by id or slug.
#[derive(Debug, Args)]
pub struct TenantArg {
    /// The tenant's id or slug.
    #[arg(value_name = "ID|SLUG")]
    pub tenant: String,
}

/// `tenants update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "ID|SLUG")]
    pub tenant: String,
    /// New display name.
    #[arg(long)]
    pub name: Option<String>,
    /// New slug.
    #[arg(long)]
    pub slug: Option<String>,
    /// New plan.
    #[arg(long, conflicts_with = "clear_plan")]
    pub plan: Option<String>,
    /// Remove the plan.
    #[arg(long)]
    pub clear_plan: bool,
    /// New metadata: a JSON object (replaces the old one).
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Put the tenant on a trial of this many days from now.
    #[arg(long, conflicts_with_all = ["trial_ends_at", "end_trial"])]
    pub trial_days: Option<u32>,
    /// Put the tenant on a trial ending at this time (RFC 3339).
    #[arg(long, value_name = "TIME", conflicts_with = "end_trial")]
    pub trial_ends_at: Option<String>,
    /// Take the tenant off its trial (no end).
    #[arg(long)]
    pub end_trial: bool,
}

/// `tenants suspend`.
#[derive(Debug, Args)]
pub struct SuspendArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "ID|SLUG")]
    pub tenant: String,
    /// Why (recorded as the status reason).
    #[arg(long)]
    pub reason: Option<String>,
}

/// Runs a tenants command.
pub async fn run(global: &Global, cmd: TenantsCommand) -> Result<(), CliError> {
    // Check what can be checked before touching the database.
    if let TenantsCommand::Create(args) = &cmd {
        Slug::new(&args.slug).map_err(CliError::usage)?;
    }
    match cmd {
        TenantsCommand::Export(args) => return crate::cli::portability::export(global, args).await,
        TenantsCommand::Import(args) => return crate::cli::portability::import(global, args).await,
        TenantsCommand::Move(args) => {
            return crate::cli::portability::move_tenant(global, args).await;
        }
        TenantsCommand::Pool(cmd) => return crate::cli::pool::run(global, cmd).await,
        TenantsCommand::Delete(args) if args.purge => {
            if !args.yes {
                return Err(CliError::usage(
                    "--purge removes every row, schema, database, file and config key of the tenant and cannot be undone: \
                     add --yes to confirm (or `tenancy tenants export` it first)",
                ));
            }
            return crate::cli::portability::purge(global, &args.tenant).await;
        }
        cmd => run_lifecycle(global, cmd).await,
    }
}

async fn run_lifecycle(global: &Global, cmd: TenantsCommand) -> Result<(), CliError> {
    let app = App::open(&global.source()).await?;
    let actor = crate::cli::actor();
    let change = |current, change: Change| {
        let (app, actor) = (&app, &actor);
        async move {
            let done = change.done();
            let changed = tenants::change(app, actor, &current, change).await?;
            Ok::<_, CliError>((done, changed))
        }
    };
    let (verb, tenant) = match cmd {
        TenantsCommand::List(args) => return list(&app, global, args.all).await,
        TenantsCommand::Show(t) => ("", app.tenant(&t.tenant).await?),
        TenantsCommand::Create(args) => {
            let mut new = NewTenant::new(&args.slug, args.name).map_err(CliError::usage)?;
            if let Some(plan) = args.plan {
                new = new.plan(plan);
            }
            if let Some(metadata) = args.metadata {
                new = new.metadata(metadata_object(&metadata)?);
            }
            if let Some(end) = trial_end(args.trial_days, args.trial_ends_at.as_deref())? {
                new = new.trial_ends_at(end);
            }
            ("created", tenants::create(&app, &actor, new).await?)
        }
        TenantsCommand::Update(args) => {
            let update = TenantUpdate {
                slug: args
                    .slug
                    .as_deref()
                    .map(Slug::new)
                    .transpose()
                    .map_err(CliError::usage)?,
                name: args.name,
                plan: if args.clear_plan {
                    Some(None)
                } else {
                    args.plan.map(Some)
                },
                metadata: args.metadata.as_deref().map(metadata_object).transpose()?,
                trial_ends_at: if args.end_trial {
                    Some(None)
                } else {
                    trial_end(args.trial_days, args.trial_ends_at.as_deref())?.map(Some)
                },
            };
            if update.is_empty() {
                return Err(CliError::usage(
                    "nothing to update: pass --name, --slug, --plan, --clear-plan, --metadata, \
                     --trial-days, --trial-ends-at or --end-trial",
                ));
            }
            let current = app.tenant(&args.tenant).await?;
            (
                "updated",
                tenants::update(&app, &actor, &current, update).await?,
            )
        }
        TenantsCommand::Suspend(args) => {
            change(
                app.tenant(&args.tenant).await?,
                Change::Suspend(args.reason),
            )
            .await?
        }
        TenantsCommand::Activate(t) => {
            change(app.tenant(&t.tenant).await?, Change::Activate).await?
        }
        TenantsCommand::Deactivate(t) => {
            change(app.tenant(&t.tenant).await?, Change::Deactivate).await?
        }
        TenantsCommand::Delete(t) => change(app.tenant(&t.tenant).await?, Change::Delete).await?,
        TenantsCommand::Export(_)
        | TenantsCommand::Import(_)
        | TenantsCommand::Move(_)
        | TenantsCommand::Pool(_) => {
            return Ok(());
        }
    };
    if global.json {
        println!("{}", to_json(&tenant)?);
    } else if verb.is_empty() {
        print_details(&tenant);
    } else {
        println!(
            "{verb} tenant {} (id {}, status {})",
            tenant.slug, tenant.id, tenant.status
        );
    }
    app.flush_events().await;
    Ok(())
}

/// Prints every matching tenant.
async fn list(app: &App, global: &Global, all: bool) -> Result<(), CliError> {
    let (items, total) = tenants::list_all(app, all).await?;
    if global.json {
        let body = json!({ "items": items, "total": total });
        println!("{}", to_json(&body)?);
        return Ok(());
    }
    if items.is_empty() {
        println!(
            "no {}tenants{}",
            if all { "" } else { "active " },
            if all {
                ""
            } else {
                " (--all includes inactive ones)"
            }
        );
        return Ok(());
    }
    let id_w = column_width(items.iter().map(|t| t.id.as_str()), "ID");
    let slug_w = column_width(items.iter().map(|t| t.slug.as_str()), "SLUG");
    let plan_w = column_width(
        items.iter().map(|t| t.plan.as_deref().unwrap_or("-")),
        "PLAN",
    );
    println!(
        "{:id_w$}  {:slug_w$}  {:12}  {:plan_w$}  NAME",
        "ID", "SLUG", "STATUS", "PLAN"
    );
    for t in &items {
        println!(
            "{:id_w$}  {:slug_w$}  {:12}  {:plan_w$}  {}",
            t.id.as_str(),
            t.slug.as_str(),
            t.status.as_str(),
            t.plan.as_deref().unwrap_or("-"),
            t.name
        );
    }
    println!("{} tenant(s)", items.len());
    Ok(())
}

fn column_width<'a>(values: impl Iterator<Item = &'a str>, header: &str) -> usize {
    values
        .map(|v| v.chars().count())
        .chain(std::iter::once(header.len()))
        .max()
        .unwrap_or(header.len())
}

fn print_details(t: &TenantInfo) {
    println!("id:         {}", t.id);
    println!("slug:       {}", t.slug);
    println!("name:       {}", t.name);
    match &t.status_reason {
        Some(reason) => println!("status:     {} ({reason})", t.status),
        None => println!("status:     {}", t.status),
    }
    println!("plan:       {}", t.plan.as_deref().unwrap_or("-"));
    println!("metadata:   {}", t.metadata);
    println!("created_at: {}", t.created_at.to_rfc3339());
    println!("updated_at: {}", t.updated_at.to_rfc3339());
}

/// Parses `--metadata`: it must be a JSON object.
fn metadata_object(raw: &str) -> Result<serde_json::Value, CliError> {
    match json_or_string(raw) {
        v @ serde_json::Value::Object(_) => Ok(v),
        _ => Err(CliError::usage(
            "--metadata must be a JSON object, e.g. --metadata '{\"region\":\"eu\"}'",
        )),
    }
}
